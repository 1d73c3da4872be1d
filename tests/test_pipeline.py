"""The pipeline end to end on fake backends: batching of views, exact TTA inversion, two-stage fusion."""
import collections

import numpy as np
import pytest

from edge.backends import FakeBackend
from edge.bundle import parse_manifest
from edge.errors import DecodeError
from edge.pipeline import Pipeline

NC, SIZE = 3, 96


def _bright_box_head(batch, class_id=1, score=0.9):
    """A 'model' that finds the bright rectangle in each view and reports it as one anchor."""
    out = np.zeros((len(batch), 4 + NC, 8), np.float32)
    for i, image in enumerate(batch):
        ys, xs = np.nonzero(image[0] > 0.99)
        if not len(xs):  # a padding image of a fixed-size batch
            continue
        x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        out[i, :4, 0] = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
        out[i, 4 + class_id, 0] = score
    return out


def _bundle(tmp_path, variants=("recall", "balanced", "precision"), tta="full", batch=None, temps=None):
    models = []
    for v in variants:
        (tmp_path / (v + ".onnx")).write_bytes(b"fake")
        models.append({"name": v, "variant": v, "file": v + ".onnx", "sha256": "unused", "format": "onnx",
                       "input_size": [SIZE, SIZE], "batch": batch, "conf_thr": 0.25, "iou_thr": 0.7,
                       "fusion_weight": 1.0})
    manifest = {"schema_version": 1, "target": "x86-cpu", "models": models,
                "classes": [{"id": i, "name": "c%d" % i, "category": "critical"} for i in range(NC)],
                "calibration": {"temperatures": temps or [1.0] * NC}, "tta": tta}
    return parse_manifest(manifest, str(tmp_path), verify=False)


def _pipeline(bundle, fixed_batch=None, head=_bright_box_head, batch_views=True):
    backends = collections.OrderedDict(
        (m.name, FakeBackend(head, input_shape=(3, SIZE, SIZE), fixed_batch=fixed_batch)) for m in bundle.models)
    return Pipeline(bundle, backends, batch_views=batch_views)


def _frame_with_box(box=(40, 30, 100, 60), shape=(90, 160)):
    frame = np.zeros(shape + (3,), np.uint8)
    x1, y1, x2, y2 = box
    frame[y1:y2, x1:x2] = 255
    return frame


@pytest.mark.parametrize("tta", ["none", "flip", "full"])
def test_every_view_inverts_to_the_same_frame_box(tmp_path, tta):
    pipeline = _pipeline(_bundle(tmp_path, tta=tta))
    result = pipeline.detect(_frame_with_box())
    assert len(result) == 1 and result.class_id.tolist() == [1]
    # Resampling blurs the rectangle's edge by up to a pixel of the input, i.e. 160/96 frame pixels.
    np.testing.assert_allclose(result.xyxy[0], [40, 30, 100, 60], atol=160 / 96 + 0.01)
    assert result.score[0] == pytest.approx(0.9, abs=1e-5)


@pytest.mark.parametrize("fixed_batch,expected_calls", [(None, [7]), (1, [1] * 7), (4, [4, 4])])
def test_views_of_a_frame_share_one_call_when_the_engine_takes_a_batch(tmp_path, fixed_batch, expected_calls):
    pipeline = _pipeline(_bundle(tmp_path), fixed_batch=fixed_batch)
    pipeline.detect(_frame_with_box())
    assert all(b.calls == expected_calls for b in pipeline.backends.values())
    assert pipeline.last_timing.views == 7 and 0 < pipeline.last_timing.inference_s <= pipeline.last_timing.total_s


def test_one_call_per_view_when_batching_is_off(tmp_path):
    pipeline = _pipeline(_bundle(tmp_path), batch_views=False)
    pipeline.detect(_frame_with_box())
    assert pipeline.backends["balanced"].calls == [1] * 7 and pipeline.last_timing.calls == 21


