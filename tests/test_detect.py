"""Bundles and `edge detect` end to end on a real (small, randomized) YOLOv8 ONNX model."""
import io
import json
import os
import tarfile

import cv2
import numpy as np
import pytest

from edge.bundle import load_bundle, sha256_of
from edge.cli import main
from edge.errors import BundleError
from tests.yolo_models import random_detector_onnx, random_frames, write_data_yaml

pytest.importorskip("onnxruntime")
pytest.importorskip("ultralytics")

NC, IMGSZ = 5, 160


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("detect")
    models = [random_detector_onnx(str(root / "models"), NC, IMGSZ, seed=s) for s in (0, 1, 2)]
    data_yaml = write_data_yaml(str(root / "data.yaml"), NC)
    frames = random_frames(str(root / "frames"), 6)
    return {"root": root, "models": models, "data": data_yaml, "frames": os.path.dirname(frames[0])}


def _run(argv):
    out = io.StringIO()
    return main(argv, out=out), out.getvalue()


def _build(assets, out, models=("recall", "balanced", "precision"), tta="full"):
    # Best class per anchor, as ultralytics' predict decodes (the reference these tests compare with).
    argv = ["bundle", "build", "--classes", assets["data"], "--tta", tta, "--single-label", "--out", str(out)]
    for variant, path in zip(models, assets["models"]):
        argv += ["--model", "%s=%s" % (variant, path)]
    return _run(argv)


def test_bundle_build_and_verify(assets, tmp_path):
    code, text = _build(assets, tmp_path / "b")
    assert code == 0, text
    manifest = json.load(open(str(tmp_path / "b" / "manifest.json")))
    assert [m["variant"] for m in manifest["models"]] == ["recall", "balanced", "precision"]
    assert manifest["models"][0]["input_size"] == [IMGSZ, IMGSZ] and manifest["models"][0]["batch"] == 1
    assert len(manifest["classes"]) == NC and len(manifest["tta"]) == 7
    assert manifest["models"][0]["sha256"] == sha256_of(assets["models"][0])
    code, text = _run(["bundle", "verify", str(tmp_path / "b")])
    assert code == 0 and "recall onnx 160x160" in text


def test_single_model_no_tta_matches_ultralytics_predict(assets, tmp_path):
    from ultralytics import YOLO

    _build(assets, tmp_path / "b", models=("balanced",), tta="none")
    code, text = _run(["detect", "--bundle", str(tmp_path / "b"), "--source", assets["frames"],
                       "--out", str(tmp_path / "r.json")])
    assert code == 0, text
    ours = json.load(open(str(tmp_path / "r.json")))
    nms_iou = json.load(open(str(tmp_path / "b" / "manifest.json")))["models"][0]["iou_thr"]
    reference = YOLO(assets["models"][0], task="detect")
    compared = 0
    for name in sorted(os.listdir(assets["frames"])):
        result = reference.predict(os.path.join(assets["frames"], name), imgsz=IMGSZ, conf=0.25, iou=nms_iou,
                                   max_det=300, verbose=False)[0]
        mine = [r for r in ours if r["file_name"] == name]
        assert len(mine) == len(result.boxes), name
        theirs_xyxy = result.boxes.xyxy.numpy()
        mine_xyxy = np.array([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in mine)]).reshape(-1, 4)
        np.testing.assert_allclose(mine_xyxy, theirs_xyxy, atol=0.02)
        np.testing.assert_allclose([r["score"] for r in mine], result.boxes.conf.numpy(), atol=1e-4)
        assert [r["class_id"] for r in mine] == result.boxes.cls.numpy().astype(int).tolist()
        compared += len(mine)
    assert compared > 20  # the comparison is not vacuous


def test_ensemble_full_tta_writes_results_and_images(assets, tmp_path):
    _build(assets, tmp_path / "b")
    frames = assets["frames"]
    code, text = _run(["detect", "--bundle", str(tmp_path / "b"), "--source", frames, "--out",
                       str(tmp_path / "r.json"), "--save-images", str(tmp_path / "drawn")])
    assert code == 0, text
    results = json.load(open(str(tmp_path / "r.json")))
    assert results and all(set(r) >= {"file_name", "category_id", "bbox", "score"} for r in results)
    assert all(1 <= r["category_id"] <= NC for r in results)
    assert len(os.listdir(str(tmp_path / "drawn"))) == len(os.listdir(frames))


