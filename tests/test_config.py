"""trainer/config.py: defaults, file and override precedence, errors that name the key."""
import dataclasses
import os

import pytest
import yaml

from trainer.config import (Config, ConfigError, config_to_dict, load_config, parse_override, save_config,
                            section_types)

DEFAULT_FILE = os.path.join(os.path.dirname(__file__), "..", "trainer", "configs", "training_config.yaml")


def write(tmp_path, text, name="training_config.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("section, key, expected", [
    ("general", "device", "cpu"),
    ("data", "train_fraction", 0.7),
    ("data", "val_fraction", 0.15),
    ("data", "test_fraction", 0.15),
    ("data", "group_pattern", None),
    ("data", "taxonomy", None),
    ("synth", "classes", 36),
    ("ssl", "model", "yolov8n.yaml"),
    ("ssl", "temperature", 1.0),
    ("ssl", "momentum_base", 0.99),
    ("ssl", "proj_dim", 256),
    ("ssl", "crop_min_scale", 0.2),
    ("ssl", "keep_last", 3),
    ("baseline", "model", "yolov8m.yaml"),
    ("baseline", "save_period", 10),
    ("baseline", "optimizer", "SGD"),
    ("baseline", "ssl_backbone", None),
    ("active", "k", 2000),
    ("active", "strategy", "margin"),
    ("active", "aggregate", "sum"),
    ("active", "low_conf", 0.7),
])
def test_defaults(section, key, expected):
    assert getattr(getattr(load_config(), section), key) == expected


def test_documented_default_file_equals_built_in_defaults():
    assert load_config(DEFAULT_FILE) == load_config()


def test_every_key_is_documented_in_the_default_file():
    with open(DEFAULT_FILE) as f:
        documented = yaml.safe_load(f)
    for name, cls in section_types().items():
        assert set(documented[name]) == {f.name for f in dataclasses.fields(cls)}, name


@pytest.mark.parametrize("section, key", [("ssl", "batch_size"), ("ssl", "imgsz"), ("baseline", "imgsz"),
                                          ("baseline", "batch_size"), ("synth", "seed")])
def test_null_inherits_from_general(section, key):
    config = load_config(overrides=["general.%s=7" % key if key != "imgsz" else "general.imgsz=96"])
    assert getattr(getattr(config, section), key) == getattr(config.general, key)
    pinned = load_config(overrides=["%s.%s=64" % (section, key)])
    assert getattr(getattr(pinned, section), key) == 64


# (file text, overrides, attribute, expected): defaults < file < overrides, the last override wins.
@pytest.mark.parametrize("text, overrides, attr, expected", [
    ("", [], ("ssl", "epochs"), 100),
    ("ssl: {epochs: 20}\n", [], ("ssl", "epochs"), 20),
    ("ssl: {epochs: 20}\n", ["ssl.epochs=5"], ("ssl", "epochs"), 5),
    ("ssl: {epochs: 20}\n", ["ssl.epochs=5", "ssl.epochs=6"], ("ssl", "epochs"), 6),
    ("general: {batch_size: 8}\n", [], ("ssl", "batch_size"), 8),
    ("general: {batch_size: 8}\n", ["ssl.batch_size=32"], ("ssl", "batch_size"), 32),
    ("data: {taxonomy: my.yaml}\n", ["data.taxonomy=null"], ("data", "taxonomy"), None),
    ("ssl: {lr: 1}\n", [], ("ssl", "lr"), 1.0),
    ("ssl: {lr: 1e-3}\n", [], ("ssl", "lr"), 1e-3),        # PyYAML reads 1e-3 as a string
    ("", ["ssl.lr=2e-4"], ("ssl", "lr"), 2e-4),
    ("", ["general.device=0"], ("general", "device"), "0"),
    ("ssl:\n", [], ("ssl", "lr"), 1.5e-4),
    ("", ["active.strategy=entropy"], ("active", "strategy"), "entropy"),
    ("", ["data.train_fraction=0.8", "data.val_fraction=0.1", "data.test_fraction=0.1"],
     ("data", "train_fraction"), 0.8),
])
def test_precedence(tmp_path, text, overrides, attr, expected):
    config = load_config(write(tmp_path, text), overrides)
    assert getattr(getattr(config, attr[0]), attr[1]) == expected