def test_two_stage_fusion_does_not_punish_a_box_missed_by_some_views(tmp_path):
    """Only the identity view finds the box in each model: views fused per model keep score/7 per model,
    then the models agree, so the ensemble does not divide again by the number of views."""
    def identity_only(batch):
        out = _bright_box_head(batch)
        out[1:] = 0
        return out

    bundle = _bundle(tmp_path)
    result = _pipeline(bundle, head=identity_only).detect(_frame_with_box())
    assert result.score[0] == pytest.approx(0.9 / 7, rel=1e-4)
    single = _pipeline(_bundle(tmp_path, variants=("balanced",)), head=identity_only).detect(_frame_with_box())
    assert single.score[0] == pytest.approx(result.score[0], rel=1e-4)


def test_profiles_are_arguments_of_the_same_call(tmp_path):
    pipeline = _pipeline(_bundle(tmp_path))
    pipeline.detect(_frame_with_box(), models=["balanced"], plan="none")
    assert pipeline.backends["balanced"].calls == [1] and pipeline.backends["recall"].calls == []


def test_calibration_is_applied_per_class(tmp_path):
    result = _pipeline(_bundle(tmp_path, tta="none", temps=[1.0, 2.0, 1.0])).detect(_frame_with_box())
    expected = 1 / (1 + np.exp(-np.log(0.9 / 0.1) / 2.0))
    assert result.score[0] == pytest.approx(expected, abs=1e-5)


def test_per_model_detections_keep_class_scores(tmp_path):
    per_model = _pipeline(_bundle(tmp_path, tta="none")).detect_per_model(_frame_with_box(), class_scores=True)
    assert list(per_model) == ["recall", "balanced", "precision"]
    assert per_model["recall"].extras["class_scores"].shape == (1, NC)


def test_wrong_output_shape_names_the_model(tmp_path):
    pipeline = _pipeline(_bundle(tmp_path, tta="none"), head=lambda b: np.zeros((len(b), 4 + NC + 2, 8), np.float32))
    with pytest.raises(DecodeError, match="recall"):
        pipeline.detect(_frame_with_box())


@pytest.mark.parametrize("backend,trt_present,expected", [
    ("auto", False, "m.onnx"), ("auto", True, "m.engine"), ("onnxruntime", True, "m.onnx"),
    ("tensorrt", False, "m.engine")])
def test_model_file_follows_the_backend_choice(monkeypatch, backend, trt_present, expected):
    from edge import pipeline as pipeline_module
    from edge.backends import tensorrt as trt_backend
    from edge.bundle import ModelSpec

    monkeypatch.setattr(trt_backend, "tensorrt_available", lambda: trt_present)
    spec = ModelSpec("m", "balanced", "m.onnx", "", "onnx", (64, 64), None, 0.25, 0.7, 1.0, "m.engine")
    assert pipeline_module._model_file(spec, backend) == expected


# ---- two thresholds: decode (feeds fusion) and operating (per profile and class, after calibration) ----

def _v2_bundle(tmp_path, variants=("recall", "balanced", "precision"), tta="full", decode_thr=0.01, profiles=None):
    models = []
    for v in variants:
        (tmp_path / (v + ".onnx")).write_bytes(b"fake")
        models.append({"name": v, "variant": v, "file": v + ".onnx", "sha256": "unused", "format": "onnx",
                       "input_size": [SIZE, SIZE], "batch": None, "decode_thr": decode_thr, "iou_thr": 0.7})
    manifest = {"schema_version": 2, "target": "x86-cpu", "models": models,
                "classes": [{"id": i, "name": "c%d" % i, "category": "critical"} for i in range(NC)],
                "profiles": profiles or {}, "tta": tta}
    return parse_manifest(manifest, str(tmp_path), verify=False)


def _scored_head(score, class_id=1):
    return lambda batch: _bright_box_head(batch, class_id=class_id, score=score)


