"""The one record that flows through the edge pipeline."""
import numpy as np

from edge.errors import EdgeError


class Detections(object):
    """Boxes of one frame: ``xyxy`` (N, 4) float32 pixels, ``score`` (N,) float32,
    ``class_id`` (N,) int32, plus optional per-box ``extras`` arrays of length N.

    Immutable by convention: every operation returns a new record.
    """

    __slots__ = ("xyxy", "score", "class_id", "extras")

    def __init__(self, xyxy, score, class_id, extras=None):
        xyxy = np.asarray(xyxy, dtype=np.float32)
        if xyxy.size == 0:
            xyxy = xyxy.reshape(0, 4)
        score = np.asarray(score, dtype=np.float32).reshape(-1)
        class_id = np.asarray(class_id).reshape(-1)
        if xyxy.ndim != 2 or xyxy.shape[1] != 4:
            raise EdgeError("Detections.xyxy must have shape (N, 4), got %s" % (xyxy.shape,))
        n = xyxy.shape[0]
        if score.shape[0] != n:
            raise EdgeError("Detections.score has %d entries for %d boxes" % (score.shape[0], n))
        if class_id.shape[0] != n:
            raise EdgeError("Detections.class_id has %d entries for %d boxes" % (class_id.shape[0], n))
        if class_id.size and not np.all(np.equal(np.mod(class_id, 1), 0)):
            raise EdgeError("Detections.class_id must hold whole numbers")
        extras = dict(extras or {})
        for name, values in extras.items():
            values = np.asarray(values)
            if values.shape[:1] != (n,):
                raise EdgeError("Detections.extras[%r] has %s rows for %d boxes" % (name, values.shape[:1], n))
            extras[name] = values
        self.xyxy = xyxy
        self.score = score
        self.class_id = class_id.astype(np.int32)
        self.extras = extras

    @classmethod
    def empty(cls):
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))

    @classmethod
    def concat(cls, records):
        records = list(records)
        if not records:
            return cls.empty()
        names = set(records[0].extras)
        if any(set(r.extras) != names for r in records):
            raise EdgeError("Detections.concat: records carry different extras %s" % [sorted(r.extras) for r in records])
        return cls(
            np.concatenate([r.xyxy for r in records]),
            np.concatenate([r.score for r in records]),
            np.concatenate([r.class_id for r in records]),
            {k: np.concatenate([r.extras[k] for r in records]) for k in names},
        )

    def __len__(self):
        return self.xyxy.shape[0]

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            index = [index]
        return Detections(self.xyxy[index], self.score[index], self.class_id[index],
                          {k: v[index] for k, v in self.extras.items()})

    def __iter__(self):
        for i in range(len(self)):
            yield self.xyxy[i], float(self.score[i]), int(self.class_id[i])

    def __repr__(self):
        return "Detections(n=%d, classes=%s)" % (len(self), sorted(set(self.class_id.tolist())))

    def __eq__(self, other):
        return (isinstance(other, Detections) and len(self) == len(other)
                and np.array_equal(self.xyxy, other.xyxy) and np.array_equal(self.score, other.score)
                and np.array_equal(self.class_id, other.class_id))

    __hash__ = None

    def sorted_by_score(self):
        return self[np.argsort(-self.score, kind="stable")]

    def with_scores(self, score):
        return Detections(self.xyxy, score, self.class_id, self.extras)

    def with_extras(self, **extras):
        merged = dict(self.extras)
        merged.update(extras)
        return Detections(self.xyxy, self.score, self.class_id, merged)

    @property
    def area(self):
        wh = np.clip(self.xyxy[:, 2:] - self.xyxy[:, :2], 0, None)
        return wh[:, 0] * wh[:, 1]
