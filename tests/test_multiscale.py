"""Multi-scale trainer: the size sampler, the class per range (importable by name for DDP), and real batches."""
import os
import pickle
import random
import subprocess
import sys

import pytest

from tests.test_baseline import make_yolo_dataset
from trainer import multiscale
from trainer.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("low, high, stride", [(480, 768, 32), (64, 128, 32), (64, 64, 32), (32, 96, 16)])
def test_stride_sizes_are_every_multiple_in_the_closed_range(low, high, stride):
    expected = [s for s in range(1, high + 1) if s % stride == 0 and low <= s <= high]
    assert multiscale.stride_sizes(low, high, stride) == expected


@pytest.mark.parametrize("low, high, stride", [(480, 770, 32), (500, 768, 32), (768, 480, 32), (0, 64, 32),
                                               (64, 128, 0)])
def test_stride_sizes_refuses_a_bad_range(low, high, stride):
    with pytest.raises(ConfigError, match="multi-scale range"):
        multiscale.stride_sizes(low, high, stride)


def test_sample_size_stays_in_range_and_reaches_both_ends():
    rng = random.Random(0)
    drawn = [multiscale.sample_size(rng, 480, 768, 32) for _ in range(500)]
    assert set(drawn) == set(range(480, 769, 32))  # 10 sizes, 500 draws: every one, the ends included


@pytest.mark.parametrize("shape, size, stride, expected", [
    ((128, 128), 96, 32, (96, 96)),
    ((640, 480), 512, 32, (512, 384)),    # 480 * 0.8 = 384 exactly
    ((480, 640), 480, 32, (384, 480)),    # 480 * 0.75 = 360, rounded up to 384
    ((64, 64), 64, 32, (64, 64)),
    ((100, 30), 64, 32, (64, 32)),        # 19.2 rounds up to one stride
])
def test_resized_shape_puts_the_long_side_at_size(shape, size, stride, expected):
    assert multiscale.resized_shape(shape, size, stride) == expected


def test_trainer_class_is_one_class_per_range_and_importable_by_name():
    cls = multiscale.trainer_class(64, 128, 32)
    assert cls is multiscale.trainer_class(64, 128, 32) is multiscale.MultiScale64to128by32
    assert (cls.size_min, cls.size_max, cls.size_stride) == (64, 128, 32)
    assert multiscale.trainer_class(64, 96, 32) is not cls
    assert pickle.loads(pickle.dumps(cls)) is cls
    with pytest.raises(AttributeError):
        multiscale.NotATrainer  # noqa: B018
    with pytest.raises(ConfigError):
        multiscale.trainer_class(64, 100, 32)


def test_a_fresh_process_unpickles_the_class_with_its_range():
    """What ultralytics' DDP does: the class is pickled here (cloudpickle there, which pickles an importable
    class by reference as pickle does), the worker script loads it in a new interpreter."""
    blob = pickle.dumps(multiscale.trainer_class(96, 160, 32))
    code = ("import pickle, sys; cls = pickle.loads(sys.stdin.buffer.read()); "
            "print(cls.__module__, cls.__name__, cls.size_min, cls.size_max, cls.size_stride)")
    out = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, cwd=REPO, check=True)
    assert out.stdout.decode().split() == ["trainer.multiscale", "MultiScale96to160by32", "96", "160", "32"]


class Recorder(multiscale.trainer_class(64, 128, 32)):
    """Records each training batch's image shape and the sizes the loaders were built at."""
    shapes = []
    loader_sizes = []

    def preprocess_batch(self, batch):
        batch = super().preprocess_batch(batch)
        if self.model.training:
            Recorder.shapes.append(tuple(batch["img"].shape[2:]))
        return batch

    def build_dataset(self, img_path, mode="train", batch=None):
        dataset = super().build_dataset(img_path, mode, batch)
        Recorder.loader_sizes.append((mode, dataset.imgsz))
        return dataset


@pytest.mark.slow
def test_every_training_batch_is_a_stride_multiple_inside_the_range(tmp_path):
    from trainer.stages.training import fit

    data = make_yolo_dataset(tmp_path / "data", n_images=8, size=96)
    args = {"data": data, "device": "cpu", "workers": 0, "epochs": 2, "batch": 2, "imgsz": 64, "save_period": -1,
            "multi_scale": 0.0, "mosaic": 0.0}
    Recorder.shapes.clear()
    Recorder.loader_sizes.clear()
    fit(tmp_path / "out", "yolov8n.yaml", args, trainer=Recorder, val_args={"imgsz": 64, "batch": 2})
    assert len(Recorder.shapes) == 8  # 8 images, batch 2, 2 epochs
    for h, w in Recorder.shapes:
        assert h == w and h % 32 == 0 and 64 <= h <= 128
    assert len(set(Recorder.shapes)) > 1
    # training images are letterboxed to the range's top, validation stays at the nominal imgsz
    assert ("train", 128) in Recorder.loader_sizes and ("val", 64) in Recorder.loader_sizes
