"""The daemon's JSON config: defaults, file, overrides, and errors naming key and value."""
import json
import os

import pytest

from edge.config import EdgeConfig, default_values, load_edge_config, parse_http_address, save_edge_config
from edge.energy import BudgetInfeasible, DeploymentProfile
from edge.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(tmp_path, values, name="edge.json"):
    path = tmp_path / name
    path.write_text(json.dumps(values))
    return str(path)


def test_defaults_load_and_are_consistent():
    config = load_edge_config()
    assert isinstance(config, EdgeConfig)
    assert config.to_dict() == default_values()
    assert config.budget_scope == "inference" and config.http_host_port == ("127.0.0.1", 8080)
    assert isinstance(config.deployment_profile(), DeploymentProfile)


def test_packaged_config_loads_and_lists_every_key():
    path = os.path.join(REPO, "packaging", "edge.json")
    config = load_edge_config(path)
    with open(path) as f:
        keys = set(k for k in json.load(f) if not k.startswith("_"))
    assert keys == set(default_values())
    assert config == load_edge_config()  # the packaged file spells out the defaults


def test_file_then_overrides(tmp_path):
    path = write(tmp_path, {"interval_s": 30, "source": "rtsp://cam/1", "store_path": "data/rw.sqlite",
                            "_comment": "ignored"})
    config = load_edge_config(path, {"interval_s": "5", "budget_wh_day": None, "cascade_band": "0.2,0.7"})
    assert config.interval_s == 5.0 and config.source == "rtsp://cam/1"
    assert config.budget_wh_day == 14.4  # None = flag not given
    assert config.cascade_band == [0.2, 0.7]
    assert config.store_path == os.path.join(str(tmp_path), "data", "rw.sqlite")  # relative to the file


@pytest.mark.parametrize("key, value, expected_word", [
    ("interval_s", 0, "> 0"),
    ("interval_s", "fast", "a number"),
    ("interval_s", True, "a number"),
    ("budget_scope", "daily", "inference, total"),
    ("powered_hours_per_day", 25, "<= 24"),
    ("cascade_band", [0.7, 0.2], "lo <= hi"),
    ("cascade_band", [0.1], "[lo, hi]"),
    ("profiles", ["single", "turbo"], "profiles from"),
    ("profile", "turbo", "auto"),
    ("http_address", "localhost", "host:port"),
    ("http_address", "127.0.0.1:99999", "host:port"),
    ("crops_max_bytes", 1.5, "an integer"),
    ("crops_per_frame", -1, ">= 0"),
    ("crops_per_frame", 2.5, "an integer"),
    ("critical_classes", [1.5], "class names or ids"),
    ("store_synchronous", "OFF", "FULL, NORMAL"),
    ("source", "", "non-empty"),
])
def test_bad_values_name_key_value_and_expectation(tmp_path, key, value, expected_word):
    with pytest.raises(ConfigError) as err:
        load_edge_config(write(tmp_path, {key: value}))
    message = str(err.value)
    assert key in message and repr(value) in message and expected_word in message
    with pytest.raises(ConfigError, match=key):
        load_edge_config(overrides={key: value})


def test_unknown_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'intervall_s'.*interval_s"):
        load_edge_config(write(tmp_path, {"intervall_s": 3}))


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_edge_config(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"interval_s": 3,\n "source": }')
    with pytest.raises(ConfigError, match="line 2"):
        load_edge_config(str(bad))
    with pytest.raises(ConfigError, match="JSON object"):
        load_edge_config(write(tmp_path, [1, 2]))


def test_cross_checks(tmp_path):
    with pytest.raises(ConfigError, match="reconnect_initial_s"):
        load_edge_config(overrides={"reconnect_initial_s": 100, "reconnect_max_s": 10})
    with pytest.raises(BudgetInfeasible, match="zero frames"):
        load_edge_config(overrides={"budget_scope": "total"})  # 1.5 W x 24 h > 14.4 Wh
    duty = load_edge_config(overrides={"budget_scope": "total", "powered_hours_per_day": 6})
    assert duty.deployment_profile().baseline_wh_day == pytest.approx(1.5 * 6)


