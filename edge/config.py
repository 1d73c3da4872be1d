"""The daemon's one config file (JSON): defaults, then the file, then command-line overrides.

JSON, not YAML: PyYAML is not guaranteed on a stock Jetson Nano. Keys that
start with "_" are comments and ignored. Relative paths in the file are taken
from the file's folder; relative paths given as overrides from the working
directory. Every bad key or value raises ConfigError naming the key, the
value and what is expected.

The deployment keys (budget_wh_day, budget_scope, interval_s or
frames_per_day, powered_hours_per_day, idle_power_w, sleep_power_w) refine
the bundle's deployment profile: a key the file or a flag gives wins, one not
given (absent, or null) comes from the bundle, else from the defaults below
(`EdgeConfig.resolve_deployment`).
"""
import collections
import json
import os

from edge.atomic_file import write_atomically
from edge.energy import DeploymentProfile
from edge.errors import ConfigError
from edge.profiles import DEFAULT_PROFILE_ORDER, PROFILES, check_band

GIB = 1024 ** 3
MIB = 1024 ** 2
MAX_BYTES = 2 ** 63 - 1  # what os.statvfs and SQLite count in
_INF = float("inf")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _fail(key, value, expected):
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:40] + "...(%d characters)" % len(shown)
    raise ConfigError("config {}={}: expected {}".format(key, shown, expected))


def _number(key, value, minimum=None, maximum=None, strict=False, integer=False):
    kind = "an integer" if integer else "a number"
    if isinstance(value, str):
        try:
            value = int(value) if integer else float(value)
        except ValueError:
            _fail(key, value, kind)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(key, value, kind)
    if value != value or value in (_INF, -_INF):  # NaN passes every bound check below, inf most
        _fail(key, value, "a finite " + kind.split()[1])
    if integer and value != int(value):
        _fail(key, value, kind)
    too_low = minimum is not None and (value <= minimum if strict else value < minimum)
    if too_low or (maximum is not None and value > maximum):
        bounds = [("> {}" if strict else ">= {}").format(minimum)] if minimum is not None else []
        bounds += ["<= {}".format(maximum)] if maximum is not None else []
        _fail(key, value, "{} {}".format(kind, " and ".join(bounds)))
    return int(value) if integer else float(value)


def _positive(key, value):
    return _number(key, value, minimum=0.0, strict=True)


def _non_negative(key, value):
    return _number(key, value, minimum=0.0)


def _unit(key, value):
    return _number(key, value, minimum=0.0, maximum=1.0)


def _hours(key, value):
    return _number(key, value, minimum=0.0, maximum=24.0)


def _bytes(key, value):
    return _number(key, value, minimum=0, maximum=MAX_BYTES, integer=True)


def _optional(check):
    def validate(key, value):
        return None if value is None or value in ("", "none", "null") else check(key, value)
    return validate


def _text(key, value):
    if not isinstance(value, str) or not value.strip():
        _fail(key, value, "a non-empty string")
    return value


def _choice(choices):
    def validate(key, value):
        if value not in choices:
            _fail(key, value, "one of {}".format(", ".join(choices)))
        return value
    return validate


def _source(key, value):
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return _text(key, value)


def _list(value):
    return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


def _profiles(key, value):
    value = _list(value)
    if not isinstance(value, list) or not value or any(p not in PROFILES for p in value):
        _fail(key, value, "a non-empty list of profiles from {}, poorest first".format(", ".join(PROFILES)))
    return list(value)


def _band(key, value):
    return list(check_band(_list(value), name="config " + key))


def _classes(key, value):
    value = _list(value)
    if not isinstance(value, list):
        _fail(key, value, "a list of class names or ids, or null to use the bundle's critical category")
    out = []
    for v in value:
        if isinstance(v, str) and v.isdigit():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, (int, str)) or v == "":
            _fail(key, value, "a list of class names or ids")
        out.append(v)
    return out


def parse_http_address(text):
    """'host:port' or '[v6]:port' -> (host, port); '' -> None (HTTP off)."""
    if text == "":
        return None
    host, sep, port = str(text).rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        _fail("http_address", text, "'host:port' such as '127.0.0.1:8080', or '' to turn HTTP off")
    return host, int(port)


def _http_address(key, value):
    if not isinstance(value, str):
        _fail(key, value, "'host:port' such as '127.0.0.1:8080', or '' to turn HTTP off")
    parse_http_address(value)
    return value


def _log_level(key, value):
    return _choice(LOG_LEVELS)(key, value.upper() if isinstance(value, str) else value)


