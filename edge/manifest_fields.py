"""Type and range checks for manifest fields: nothing reaches the pipeline unchecked.

Each check takes the value and a `where` naming the field ("manifest.json
models[1].decode_thr"), and raises BundleError saying what was found and what
is expected. JSON gives ints, floats, strings, bools, lists and dicts; bool is
never accepted as a number.
"""
import collections
import math

from edge.errors import BundleError

# The largest network input a bundle may ask for, per side. A Nano runs
# YOLO at 320-768 px; 4096 leaves room for a GPU server and still refuses the
# 100000x100000 manifest that once drove detect to 21.6 GB.
MAX_INPUT_SIDE_PX = 4096
INPUT_STRIDE_PX = 32
MAX_CLASSES = 10000
MAX_MODELS = 16
# A YOLOv8x graph has about 500 nodes; a longer list is not a layer list.
MAX_LAYER_NAMES = 10000


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def require(obj, key, where):
    if not isinstance(obj, dict):
        raise BundleError("%s: expected a JSON object, got %s" % (where, type(obj).__name__))
    if key not in obj:
        raise BundleError("%s: missing field %r" % (where, key))
    return obj[key]


def mapping(value, where):
    if not isinstance(value, dict):
        raise BundleError("%s is %s; expected a JSON object" % (where, _shown(value)))
    return value


def array(value, where, max_len=None):
    if not isinstance(value, list):
        raise BundleError("%s is %s; expected a JSON list" % (where, _shown(value)))
    if max_len is not None and len(value) > max_len:
        raise BundleError("%s has %d entries; at most %d are allowed" % (where, len(value), max_len))
    return value


def text(value, where):
    if not isinstance(value, str) or not value:
        raise BundleError("%s is %s; expected a non-empty string" % (where, _shown(value)))
    return value


def boolean(value, where):
    if not isinstance(value, bool):
        raise BundleError("%s is %s; expected true or false" % (where, _shown(value)))
    return value


def choice(value, choices, where):
    if value not in choices:
        raise BundleError("%s is %s; expected one of %s" % (where, _shown(value), ", ".join(choices)))
    return value


def number(value, where, low=None, high=None, low_open=False):
    """A finite JSON number within [low, high] (low excluded with low_open)."""
    ok = _is_number(value) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        bounds = []
        if low is not None:
            bounds.append("%s %g" % (">" if low_open else ">=", low))
        if high is not None:
            bounds.append("<= %g" % high)
        raise BundleError("%s is %s; expected a finite number%s" % (
            where, _shown(value), (" " + " and ".join(bounds)) if bounds else ""))
    return float(value)


def integer(value, where, low=None, high=None):
    if not isinstance(value, int) or isinstance(value, bool) or (low is not None and value < low) or (
            high is not None and value > high):
        raise BundleError("%s is %s; expected a whole number%s%s" % (
            where, _shown(value), "" if low is None else " >= %d" % low, "" if high is None else " <= %d" % high))
    return value


def probability(value, where):
    return number(value, where, 0.0, 1.0)


def per_class(value, num_classes, where, check):
    """A number or a list of one number per class -> list of floats, each passed through `check`."""
    if _is_number(value):
        return [check(value, where)] * num_classes
    values = array(value, where)
    if len(values) != num_classes:
        raise BundleError("%s has %d values for %d classes; give one per class or a single number"
                          % (where, len(values), num_classes))
    return [check(v, "%s[%d]" % (where, i)) for i, v in enumerate(values)]


def input_size(value, where):
    size = array(value, where)
    if len(size) != 2:
        raise BundleError("%s is %s; expected [height, width] in pixels" % (where, _shown(value)))
    for i, side in enumerate(size):
        integer(side, "%s[%d]" % (where, i), INPUT_STRIDE_PX, MAX_INPUT_SIDE_PX)
        if side % INPUT_STRIDE_PX:
            raise BundleError("%s[%d] is %d; YOLO inputs are multiples of %d px" % (where, i, side, INPUT_STRIDE_PX))
    return tuple(size)


def layer_names(value, where):
    """A list of network layer (ONNX node) names, each a non-empty string, none repeated."""
    names = [text(name, "%s[%d]" % (where, i)) for i, name in enumerate(array(value, where, MAX_LAYER_NAMES))]
    repeated = sorted(n for n, count in collections.Counter(names).items() if count > 1)
    if repeated:
        raise BundleError("%s lists %s more than once; name each layer once" % (where, repeated))
    return names


def _shown(value):
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


GATE_KEYS = ("passed", "failures", "forced", "profile")
MAX_GATE_FAILURES = 100


def gate_record(value, where):
    """The trainer's budget-gate verdict: {passed, failures: [messages], forced, profile (optional)}.

    A passing record lists no failures; a failing one shipped only because the trainer was forced.
    """
    mapping(value, where)
    unknown = sorted(set(value) - set(GATE_KEYS))
    if unknown:
        raise BundleError("%s: unknown keys %s; expected %s" % (where, unknown, ", ".join(GATE_KEYS)))
    passed = boolean(require(value, "passed", where), where + ".passed")
    failures = [text(f, "%s.failures[%d]" % (where, i)) for i, f in enumerate(
        array(value.get("failures", []), where + ".failures", MAX_GATE_FAILURES))]
    forced = boolean(value.get("forced", False), where + ".forced")
    if passed and failures:
        raise BundleError("%s: passed is true but %d failures are listed; a passing gate has none"
                          % (where, len(failures)))
    if not passed and not failures:
        raise BundleError("%s: passed is false but no failure is listed; name the figures that failed" % where)
    if not passed and not forced:
        raise BundleError("%s: a failing gate with forced false; the trainer ships a failing bundle only "
                          "when forced (--force)" % where)
    record = {"passed": passed, "failures": failures, "forced": forced}
    if value.get("profile") is not None:
        record["profile"] = text(value["profile"], where + ".profile")
    return record
