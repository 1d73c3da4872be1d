"""The Jetson Nano estimate table: REFERENCE.md's published figures and the documented scaling rule."""
import itertools

import pytest

from trainer import device_table
from trainer.device_table import BUSY_POWER_W, SIZES, model_estimate, profile_estimate, size_from_params
from trainer.errors import TrainerError

# ../shared/REFERENCE.md "Published figures to compare against": TensorRT at 640, frames per second.
PUBLISHED_FPS_RANGE = {"n": (19.0, 25.0), "s": (9.0, 9.0), "m": (3.4, 3.4), "l": (1.6, 1.6), "x": (1.0, 1.0)}


@pytest.mark.parametrize("size", SIZES)
def test_one_view_at_640_matches_the_published_fps(size):
    low, high = PUBLISHED_FPS_RANGE[size]
    estimate = model_estimate(size, 640, 1)
    assert low <= 1.0 / estimate.latency_s <= high
    assert estimate.energy_j == pytest.approx(BUSY_POWER_W * estimate.latency_s)
    assert estimate.label == "estimate"


def test_nano_energy_is_the_order_of_the_published_yolov5n_figure():
    # Machado et al.: about 0.55 J/frame for YOLOv5n at ~6.8 W (their pipeline at ~12 FPS); a faster
    # TensorRT YOLOv8n at the same power must cost less per frame, but not by an order of magnitude.
    assert 0.55 / 3 < model_estimate("n", 640).energy_j < 0.55


@pytest.mark.parametrize("imgsz, views", [(320, 1), (640, 1), (640, 7), (960, 2)])
def test_scaling_rule_is_pixels_times_views(imgsz, views):
    base = model_estimate("s", 640, 1)
    estimate = model_estimate("s", imgsz, views)
    assert estimate.latency_s == pytest.approx(base.latency_s * views * (imgsz / 640.0) ** 2)


def test_monotone_in_model_size_imgsz_and_views():
    grid = list(itertools.product(range(len(SIZES)), (320, 480, 640), (1, 2, 7)))
    for a, b in itertools.product(grid, grid):
        if a != b and all(x <= y for x, y in zip(a, b)):
            ea, eb = model_estimate(SIZES[a[0]], a[1], a[2]), model_estimate(SIZES[b[0]], b[1], b[2])
            assert ea.latency_s < eb.latency_s and ea.energy_j < eb.energy_j


def test_a_profile_sums_its_models():
    models = [("n", 640), ("n", 640), ("s", 320)]
    total = profile_estimate(models, 2)
    parts = [model_estimate(s, i, 2) for s, i in models]
    assert total.latency_s == pytest.approx(sum(p.latency_s for p in parts))
    assert total.energy_j == pytest.approx(sum(p.energy_j for p in parts))


@pytest.mark.parametrize("params, size", [(3.16e6, "n"), (2.6e6, "n"), (11.1e6, "s"), (9.4e6, "s"),
                                          (25.9e6, "m"), (43.6e6, "l"), (68.2e6, "x"), (57e6, "x")])
def test_size_is_recognised_from_the_parameter_count(params, size):
    assert size_from_params(params) == size


@pytest.mark.parametrize("call, message", [
    (lambda: model_estimate("q", 640), "model size 'q'"),
    (lambda: model_estimate("n", 0), "imgsz 0"),
    (lambda: model_estimate("n", 640, 0), "views 0"),
    (lambda: model_estimate("n", 640, 1.5), "views 1.5"),
    (lambda: profile_estimate([], 1), "at least one model"),
    (lambda: size_from_params(0), "0 parameters"),
])
def test_bad_input_is_named(call, message):
    with pytest.raises(TrainerError, match=message):
        call()


def test_onnx_parameters_are_counted_from_the_initializers(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    # Shapes only: the count comes from the dims, so the tensors need no data.
    initializers = [TensorProto(name="w%d" % i, data_type=TensorProto.FLOAT, dims=dims)
                    for i, dims in enumerate(([16, 3, 3, 3], [1000, 3000], [200000]))]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], initializers)
    path = str(tmp_path / "m.onnx")
    onnx.save(helper.make_model(graph), path)
    expected = 16 * 3 * 3 * 3 + 1000 * 3000 + 200000
    assert device_table.onnx_params(path) == expected
    assert size_from_params(expected) == "n"
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    with pytest.raises(TrainerError, match="broken.onnx"):
        device_table.onnx_params(str(tmp_path / "broken.onnx"))
