"""`spec`: a config field with its validation rules (read by trainer.config)."""
import copy
from dataclasses import field


def spec(default, *, min=None, max=None, choices=None, inherit=False, min_exclusive=False, regex=False,
         pattern=None):
    """A dataclass field with its validation rules in metadata (pattern: (regex to match, what it means)).

    A dict default is a table (e.g. ensemble.variants): a file or override merges into it entry by entry,
    and an entry set to null removes it."""
    rules = {"min": min, "max": max, "choices": choices, "inherit": inherit,
             "min_exclusive": min_exclusive, "regex": regex, "pattern": pattern}
    if isinstance(default, dict):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=rules)
    return field(default=default, metadata=rules)