def test_frames_per_day_wins_over_interval():
    assert load_edge_config().deployment_profile().planned_frames_per_day == pytest.approx(86400 / 10.0)
    assert load_edge_config(overrides={"frames_per_day": 500}).deployment_profile().planned_frames_per_day == 500


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)), ("0.0.0.0:0", ("0.0.0.0", 0)), ("[::1]:9100", ("::1", 9100)), ("", None),
])
def test_parse_http_address(text, expected):
    assert parse_http_address(text) == expected


def test_source_accepts_index_and_classes_accept_names():
    config = load_edge_config(overrides={"source": 0, "critical_classes": "turtle,3"})
    assert config.source == 0 and config.critical_classes == ["turtle", 3]


def test_save_round_trip(tmp_path):
    config = load_edge_config(overrides={"interval_s": 7, "store_path": str(tmp_path / "x.sqlite")})
    path = str(tmp_path / "used.json")
    save_edge_config(config, path)
    assert load_edge_config(path) == config


BUNDLE_DEPLOYMENT = DeploymentProfile(30.0, "inference", frames_per_day=2000, powered_hours_per_day=12,
                                      idle_power_w=1.2, sleep_power_w=0.1)


def test_given_keys_are_the_file_and_override_keys(tmp_path):
    path = write(tmp_path, {"budget_wh_day": 20, "idle_power_w": None, "_comment": "x", "source": "rtsp://c"})
    config = load_edge_config(path, {"interval_s": 5, "budget_scope": None})
    assert config.given == {"budget_wh_day", "source", "interval_s"}  # null deployment keys and unset flags: not given
    assert config.idle_power_w == default_values()["idle_power_w"]
    assert load_edge_config().given == frozenset()
    assert config._replace(profile="single").given == config.given | {"profile"}


@pytest.mark.parametrize("given, expected_origin", [
    ({}, {}),
    ({"budget_wh_day": 20.0}, {"budget_wh_day": "config"}),
    ({"budget_wh_day": 20.0, "budget_scope": "total", "powered_hours_per_day": 6.0, "sleep_power_w": 0.0},
     {"budget_wh_day": "config", "budget_scope": "config", "powered_hours_per_day": "config",
      "sleep_power_w": "config"}),
    ({"interval_s": 30.0}, {"capture_interval_s": "config", "frames_per_day": "config"}),
    ({"frames_per_day": 500.0}, {"capture_interval_s": "config", "frames_per_day": "config"}),
])
def test_a_given_config_value_wins_over_the_bundle_and_the_rest_comes_from_it(given, expected_origin):
    config = load_edge_config(overrides=given)
    deployment, origin = config.resolve_deployment(BUNDLE_DEPLOYMENT)
    expected = BUNDLE_DEPLOYMENT.to_dict()
    renamed = {"interval_s": "capture_interval_s"}
    for key, value in given.items():
        expected[renamed.get(key, key)] = value
    if "interval_s" in given:
        expected["frames_per_day"] = None
    if "frames_per_day" in given:
        expected["capture_interval_s"] = None
    assert deployment.to_dict() == expected
    assert origin == dict(dict.fromkeys(DeploymentProfile.FIELDS, "bundle"), **expected_origin)


def test_without_a_bundle_profile_the_defaults_apply():
    config = load_edge_config(overrides={"budget_wh_day": 9.0})
    deployment, origin = config.resolve_deployment(None)
    assert deployment == config.deployment_profile() and deployment.budget_wh_day == 9.0
    assert origin == dict(dict.fromkeys(DeploymentProfile.FIELDS, "default"), budget_wh_day="config")


def test_the_packaged_file_can_leave_the_budget_to_the_bundle(tmp_path):
    config = load_edge_config(write(tmp_path, {"budget_wh_day": None, "interval_s": 10.0}))
    deployment, origin = config.resolve_deployment(BUNDLE_DEPLOYMENT)
    assert deployment.budget_wh_day == 30.0 and origin["budget_wh_day"] == "bundle"
    assert deployment.capture_interval_s == 10.0 and deployment.frames_per_day is None  # interval_s was given