@pytest.mark.parametrize("score, decode_thr, operating_thr, reported, kept_with_all_scores", [
    (0.05, 0.01, 0.25, False, True),    # evidence kept for fusion, not reported
    (0.30, 0.01, 0.25, True, True),
    (0.005, 0.01, 0.25, False, False),  # below the decode threshold: never seen
    (0.20, 0.01, 0.15, True, True),
])
def test_decode_threshold_feeds_fusion_operating_threshold_reports(tmp_path, score, decode_thr, operating_thr,
                                                                   reported, kept_with_all_scores):
    bundle = _v2_bundle(tmp_path, tta="none", decode_thr=decode_thr,
                        profiles={"ensemble": {"thresholds": operating_thr}})
    pipeline = _pipeline(bundle, head=_scored_head(score))
    assert (len(pipeline.detect(_frame_with_box(), profile="ensemble")) == 1) == reported
    assert (len(pipeline.detect(_frame_with_box(), profile="ensemble", all_scores=True)) == 1) == kept_with_all_scores


def test_operating_threshold_is_per_class_and_applies_to_calibrated_scores(tmp_path):
    # T = 0.5 sharpens 0.4 to sigmoid(2 logit(0.4)) = 0.16/0.52 ~= 0.3077: over 0.3, although 0.4 < 0.45.
    profiles = {"single": {"thresholds": [0.9, 0.3, 0.9], "temperatures": [1.0, 0.5, 1.0]}}
    bundle = _v2_bundle(tmp_path, variants=("balanced",), tta="none", profiles=profiles)
    result = _pipeline(bundle, head=_scored_head(0.4)).detect(_frame_with_box(), profile="single")
    assert result.score.tolist() == pytest.approx([0.16 / 0.52], abs=1e-5)
    other_class = _pipeline(bundle, head=_scored_head(0.4, class_id=0)).detect(_frame_with_box(), profile="single")
    assert len(other_class) == 0


@pytest.mark.parametrize("models, plan, expected", [
    (["balanced"], "full", "single"), (None, "none", "ensemble"), (None, "flip", "ensemble_flip"),
    (None, "full", "ensemble_full"), (["recall", "precision"], "full", "ensemble_full")])
def test_settings_follow_models_and_plan_without_a_profile(tmp_path, models, plan, expected):
    from edge.pipeline import calibration_profile
    from edge.tta import view_plan

    bundle = _v2_bundle(tmp_path)
    specs = [bundle.model(m) for m in models] if models else bundle.models
    assert calibration_profile(bundle, specs, view_plan(plan)) == expected


def test_profile_picks_models_and_views(tmp_path):
    pipeline = _pipeline(_v2_bundle(tmp_path))
    pipeline.detect(_frame_with_box(), profile="ensemble_flip")
    assert [b.calls for b in pipeline.backends.values()] == [[2]] * 3
    pipeline.detect(_frame_with_box(), profile="single")
    assert pipeline.backends["balanced"].calls == [2, 1] and pipeline.backends["recall"].calls == [2]


@pytest.mark.parametrize("variants", [("balanced",), ("recall", "balanced")])
def test_boxes_are_clipped_to_the_frame(tmp_path, variants):
    """A box reaching past the frame edge (x2 = 768.0001 on a 768 px image) comes back inside it."""
    from edge.detections import Detections

    pipeline = _pipeline(_v2_bundle(tmp_path, variants=variants, tta="none"))
    box = Detections([[700.0, 10.0, 768.0001, 50.0]], [0.9], [1])
    result = pipeline.fuse_models({v: box for v in variants}, (768, 432), "ensemble")
    assert len(result) == 1 and result.xyxy[0, 2] == 768.0 and result.xyxy.min() >= 0


def test_two_host_threads_give_what_one_gives(tmp_path):
    bundle = _bundle(tmp_path, tta="full")
    frame = _frame_with_box()
    results = []
    for threads in (1, 2):
        backends = collections.OrderedDict((m.name, FakeBackend(_bright_box_head, input_shape=(3, SIZE, SIZE)))
                                           for m in bundle.models)
        pipeline = Pipeline(bundle, backends, host_threads=threads)
        try:
            assert pipeline.host.threads == threads
            results.append(pipeline.detect(frame, all_scores=True))
        finally:
            pipeline.close()
    one, two = results
    assert len(one) == 1
    np.testing.assert_array_equal(one.xyxy, two.xyxy)
    np.testing.assert_array_equal(one.score, two.score)
    np.testing.assert_array_equal(one.class_id, two.class_id)
