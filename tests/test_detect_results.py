"""`edge detect` results: what the device reports vs --all-scores, ids from --coco-gt, boxes inside the frame.

Runs on both Pythons: the models are the tiny head ONNX graphs of test_daemon_process.
"""
import json

import pytest

from edge.cli import main
from edge.bundle_build import build_bundle
from tests.test_daemon_process import CLASSES, head_model, write_frames


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("detect")
    model = head_model(str(root / "balanced.onnx"))
    # Scores of the head model span about 0.25-0.85 with brightness: 0.7 reports some of them.
    bundle = build_bundle(str(root / "bundle"), [("balanced", model)], CLASSES, tta="none",
                          thresholds={"single": 0.7})
    frames = str(root / "frames")
    write_frames(frames, 4)
    return bundle, frames, root


def _detect(setup, tmp_path, *extra):
    bundle, frames, _ = setup
    out = str(tmp_path / "results.json")
    assert main(["detect", "--bundle", bundle.root, "--source", frames, "--out", out] + list(extra)) == 0
    with open(out) as f:
        return json.load(f)


def test_default_results_are_what_the_device_reports(setup, tmp_path):
    thresholds = setup[0].profile_settings("single").thresholds
    reported = _detect(setup, tmp_path)
    everything = _detect(setup, tmp_path, "--all-scores")
    assert reported and all(r["score"] >= thresholds[r["class_id"]] - 1e-5 for r in reported)
    assert len(everything) > len(reported)
    assert any(r["score"] < thresholds[r["class_id"]] for r in everything)
    keyed = lambda rs: sorted((r["file_name"], r["class_id"], r["score"]) for r in rs)  # noqa: E731
    assert set(keyed(reported)) <= set(keyed(everything))


def test_boxes_lie_inside_their_frame(setup, tmp_path):
    for r in _detect(setup, tmp_path, "--all-scores"):
        x, y, w, h = r["bbox"]
        assert x >= 0 and y >= 0 and x + w <= 64 + 1e-3 and y + h <= 64 + 1e-3


def test_ids_are_source_order_from_zero_without_ground_truth(setup, tmp_path):
    ids = {r["file_name"]: r["image_id"] for r in _detect(setup, tmp_path, "--all-scores")}
    assert ids == {"frame_%04d.png" % i: i for i in range(4) if "frame_%04d.png" % i in ids}
    assert {r["category_id"] - r["class_id"] for r in _detect(setup, tmp_path, "--all-scores")} == {1}


def _gt(tmp_path, images, categories):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": images, "categories": categories, "annotations": []}))
    return str(path)


def test_coco_gt_gives_image_and_category_ids_by_name(setup, tmp_path):
    images = [{"id": 100 + i, "file_name": "valid/frame_%04d.png" % i} for i in range(3)]  # frame 3 absent
    categories = [{"id": 7 + i, "name": name} for i, (_, name, _) in enumerate(reversed(CLASSES))]
    results = _detect(setup, tmp_path, "--all-scores", "--coco-gt", _gt(tmp_path, images, categories))
    by_name = {c["name"]: c["id"] for c in categories}
    assert results and all(r["category_id"] == by_name[r["class_name"]] for r in results)
    assert {r["file_name"]: r["image_id"] for r in results} == {
        "frame_%04d.png" % i: 100 + i for i in range(3)}


@pytest.mark.parametrize("content, message", [
    ("{", "cannot be read"),
    ('{"images": []}', "expected a COCO object"),
    ('{"images": [], "categories": [{"id": 1, "name": "turtle"}]}', "no category named grouper"),
])
def test_bad_coco_gt_is_one_clear_error(setup, tmp_path, capsys, content, message):
    bundle, frames, _ = setup
    path = tmp_path / "gt.json"
    path.write_text(content)
    code = main(["detect", "--bundle", bundle.root, "--source", frames, "--out", str(tmp_path / "r.json"),
                 "--coco-gt", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


@pytest.fixture(scope="module")
def two_model_bundle(tmp_path_factory):
    """Two variants (different seeds) under the flip plan, whose manifest names ensemble_flip its default profile."""
    root = tmp_path_factory.mktemp("profiles")
    models = [("balanced", head_model(str(root / "balanced.onnx"))),
              ("recall", head_model(str(root / "recall.onnx"), seed=1))]
    bundle = build_bundle(str(root / "bundle"), models, CLASSES, tta="flip",
                          thresholds={"single": 0.7, "ensemble_flip": 0.4})
    path = root / "bundle" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["default_profile"] = "ensemble_flip"
    path.write_text(json.dumps(manifest))
    frames = str(root / "frames")
    write_frames(frames, 3)
    return bundle.root, frames


def _run(bundle_dir, frames, tmp_path, *extra):
    out = str(tmp_path / ("r%d.json" % len(list(tmp_path.iterdir()))))
    assert main(["detect", "--bundle", bundle_dir, "--source", frames, "--out", out] + list(extra)) == 0
    with open(out) as f:
        return sorted((r["file_name"], r["class_id"], r["score"]) for r in json.load(f))


def test_no_flags_run_the_bundles_default_profile(two_model_bundle, tmp_path, capsys):
    bundle_dir, frames = two_model_bundle
    default = _run(bundle_dir, frames, tmp_path)
    assert "profile ensemble_flip" in capsys.readouterr().out
    assert default and default == _run(bundle_dir, frames, tmp_path, "--profile", "ensemble_flip")
    assert default != _run(bundle_dir, frames, tmp_path, "--profile", "single")
    # the models and views by hand are the pipeline call without a profile
    assert _run(bundle_dir, frames, tmp_path, "--tta", "flip") == default
    assert _run(bundle_dir, frames, tmp_path, "--profile", "cascade", "--all-scores")


def test_profile_with_tta_or_models_is_refused(two_model_bundle, tmp_path, capsys):
    bundle_dir, frames = two_model_bundle
    out = str(tmp_path / "r.json")
    assert main(["detect", "--bundle", bundle_dir, "--source", frames, "--out", out, "--profile", "single",
                 "--tta", "none"]) == 2
    assert "drop --tta/--models" in capsys.readouterr().err
