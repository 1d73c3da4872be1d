"""The budget gate: does the default profile's accuracy and energy let a bundle ship? Pure, no I/O.

Three figures of the default profile are checked against the config's floors:

    critical recall  >= bundle.min_critical_recall   (at the profile's operating thresholds)
    mAP50            >= bundle.min_map50
    Wh/day           <= bundle.budget_wh_day         (the deployment's budget, in its scope)

A figure that could not be measured (no critical box in the validation split, a day whose frames
do not fit its powered hours) fails unless its floor asks for nothing (a floor of 0). Each
failure is a message naming the figure, its value and its floor, ready for a TrainerError and
for the manifest's `gate` record.
"""
import collections
import math

Check = collections.namedtuple("Check", "figure key value floor passed")

# figure name, figures key, floors key, whether the value must be at least (True) or at most the floor
RULES = (("critical recall", "critical_recall", "min_critical_recall", True),
         ("mAP50", "map50", "min_map50", True),
         ("Wh/day", "wh_day", "budget_wh_day", False))
CONFIG_KEYS = {"min_critical_recall": "bundle.min_critical_recall", "min_map50": "bundle.min_map50",
               "budget_wh_day": "bundle.budget_wh_day"}


def _measured(value):
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def check(figure, key, value, floor, at_least):
    if not _measured(value):
        passed = at_least and floor <= 0.0
    else:
        passed = value >= floor if at_least else value <= floor
    return Check(figure, key, value, floor, bool(passed))


def message(item, profile, unmeasured=""):
    where = "%s of profile %s" % (item.figure, profile)
    setting = CONFIG_KEYS.get(item.key, item.key)
    if not _measured(item.value):
        return "%s could not be measured%s; its floor is %g (%s)" % (where, unmeasured, item.floor, setting)
    relation = "under the floor" if item.key != "budget_wh_day" else "over the budget"
    return "%s is %.4g, %s %g (%s)" % (where, item.value, relation, item.floor, setting)


def verdict(profile, figures, floors, reasons=None):
    """{"passed", "failures": [messages], "checks": {key: {value, floor, passed}}, "profile"}.

    figures: {"critical_recall", "map50", "wh_day"} of `profile` (None where not measured);
    floors: {"min_critical_recall", "min_map50", "budget_wh_day"};
    reasons: {figures key: why it is missing} for the messages.
    """
    checks, failures = {}, []
    for figure, key, floor_key, at_least in RULES:
        item = check(figure, floor_key, figures.get(key), float(floors[floor_key]), at_least)
        checks[key] = {"value": item.value, "floor": item.floor, "passed": item.passed}
        if not item.passed:
            why = (reasons or {}).get(key)
            failures.append(message(item, profile, " (%s)" % why if why else ""))
    return {"passed": not failures, "failures": failures, "checks": checks, "profile": profile}