# name, default, validator, is_path. Order is the order of `to_dict()`.
_FIELDS = (
    ("bundle", "/var/lib/reefwatch/bundle", _text, True),
    ("source", "csi://0", _source, False),
    ("store_path", "/var/lib/reefwatch/reefwatch.sqlite", _text, True),
    ("store_synchronous", "FULL", _choice(("FULL", "NORMAL")), False),
    ("interval_s", 10.0, _positive, False),
    ("frames_per_day", None, _optional(_non_negative), False),
    ("budget_wh_day", 14.4, _positive, False),
    ("budget_scope", "inference", _choice(("inference", "total")), False),
    ("powered_hours_per_day", 24.0, _hours, False),
    ("idle_power_w", 1.5, _non_negative, False),
    ("sleep_power_w", 0.0, _non_negative, False),
    ("profile", "auto", _choice(("auto",) + PROFILES), False),
    ("profiles", list(DEFAULT_PROFILE_ORDER), _profiles, False),
    ("cascade_band", [0.25, 0.6], _band, False),
    ("critical_classes", None, _optional(_classes), False),
    ("critical_min_score", 0.3, _unit, False),
    ("escalation_prior", 0.25, _unit, False),
    ("http_address", "127.0.0.1:8080", _http_address, False),
    ("heartbeat_max_age_s", 120.0, _positive, False),
    ("meter", "auto", _text, False),
    ("crops_dir", "/var/lib/reefwatch/crops", _text, True),
    ("crops_max_bytes", 2 * GIB, _bytes, False),
    ("min_free_bytes", 512 * MIB, _bytes, False),
    ("crops_per_frame", 4, lambda k, v: _number(k, v, minimum=0, integer=True), False),
    ("reconnect_initial_s", 1.0, _positive, False),
    ("reconnect_max_s", 60.0, _positive, False),
    ("reconnect_factor", 2.0, lambda k, v: _number(k, v, minimum=1.0), False),
    ("folder_poll_s", 2.0, _positive, False),
    ("log_level", "INFO", _log_level, False),
)
FIELD_NAMES = tuple(f[0] for f in _FIELDS)
_VALIDATORS = {f[0]: f[2] for f in _FIELDS}
_PATH_FIELDS = frozenset(f[0] for f in _FIELDS if f[3])


# config key -> DeploymentProfile field, apart from interval_s / frames_per_day (see resolve_deployment)
_DEPLOYMENT_KEYS = (("budget_wh_day", "budget_wh_day"), ("budget_scope", "budget_scope"),
                    ("powered_hours_per_day", "powered_hours_per_day"), ("idle_power_w", "idle_power_w"),
                    ("sleep_power_w", "sleep_power_w"))
_DEPLOYMENT_CONFIG_KEYS = frozenset([k for k, _ in _DEPLOYMENT_KEYS] + ["interval_s", "frames_per_day"])


class EdgeConfig(collections.namedtuple("EdgeConfig", FIELD_NAMES)):
    """Frozen, validated daemon settings; build with `load_edge_config`.

    `given` is the set of keys a file or an override set explicitly (a
    default is not given, nor a deployment key set to null): a deployment
    value given here wins over the bundle's, one not given comes from the
    bundle. It rides beside the tuple (no __slots__), so equality and
    `to_dict()` stay about values.
    """

    given = frozenset()

    def _replace(self, **changes):
        replaced = super(EdgeConfig, self)._replace(**changes)
        replaced.given = self.given | frozenset(changes)
        return replaced

    def to_dict(self):
        return dict((k, list(v) if isinstance(v, list) else v) for k, v in zip(FIELD_NAMES, self))

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def deployment_profile(self):
        """The energy model's DeploymentProfile (frames_per_day wins over interval_s when set)."""
        return DeploymentProfile(
            budget_wh_day=self.budget_wh_day, budget_scope=self.budget_scope,
            capture_interval_s=None if self.frames_per_day is not None else self.interval_s,
            frames_per_day=self.frames_per_day, powered_hours_per_day=self.powered_hours_per_day,
            idle_power_w=self.idle_power_w, sleep_power_w=self.sleep_power_w)

    def resolve_deployment(self, bundle_deployment=None):
        """(DeploymentProfile, {field: 'config' | 'bundle' | 'default'}) for this config and a bundle's profile.

        A key given in the config wins; one not given comes from the bundle's
        deployment profile; without one, from the config's defaults. The frame
        count is one choice: frames_per_day (when given, not null) or
        interval_s given in the config replaces the bundle's way of counting.
        """
        if bundle_deployment is None:
            base, origin = self.deployment_profile(), dict.fromkeys(DeploymentProfile.FIELDS, "default")
        else:
            base, origin = bundle_deployment, dict.fromkeys(DeploymentProfile.FIELDS, "bundle")
        changes = {}
        for key, field in _DEPLOYMENT_KEYS:
            if key in self.given:
                changes[field], origin[field] = getattr(self, key), "config"
        if "frames_per_day" in self.given and self.frames_per_day is not None:
            changes.update(frames_per_day=self.frames_per_day, capture_interval_s=None)
        elif "interval_s" in self.given:
            changes.update(capture_interval_s=self.interval_s, frames_per_day=None)
        if "capture_interval_s" in changes:
            origin["capture_interval_s"] = origin["frames_per_day"] = "config"
        return base.replace(**changes), origin

    @property
    def http_host_port(self):
        """(host, port), or None when HTTP is off."""
        return parse_http_address(self.http_address)


