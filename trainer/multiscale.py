"""Multi-scale training over an exact size range: a DetectionTrainer that resizes each batch.

ultralytics' own `multi_scale` argument changed meaning across versions (a bool, then a
probability, then a fraction of imgsz), so the range is implemented here instead: every
training batch is resized to a size drawn uniformly from the stride multiples in
[min, max] (both ends included), and ultralytics' `multi_scale` is set to 0.

How the range reaches the trainer: ultralytics builds the trainer itself from a class and
its own argument namespace, which refuses unknown keys, and multi-GPU DDP pickles the class
into a temporary script that rebuilds it in each worker. So the range lives in the class:
`trainer_class(min, max, stride)` returns a subclass named after its range
(`MultiScale480to768by32`), and this module's `__getattr__` builds that class again from its
name in any process that imports it. The class pickles by reference (module + name), DDP
workers and resumed runs get the same range, and nothing global is changed. A resumed run
takes the range of the class it is given (fit passes the trainer on resume too).

The dataloader letterboxes training images to `max` (the validation loader keeps the
nominal `imgsz`): every batch is then shrunk, or kept, to its size, never enlarged, so
the largest scale sees real pixels rather than interpolated ones. Boxes are normalised in
ultralytics' batches, so resizing the images leaves the labels valid.
"""
import copy
import re

from trainer import yolo
from trainer.errors import ConfigError

_NAME_RE = re.compile(r"^MultiScale(\d+)to(\d+)by(\d+)$")
_CLASSES = {}


def stride_sizes(low, high, stride):
    """The sizes a batch may take: every multiple of `stride` in [low, high]."""
    low, high, stride = int(low), int(high), int(stride)
    if stride < 1 or low % stride or high % stride or not 0 < low <= high:
        raise ConfigError("multi-scale range [%d, %d] by %d: expected 0 < min <= max, both multiples of the stride"
                          % (low, high, stride))
    return list(range(low, high + 1, stride))


def sample_size(rng, low, high, stride):
    """One batch size drawn uniformly from stride_sizes(low, high, stride) with `rng` (a random.Random)."""
    return rng.choice(stride_sizes(low, high, stride))


def resized_shape(shape, size, stride):
    """(h, w) of a batch whose longer side becomes `size`, the other side scaled alike and rounded up to
    the stride (square training batches simply become size x size)."""
    h, w = int(shape[0]), int(shape[1])
    scale = size / float(max(h, w))
    return tuple(max(stride, -(-int(round(x * scale)) // stride) * stride) for x in (h, w))


def class_name(low, high, stride):
    return "MultiScale%dto%dby%d" % (int(low), int(high), int(stride))


def trainer_class(low, high, stride=32):
    """The DetectionTrainer subclass for the range [low, high] (built once per range, importable by name)."""
    stride_sizes(low, high, stride)  # refuse a bad range before ultralytics starts
    name = class_name(low, high, stride)
    if name not in _CLASSES:
        from ultralytics.models.yolo.detect import DetectionTrainer

        yolo.ultralytics_module()
        _CLASSES[name] = type(name, (_MultiScaleMixin, DetectionTrainer),
                              {"size_min": int(low), "size_max": int(high), "size_stride": int(stride),
                               "__module__": __name__, "__qualname__": name})
    return _CLASSES[name]


def __getattr__(name):
    """`trainer.multiscale.MultiScale480to768by32` in a process that has not built it yet (DDP workers)."""
    match = _NAME_RE.match(name)
    if match is None:
        raise AttributeError("module %r has no attribute %r" % (__name__, name))
    return trainer_class(*(int(g) for g in match.groups()))


class _MultiScaleMixin:
    """Placed before DetectionTrainer; size_min, size_max and size_stride are set by trainer_class."""
    size_min = size_max = size_stride = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.args.multi_scale = 0.0  # ultralytics' own resizing would come on top of this one

    def build_dataset(self, img_path, mode="train", batch=None):
        if mode != "train":
            return super().build_dataset(img_path, mode, batch)
        nominal = self.args
        self.args = copy.copy(nominal)
        self.args.imgsz = self.size_max
        try:
            return super().build_dataset(img_path, mode, batch)
        finally:
            self.args = nominal

    def preprocess_batch(self, batch):
        import random

        import torch.nn.functional as F

        model_stride = int(getattr(self, "stride", 32) or 32)
        if self.size_stride % model_stride:
            raise ConfigError("multiscale.stride = %d is not a multiple of the model's stride %d; use %d"
                              % (self.size_stride, model_stride, model_stride))
        batch = super().preprocess_batch(batch)
        images = batch["img"]
        # ultralytics seeds `random` per rank at the start of training, so sizes are reproducible.
        size = sample_size(random, self.size_min, self.size_max, self.size_stride)
        shape = resized_shape(images.shape[2:], size, self.size_stride)
        if tuple(images.shape[2:]) != shape:
            batch["img"] = F.interpolate(images, size=shape, mode="bilinear", align_corners=False)
        return batch