def test_corrupt_image_is_skipped_and_counted(assets, tmp_path):
    _build(assets, tmp_path / "b", models=("balanced",), tta="none")
    folder = tmp_path / "mixed"
    folder.mkdir()
    cv2.imwrite(str(folder / "good.jpg"), cv2.imread(os.path.join(assets["frames"], "frame_000.jpg")))
    (folder / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    code, text = _run(["detect", "--bundle", str(tmp_path / "b"), "--source", str(folder), "--out",
                       str(tmp_path / "r.json")])
    assert code == 0 and "1 frames, 1 skipped" in text and "bad.jpg" in text


@pytest.mark.parametrize("argv_tail,message", [
    (["--source", "/nonexistent/x.jpg"], "is not an image"),
    (["--bundle", "/nonexistent/bundle"], "does not exist"),
])
def test_bad_detect_input_is_a_clear_error(assets, tmp_path, capsys, argv_tail, message):
    _build(assets, tmp_path / "b", models=("balanced",), tta="none")
    argv = {"--bundle": str(tmp_path / "b"), "--source": assets["frames"], "--out": str(tmp_path / "r.json")}
    argv.update(dict(zip(argv_tail[::2], argv_tail[1::2])))
    code, _ = _run(["detect"] + [x for kv in argv.items() for x in kv])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_class_count_mismatch_is_refused(assets, tmp_path, capsys):
    data = write_data_yaml(str(tmp_path / "seven.yaml"), 7)
    code, _ = _run(["bundle", "build", "--classes", data, "--model", "balanced=" + assets["models"][0],
                    "--out", str(tmp_path / "b")])
    assert code == 2 and "lists 7 classes" in capsys.readouterr().err
    assert not (tmp_path / "b").exists() and not [p for p in os.listdir(str(tmp_path)) if p.startswith(".bundle")]


def test_tampered_model_fails_verification(assets, tmp_path):
    _build(assets, tmp_path / "b", models=("balanced",), tta="none")
    with open(str(tmp_path / "b" / "models" / "balanced.onnx"), "ab") as f:
        f.write(b"x")
    with pytest.raises(BundleError, match="checksum"):
        load_bundle(str(tmp_path / "b"))


@pytest.mark.parametrize("edit,message", [
    (lambda m: m.update(schema_version=99), "schema_version"),
    (lambda m: m["models"][0].update(variant="fast"), "variant"),
    (lambda m: m["classes"][0].update(category="rare"), "category"),
    (lambda m: m.pop("models"), "models"),
    (lambda m: m["models"][0].update(file="../../etc/passwd"), "outside the bundle"),
    (lambda m: m["calibration"].update(temperatures=[1.0]), "temperatures"),
])
def test_manifest_faults_name_the_field(assets, tmp_path, edit, message):
    _build(assets, tmp_path / "b", models=("balanced",), tta="none")
    path = str(tmp_path / "b" / "manifest.json")
    manifest = json.load(open(path))
    edit(manifest)
    json.dump(manifest, open(path, "w"))
    with pytest.raises(BundleError, match=message):
        load_bundle(str(tmp_path / "b"))


def test_tar_bundle_round_trip_and_escape_refused(assets, tmp_path):
    from edge.bundle import archive_bundle

    _build(assets, tmp_path / "b", models=("balanced",), tta="none")
    archive = archive_bundle(str(tmp_path / "b"), str(tmp_path / "b.tar.gz"))
    assert load_bundle(archive, extract_dir=str(tmp_path / "x")).num_classes == NC
    evil = str(tmp_path / "evil.tar.gz")
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(BundleError, match="escapes"):
        load_bundle(evil, extract_dir=str(tmp_path / "y"))
    assert not (tmp_path / "escaped.txt").exists()


# ---- hostile inputs through the command ---------------------------------------------------------------------

def _detect(assets, tmp_path, source, out=None, extra=(), stream=None):
    _build(assets, tmp_path / "b", models=("balanced",), tta="none")
    argv = ["detect", "--bundle", str(tmp_path / "b"), "--source", str(source),
            "--out", str(out or tmp_path / "r.json")] + list(extra)
    if stream is None:
        return _run(argv)
    code = main(argv, out=stream)
    stream.flush()
    return code, stream.buffer.getvalue().decode("utf-8")


def _copy_frame(assets, path):
    with open(os.path.join(assets["frames"], "frame_000.jpg"), "rb") as src, open(path, "wb") as dst:
        dst.write(src.read())


def test_a_one_pixel_image_is_one_skipped_frame_not_the_end_of_the_run(assets, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    _copy_frame(assets, str(folder / "a.jpg"))
    cv2.imwrite(str(folder / "b.png"), np.zeros((1, 1, 3), np.uint8))
    _copy_frame(assets, str(folder / "c.jpg"))
    code, text = _detect(assets, tmp_path, folder)
    assert code == 0 and "2 frames, 1 skipped" in text and "b.png" in text and "1x1 pixels" in text, text
    assert {r["file_name"] for r in json.load(open(str(tmp_path / "r.json")))} <= {"a.jpg", "c.jpg"}


def test_no_readable_frame_exits_2_after_writing_empty_results_and_listing_the_files(assets, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "empty.jpg").write_bytes(b"")
    cv2.imwrite(str(folder / "tiny.png"), np.zeros((1, 1, 3), np.uint8))
    os.mkfifo(str(folder / "fifo.jpg"))
    code, text = _detect(assets, tmp_path, folder)
    assert code == 2 and "0 frames, 3 skipped" in text
    assert all(("skipped %s:" % name) in text for name in ("empty.jpg", "tiny.png", "fifo.jpg")), text
    assert json.load(open(str(tmp_path / "r.json"))) == []
    assert "no frame" in capsys.readouterr().err


def test_skipped_names_that_are_not_utf8_print_escaped_on_a_strict_utf8_stdout(assets, tmp_path):
    folder = os.path.join(os.fsencode(str(tmp_path)), b"in")
    os.mkdir(folder)
    _copy_frame(assets, os.path.join(folder, b"good.jpg"))
    with open(os.path.join(folder, b"\xff\xfe.jpg"), "wb") as f:
        f.write(b"\xff\xd8 not really a jpeg")
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    code, text = _detect(assets, tmp_path, os.fsdecode(folder), stream=stream)
    assert code == 0 and "1 frames, 1 skipped" in text
    assert "skipped \\xff\\xfe.jpg:" in text, text


@pytest.mark.parametrize("case", ["out is a folder", "save-images is a file"])
def test_bad_output_paths_are_clear_errors_and_nothing_is_written(assets, tmp_path, capsys, case):
    folder = tmp_path / "in"
    folder.mkdir()
    _copy_frame(assets, str(folder / "a.jpg"))
    out, extra = tmp_path / "r.json", []
    if case == "out is a folder":
        out = tmp_path / "results"
        out.mkdir()
    else:
        (tmp_path / "drawn").write_text("")
        extra = ["--save-images", str(tmp_path / "drawn")]
    _build(assets, tmp_path / "b", models=("balanced",), tta="none")
    before = sorted(os.listdir(str(tmp_path)))
    code, _ = _detect(assets, tmp_path, folder, out=out, extra=extra)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and ("is a folder" in err or "is not a folder" in err), err
    assert sorted(os.listdir(str(tmp_path))) == before
    assert not [n for n in os.listdir(str(tmp_path)) if n.endswith(".tmp")]
    if case == "out is a folder":
        assert os.listdir(str(out)) == []


def test_a_video_that_ends_early_is_a_warning_in_the_summary(assets, tmp_path):
    path = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (160, 120))
    for k in range(10):
        writer.write(np.random.RandomState(k).randint(0, 256, (120, 160, 3)).astype(np.uint8))
    writer.release()
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])
    code, text = _detect(assets, tmp_path, path)
    assert code == 0 and "warning: video %s ended after" % path in text and "of the 10 frames" in text, text