def default_values():
    return dict((name, list(default) if isinstance(default, list) else default) for name, default, _, _ in _FIELDS)


def _refuse_duplicates(pairs):
    """A JSON object as a dict; a key given twice raises (json keeps the last silently: a hand edit gone wrong)."""
    values = {}
    for key, value in pairs:
        if key in values:
            raise ConfigError("config key {!r} is given twice ({!r}, then {!r}); keep one".format(
                key, values[key], value))
        values[key] = value
    return values


def _read_file(path):
    if os.path.isdir(path):
        raise ConfigError("config file {} is a folder; expected the daemon's JSON config file".format(path))
    try:
        with open(path, "r", encoding="utf-8") as f:  # not the locale's: a Jetson service may run with LANG=C
            values = json.load(f, object_pairs_hook=_refuse_duplicates)
    except OSError as e:
        raise ConfigError("cannot read config file {}: {}".format(path, e.strerror or e)) from e
    except UnicodeDecodeError as e:
        raise ConfigError("config file {} is not UTF-8 text (byte 0x{:02x} at offset {}); save it as UTF-8".format(
            path, e.object[e.start], e.start)) from e
    except ConfigError as e:
        raise ConfigError("config file {}: {}".format(path, e)) from e
    except ValueError as e:  # json.JSONDecodeError carries line and column in its message
        raise ConfigError("config file {} is not valid JSON: {}".format(path, e)) from e
    except RecursionError:  # json recurses per level; from None: its 1,000 frames say nothing more
        raise ConfigError("config file {} is nested too deeply; expected a JSON object of settings".format(
            path)) from None
    if not isinstance(values, dict):
        raise ConfigError("config file {} holds a {}; expected a JSON object".format(path, type(values).__name__))
    return values


def _merge(values, updates, base_dir, origin, given):
    for key, value in updates.items():
        if key.startswith("_") or (value is None and key in _DEPLOYMENT_CONFIG_KEYS):
            continue  # a comment, or a deployment value left to the bundle (null)
        if key not in _VALIDATORS:
            raise ConfigError("unknown config key {!r} in {}; expected one of {}".format(
                key, origin, ", ".join(FIELD_NAMES)))
        value = _VALIDATORS[key](key, value)
        if key in _PATH_FIELDS and base_dir is not None:
            value = os.path.normpath(os.path.join(base_dir, os.path.expanduser(value)))
        values[key] = value
        given.add(key)


def load_edge_config(path=None, overrides=None):
    """Defaults, then the JSON file at `path`, then `overrides` (None values ignored: unset flags).

    The keys the file or the overrides set are the config's `given`.

    Cross-checks: reconnect_initial_s <= reconnect_max_s, and a total budget
    that idle and sleep alone exceed raises (energy.BudgetInfeasible).
    """
    values, given = default_values(), set()
    if path is not None:
        path = str(path)
        _merge(values, _read_file(path), os.path.dirname(os.path.abspath(path)), path, given)
    if overrides:
        _merge(values, {k: v for k, v in overrides.items() if v is not None}, os.getcwd(), "overrides", given)
    if values["reconnect_initial_s"] > values["reconnect_max_s"]:
        _fail("reconnect_initial_s", values["reconnect_initial_s"],
              "<= reconnect_max_s ({})".format(values["reconnect_max_s"]))
    config = EdgeConfig(**values)
    config.given = frozenset(given)
    config.deployment_profile().check_budget()
    return config


def save_edge_config(config, path):
    """Write `config` as JSON (e.g. beside the store, to record what a run used)."""
    try:
        write_atomically(path, config.to_json())
    except OSError as e:
        raise ConfigError("cannot write config to {}: {}".format(path, e)) from e
