"""The project taxonomy (36 classes in three categories) and source label mapping."""
import collections
import os

from trainer.data.yolo_dataset import load_yaml_file
from trainer.errors import DataError

CATEGORIES = ("critical", "important", "general")
DEFAULT_TAXONOMY_PATH = os.path.join(os.path.dirname(__file__), "taxonomy.yaml")

TaxonClass = collections.namedtuple("TaxonClass", "id name category aliases")


def _normalise(label):
    return " ".join(str(label).replace("_", " ").replace("-", " ").lower().split())


class Taxonomy(object):
    """Classes by id, plus per-source label maps; every lookup failure names the label."""

    def __init__(self, classes, sources=None):
        self.classes = sorted(classes, key=lambda c: c.id)
        ids = [c.id for c in self.classes]
        if ids != list(range(len(ids))):
            raise DataError("taxonomy class ids must be 0..%d without gaps, got %s" % (len(ids) - 1, ids))
        self.sources = dict(sources or {})
        self._by_name = {}
        for c in self.classes:
            for key in [c.name] + list(c.aliases):
                self._by_name.setdefault(_normalise(key), c.id)

    def __len__(self):
        return len(self.classes)

    @property
    def names(self):
        return [c.name for c in self.classes]

    def category(self, class_id):
        return self.classes[int(class_id)].category

    def ids_in(self, category):
        return [c.id for c in self.classes if c.category == category]

    def category_of_ids(self):
        """Dict id -> category, as written into data.yaml (`categories:`) and bundles."""
        return {c.id: c.category for c in self.classes}

    def map_label(self, label, source=None):
        """Project class id for a source label, or None when it does not map."""
        explicit = self.sources.get(source, {}) if source else {}
        if label in explicit:
            return self._by_name[_normalise(explicit[label])]
        return self._by_name.get(_normalise(label))

    def map_labels(self, labels, source=None):
        """(mapping label -> id for those that map, sorted list of unmapped labels)."""
        mapping, unmapped = {}, []
        for label in labels:
            class_id = self.map_label(label, source)
            if class_id is None:
                unmapped.append(label)
            else:
                mapping[label] = class_id
        return mapping, sorted(unmapped)


def _taxon_class(entry, i, path):
    if not isinstance(entry, dict):
        raise DataError("taxonomy file %s: class entry %d is %.40r; expected {id, name, category}" % (path, i, entry))
    missing = [k for k in ("id", "name", "category") if k not in entry]
    if missing:
        raise DataError("taxonomy file %s: class entry %d lacks %s" % (path, i, ", ".join(missing)))
    if entry["category"] not in CATEGORIES:
        raise DataError("taxonomy file %s: class %r has category %r; expected one of %s"
                        % (path, entry["name"], entry["category"], ", ".join(CATEGORIES)))
    aliases = entry.get("aliases") or []
    if isinstance(entry["id"], bool) or not isinstance(entry["id"], int) or not isinstance(aliases, list):
        raise DataError("taxonomy file %s: class entry %d (%r) needs an integer id and a list of aliases"
                        % (path, i, entry["name"]))
    return TaxonClass(entry["id"], str(entry["name"]), entry["category"], tuple(str(a) for a in aliases))


def load_taxonomy(path=None):
    """Read a taxonomy yaml (the packaged 36-class one by default) and validate it."""
    path = path or DEFAULT_TAXONOMY_PATH
    raw = load_yaml_file(path, what="taxonomy file")
    if not isinstance(raw, dict) or not isinstance(raw.get("classes"), list):
        raise DataError("taxonomy file %s needs a 'classes:' list of {id, name, category}" % path)
    classes = []
    for i, entry in enumerate(raw["classes"]):
        classes.append(_taxon_class(entry, i, path))
    sources = raw.get("sources") or {}
    if not isinstance(sources, dict) or not all(isinstance(t, dict) or t is None for t in sources.values()):
        raise DataError("taxonomy file %s: 'sources:' must map a source name to {label: class name}" % path)
    taxonomy = Taxonomy(classes, sources)
    for source, table in sources.items():
        for label, target in (table or {}).items():
            if taxonomy._by_name.get(_normalise(target)) is None:
                raise DataError("taxonomy file %s: source %r maps %r to unknown class %r"
                                % (path, source, label, target))
    return taxonomy
