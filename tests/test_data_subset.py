"""A large data set under run-all: the even subset (trainer.data.subset) and MoCo v3's image budget."""
import os
import types

import pytest
import yaml

from trainer import run_all, run_stages
from trainer.config import load_config
from trainer.data.subset import spread, write_subset
from trainer.data.yolo_dataset import read_data_yaml
from trainer.ssl import fit_image_budget
from trainer.ssl_augment import list_images


def video_frames(folder, videos=3, frames=10, labelled=True):
    """DeepFish-like names (<video>_<species>_f<frame>_jpg...) with a label file each; pictures are not read."""
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    os.makedirs(os.path.join(folder, "labels"), exist_ok=True)
    paths = []
    for v in range(videos):
        for f in range(frames):
            stem = "%d_Fish_f%06d_jpg.rf.x" % (7000 + v, f)
            paths.append(os.path.join(folder, "images", stem + ".jpg"))
            open(paths[-1], "wb").close()
            with open(os.path.join(folder, "labels", stem + ".txt"), "w") as fh:
                fh.write("0 0.5 0.5 0.1 0.1\n" if labelled else "")
    return paths


def dataset(tmp_path, train=(3, 10), val=(3, 4)):
    root = tmp_path / "set"
    video_frames(str(root / "train"), *train)
    video_frames(str(root / "val"), *val)
    data = root / "data.yaml"
    data.write_text("path: .\ntrain: train/images\nval: val/images\nnames: [fish]\ncategories: {0: critical}\n")
    return str(data)


def test_spread_keeps_everything_under_the_limit_and_spreads_evenly_over_it():
    names = ["f%02d" % i for i in range(30)]
    assert spread(reversed(names), None) == names == spread(names, 30) == spread(names + names, 40)
    picked = spread(names, 4)
    assert picked == ["f00", "f10", "f19", "f29"]          # first, last and evenly between, in name order
    assert spread(names, 1) == ["f00"] and len(spread(names, 29)) == 29


def test_within_the_limits_the_source_data_yaml_serves_as_it_is(tmp_path):
    data = dataset(tmp_path)
    assert write_subset(data, str(tmp_path / "out"), 30, 12) == (None, None, {})
    assert write_subset(data, str(tmp_path / "out"), None, None) == (None, None, {})
    assert not (tmp_path / "out").exists()


def test_the_subset_spreads_over_every_video_keeps_names_and_categories_and_lists_the_rest(tmp_path):
    data = dataset(tmp_path, train=(3, 10), val=(3, 4))
    subset, left_out, counts = write_subset(data, str(tmp_path / "out"), 6, 3)
    assert counts == {"train": (6, 30), "val": (3, 12)}
    names, splits = read_data_yaml(subset)
    assert names == ["fish"] and yaml.safe_load(open(subset))["categories"] == {0: "critical"}
    videos = {os.path.basename(p).split("_")[0] for p in splits["train"]}
    assert videos == {"7000", "7001", "7002"}                # every video keeps frames
    assert all(os.path.isabs(p) and os.path.exists(p) for p in splits["train"] + splits["val"])
    _, source = read_data_yaml(data)
    rest = [line.strip() for line in open(left_out)]
    assert sorted(rest + splits["train"]) == sorted(source["train"]) and not set(rest) & set(splits["train"])


def test_a_val_limit_alone_leaves_train_whole_and_nothing_left_out(tmp_path):
    data = dataset(tmp_path, train=(2, 3), val=(3, 4))
    subset, left_out, counts = write_subset(data, str(tmp_path / "out"), 100, 5)
    assert counts == {"train": (6, 6), "val": (5, 12)} and left_out is None


def test_run_all_trains_on_the_subset_and_moco_also_sees_the_frames_left_out(tmp_path):
    data = dataset(tmp_path, train=(3, 10), val=(3, 4))
    config = load_config(None, ["data.max_train_images=9", "data.max_val_images=6"])
    work = tmp_path / "work"
    ctx = run_all.Context(config, str(work), {"stages": {}}, "real", data=data, progress=False)
    outcome = run_stages._user_data(ctx)
    assert outcome.status == "done" and "train 9 of 30, val 6 of 12" in outcome.note
    assert outcome.artifacts["data"] == str(work / "data" / "data.yaml")
    ctx.state["stages"]["synth"] = {"artifacts": outcome.artifacts}
    sources = run_stages._unlabelled_sources(ctx)
    assert sources == [outcome.artifacts["unlabelled"]]
    assert len(list_images(sources[0])) == 21
    assert run_stages.STAGES[0].folders(ctx) == [str(work / "data")]   # a redo rewrites the subset


def test_run_all_without_limits_uses_the_data_yaml_itself(tmp_path):
    data = dataset(tmp_path)
    ctx = run_all.Context(load_config(), str(tmp_path / "work"), {"stages": {}}, "full", data=data, progress=False)
    outcome = run_stages._user_data(ctx)
    assert outcome.status == "skipped" and outcome.artifacts["data"] == os.path.abspath(data)
    assert outcome.artifacts["unlabelled"] is None


def test_image_budget_trades_epochs_for_images_and_never_goes_under_one_epoch():
    config = load_config(None, ["ssl.epochs=30", "ssl.image_budget=14000"]).ssl
    assert fit_image_budget(config, 448).epochs == 30          # aquarium: the budget covers the 30 epochs
    assert fit_image_budget(config, 4568).epochs == 3          # DeepFish: 3 epochs over every frame
    assert fit_image_budget(config, 10 ** 6).epochs == 1
    assert fit_image_budget(load_config().ssl, 10 ** 6) == load_config().ssl   # no budget: the epochs as set
    loose = types.SimpleNamespace(epochs=10, image_budget=50, lr=0.1)
    assert vars(fit_image_budget(loose, 10)) == {"epochs": 5, "image_budget": 50, "lr": 0.1}


@pytest.mark.parametrize("bad", ["data.max_train_images=0", "ssl.image_budget=-5", "data.max_val_images=many"])
def test_bad_limits_are_refused_naming_the_key(bad):
    from trainer.errors import ConfigError

    with pytest.raises(ConfigError, match=bad.split("=")[0].split(".")[1]):
        load_config(None, [bad])


def test_the_real_preset_leaves_an_aquarium_sized_set_as_it_was_measured():
    from trainer.run_presets import preset_overrides

    config = load_config(None, preset_overrides("real"))
    assert config.data.max_train_images >= 448 and config.data.max_val_images >= 127   # aquarium's splits
    assert fit_image_budget(config.ssl, 448).epochs == config.ssl.epochs