# (file text, overrides, words the message must contain)
@pytest.mark.parametrize("text, overrides, words", [
    ("sssl: {epochs: 5}\n", [], ["sssl", "general", "ssl", "active"]),
    ("", ["sssl.epochs=5"], ["sssl", "valid sections"]),
    ("ssl: {epoch: 5}\n", [], ["ssl.epoch", "epochs", "momentum_base"]),
    ("", ["ssl.epoch=5"], ["ssl.epoch", "epochs"]),
    ("", ["ssl.epochs=-1"], ["ssl.epochs", "-1", ">= 1"]),
    ("", ["ssl.epochs=1.5"], ["ssl.epochs", "1.5", "int"]),
    ("", ["ssl.epochs=true"], ["ssl.epochs", "True", "int"]),
    ("", ["ssl.epochs=five"], ["ssl.epochs", "five", "int"]),
    ("", ["ssl.temperature=0"], ["ssl.temperature", "> 0"]),
    ("", ["ssl.momentum_base=1.5"], ["ssl.momentum_base", "1.5", "<= 1"]),
    ("", ["general.device=[0, 1]"], ["general.device", "str"]),
    ("", ["ssl.lr=fast"], ["ssl.lr", "fast", "float"]),
    ("", ["active.strategy=random"], ["active.strategy", "random", "least_confidence", "disagreement"]),
    ("", ["active.aggregate=median"], ["active.aggregate", "median", "sum, mean, max"]),
    ("", ["data.train_fraction=0.8"], ["data.train_fraction", "sum to 1", "1.1"]),
    ("", ["data.group_pattern=(unclosed"], ["data.group_pattern", "regular expression"]),
    ("", ["calibration.critical_min_precision=1.5"], ["calibration.critical_min_precision", "1.5", "<= 1"]),
    ("", ["ssl.epochs"], ["ssl.epochs", "section.key=value"]),
    ("", ["epochs=5"], ["epochs=5", "section.key=value"]),
    ("ssl: 5\n", [], ["ssl", "mapping"]),
    ("- a\n- b\n", [], ["mapping"]),
    ("ssl: {epochs: [5\n", [], ["not valid YAML"]),
])
def test_errors_name_the_key(tmp_path, text, overrides, words):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), overrides)
    for word in words:
        assert word in str(info.value)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="nothing.yaml"):
        load_config(str(tmp_path / "nothing.yaml"))


@pytest.mark.parametrize("text, expected", [
    ("ssl.epochs=5", ("ssl", "epochs", 5)),
    ("ssl.lr=1.0e-3", ("ssl", "lr", 1e-3)),
    ("data.taxonomy=null", ("data", "taxonomy", None)),
    ("data.taxonomy=", ("data", "taxonomy", None)),
    ("data.group_pattern=a=b", ("data", "group_pattern", "a=b")),
    (" general.device = cuda:0", ("general", "device", "cuda:0")),
])
def test_parse_override(text, expected):
    assert parse_override(text) == expected


def test_config_is_frozen():
    config = load_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.ssl.epochs = 3


def test_save_then_load_round_trips(tmp_path):
    config = load_config(overrides=["ssl.epochs=7", "general.batch_size=4", "active.strategy=entropy"])
    path = save_config(config, str(tmp_path / "resolved.yaml"))
    again = load_config(path)
    assert again == config
    assert config_to_dict(again)["ssl"]["batch_size"] == 4
    assert isinstance(again, Config)


# The command line: trainer/cli.py composes the config the same way.
def test_cli_bad_key_is_one_line_and_exit_code_2(tmp_path, capsys):
    from trainer.cli import main

    code = main(["--set", "synth.imagez=3", "synth", "--out", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert code == 2 and "synth.imagez" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, words", [
    (["--config", "missing.yaml", "synth"], ["missing.yaml"]),
    (["synth", "--images", "-3"], ["synth.images", "-3"]),
    (["--set", "data.train_fraction=0.5", "synth"], ["sum to 1"]),
])
def test_cli_errors(tmp_path, capsys, argv, words):
    from trainer.cli import main

    assert main(argv + ["--out", str(tmp_path / "d")] if argv[-1] == "synth" else argv) == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err


def test_cli_unknown_command_and_help_do_not_raise(capsys):
    from trainer.cli import main

    assert main(["no-such-command"]) == 2
    assert main(["--help"]) == 0
    assert "synth" in capsys.readouterr().out


# Precedence on the command line: defaults < --config file < --set < the command's own flags.
@pytest.mark.parametrize("file_images, sets, flags, expected", [
    (None, [], [], 1000),
    (5, [], [], 5),
    (5, ["synth.images=4"], [], 4),
    (5, ["synth.images=4"], ["--images", "3"], 3),
])
def test_cli_precedence(tmp_path, file_images, sets, flags, expected):
    from trainer import cli

    seen = {}
    commands = dict(cli.COMMANDS, synth=(cli.COMMANDS["synth"][0], lambda config, args: seen.setdefault("c", config)))
    argv = []
    if file_images is not None:
        argv += ["--config", write(tmp_path, "synth: {images: %d}\n" % file_images)]
    for s in sets:
        argv += ["--set", s]
    assert cli.main(argv + ["synth", "--out", "null"] + flags, commands=commands) == 0
    assert seen["c"].synth.images == expected
    assert seen["c"].synth.out_dir == "null"       # flag strings stay strings
