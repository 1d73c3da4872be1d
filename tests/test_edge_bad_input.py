"""Every edge command refuses bad input in one line on stderr with exit status 2, never a traceback.

Each case runs `edge.cli.main(argv)` in-process. stdout is a strict UTF-8
stream like a terminal's (stderr escapes what it cannot encode, as Python's
own does), so a non-UTF-8 file name that reaches an unguarded write shows up
as an error here too. Commands that need a run to meet the bad input (`serve`
against a bundle, `power` on a meter) are bounded: `--max-frames 1`,
`--seconds` a fraction of a second. Runs on Python 3.6 (the Jetson's) too.
"""
import gzip
import io
import json
import logging
import os
import shutil
import tarfile

import pytest

from edge.bundle import sha256_of
from edge.cli import main
from tests.cli_runner import run_in_process
from tests.test_daemon_process import CLASSES, build_test_bundle, head_model, write_frames

DEEP = 100000   # far past Python's recursion limit: json recurses per level


def run_main(argv):
    return run_in_process(main, argv)


def _write(path, data):
    with open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    return path if isinstance(path, str) else os.fsdecode(path)


def _json(path, value):
    return _write(path, json.dumps(value))


def _bundle_with_manifest(root, name, bundle_root, manifest_text):
    """A copy of the good bundle whose manifest.json holds `manifest_text` (None: no manifest at all)."""
    folder = os.path.join(root, name)
    shutil.copytree(bundle_root, folder)
    os.remove(os.path.join(folder, "manifest.json"))
    if manifest_text is not None:
        _write(os.path.join(folder, "manifest.json"), manifest_text)
    return folder


def _tar_gz(path, members):
    """A .tar.gz holding {name: bytes}."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Name -> path (or text) of every bad (and the few good) inputs the table refers to as {name}."""
    root = str(tmp_path_factory.mktemp("edge_bad_input"))
    p = {"tmp": root, "missing": os.path.join(root, "missing"), "file": _write(os.path.join(root, "plain.txt"),
                                                                                "hello\n")}
    p["empty"] = os.path.join(root, "empty")
    os.makedirs(p["empty"])
    os.makedirs(os.path.join(root, "out"))
    bundle = build_test_bundle(os.path.join(root, "models"))
    p["bundle"] = bundle.root
    p["onnx"] = head_model(os.path.join(root, "head.onnx"))
    p["garbage_onnx"] = _write(os.path.join(root, "garbage.onnx"), b"\x08\x07 not a model")
    p["text_model"] = _write(os.path.join(root, "model.txt"), "not a model\n")
    p["frames"] = os.path.join(root, "frames")
    write_frames(p["frames"], 2)
    p["frame"] = os.path.join(p["frames"], "frame_0000.png")
    # classes files (bundle build --classes)
    p["classes"] = _write(os.path.join(root, "data.yaml"), "names: [%s]\n" % ", ".join(c[1] for c in CLASSES))
    p["garbage_yaml"] = _write(os.path.join(root, "garbage.yaml"), "names: [unclosed\n  nc: : 3\n")
    p["latin1_yaml"] = _write(os.path.join(root, "latin1.yaml"), "names: [caf\xe9]\n".encode("latin-1"))
    p["deep_yaml"] = _write(os.path.join(root, "deep.yaml"), "names: " + "[" * 5000 + "]" * 5000 + "\n")
    p["list_yaml"] = _write(os.path.join(root, "list.yaml"), "- turtle\n- grouper\n")
    p["no_names_yaml"] = _write(os.path.join(root, "nonames.yaml"), "nc: 3\n")
    p["bad_categories_yaml"] = _write(os.path.join(root, "badcat.yaml"),
                                      "names: [turtle]\ncategories: {0: protected}\n")
    # bundles: manifests that are garbage, empty, nested too deep, the wrong type; archives that are garbage
    for name, text in (("no_manifest", None), ("garbage_manifest", "{\"schema_version\": 2, "),
                       ("empty_manifest", ""), ("deep_manifest", "[" * DEEP + "]" * DEEP),
                       ("list_manifest", "[1, 2, 3]"), ("object_manifest", "{}"),
                       ("latin1_manifest", b"{\"name\": \"caf\xe9\"}")):
        p[name] = _bundle_with_manifest(root, name, bundle.root, text)
    with open(os.path.join(bundle.root, "manifest.json")) as f:
        manifest = json.load(f)
    p["nan_manifest"] = _bundle_with_manifest(root, "nan_manifest", bundle.root, json.dumps(
        dict(manifest, models=[dict(m, decode_thr=float("nan")) for m in manifest["models"]])))
    # a bundle whose models carry TensorRT engines (bytes no TensorRT would load: the module is absent here)
    p["engine_bundle"] = _bundle_with_manifest(root, "engine_bundle", bundle.root, None)
    engines = []
    for m in manifest["models"]:
        engine = _write(os.path.join(p["engine_bundle"], m["name"] + ".engine"), b"not a plan " + m["name"].encode())
        engines.append(dict(m, engine={"file": os.path.basename(engine), "sha256": sha256_of(engine)}))
    _json(os.path.join(p["engine_bundle"], "manifest.json"), dict(manifest, models=engines))
    p["garbage_tgz"] = _write(os.path.join(root, "garbage.tar.gz"), os.urandom(512))
    p["empty_tgz"] = _write(os.path.join(root, "empty.tar.gz"), b"")
    p["gzip_not_tar"] = _write(os.path.join(root, "notar.tar.gz"), gzip.compress(b"plain text, not a tar\n" * 40))
    p["manifestless_tgz"] = _tar_gz(os.path.join(root, "manifestless.tar.gz"), {"bundle/notes.txt": b"hello\n"})
    p["escaping_tgz"] = _tar_gz(os.path.join(root, "escaping.tar.gz"), {"../escaped.txt": b"hello\n"})
    p["zip_named_tgz"] = _write(os.path.join(root, "bundle.zip"), b"PK\x03\x04 not really a zip")
    # detect --coco-gt
    p["garbage_json"] = _write(os.path.join(root, "garbage.json"), "{\"images\": [1, 2,")
    p["deep_json"] = _write(os.path.join(root, "deep.json"), "[" * DEEP + "]" * DEEP)
    p["list_json"] = _write(os.path.join(root, "list.json"), "[1, 2]")
    p["latin1_json"] = _write(os.path.join(root, "latin1.json"), b"{\"images\": [], \"x\": \"caf\xe9\"}")
    # power --replay-file
    p["garbage_csv"] = _write(os.path.join(root, "garbage.csv"), "t_s,power_w\nsoon,lots\n")
    p["empty_csv"] = _write(os.path.join(root, "empty.csv"), "")
    p["nan_csv"] = _write(os.path.join(root, "nan.csv"), "t_s,power_w\n0,nan\n1,inf\n")
    # serve --config: a good one, then one bad key or value at a time
    good = {"bundle": bundle.root, "source": p["frames"], "store_path": os.path.join(root, "serve.sqlite"),
            "http_address": "", "meter": "estimated"}
    p["config"] = _json(os.path.join(root, "edge.json"), good)
    bad_values = {
        "unknown_key": {"intervall_s": 5}, "nan_interval": {"interval_s": float("nan")},
        "inf_budget": {"budget_wh_day": float("inf")}, "negative_interval": {"interval_s": -1},
        "zero_interval": {"interval_s": 0}, "text_interval": {"interval_s": "soon"},
        "bool_interval": {"interval_s": True}, "list_interval": {"interval_s": [1]},
        "hours_over_24": {"powered_hours_per_day": 25}, "negative_crops_bytes": {"crops_max_bytes": -1},
        "float_crops_per_frame": {"crops_per_frame": 1.5}, "bad_profile": {"profile": "fastest"},
        "bad_profiles": {"profiles": ["single", "bogus"]}, "empty_profiles": {"profiles": []},
        "bad_band": {"cascade_band": [0.9, 0.1]}, "nan_band": {"cascade_band": [float("nan"), 0.5]},
        "bad_http": {"http_address": "localhost"}, "http_port_range": {"http_address": "127.0.0.1:99999"},
        "http_number": {"http_address": 8080}, "bad_log_level": {"log_level": "LOUD"},
        "bad_sync": {"store_synchronous": "OFF"}, "bad_meter": {"meter": "wattmeter"},
        "empty_bundle": {"bundle": ""}, "null_bundle": {"bundle": None}, "dict_source": {"source": {"a": 1}},
        "negative_source": {"source": -1}, "reconnect_order": {"reconnect_initial_s": 100, "reconnect_max_s": 1},
        "unit_over_1": {"critical_min_score": 1.5}, "bad_classes": {"critical_classes": [[1]]},
        "infeasible_budget": {"budget_scope": "total", "budget_wh_day": 1.0, "idle_power_w": 5.0},
        "huge_int": {"crops_max_bytes": int("9" * 400)}, "bad_scope": {"budget_scope": "everything"},
        "missing_bundle": {"bundle": p["missing"]}, "missing_source": {"source": p["missing"]},
        "store_is_a_folder": {"store_path": p["empty"]},
        "store_folder_missing": {"store_path": os.path.join(p["missing"], "s.sqlite")},
        "crops_is_a_file": {"crops_dir": p["file"]}, "garbage_bundle": {"bundle": p["garbage_tgz"]},
    }
    for name, change in bad_values.items():
        p["config_" + name] = _json(os.path.join(root, "edge_%s.json" % name), dict(good, **change))
    p["config_garbage"] = _write(os.path.join(root, "edge_garbage.json"), "{\"bundle\": ")
    p["config_empty"] = _write(os.path.join(root, "edge_empty.json"), "")
    p["config_deep"] = _write(os.path.join(root, "edge_deep.json"), "[" * DEEP + "]" * DEEP)
    p["config_deep_value"] = _write(os.path.join(root, "edge_deep_value.json"),
                                    "{\"profiles\": " + "[" * DEEP + "]" * DEEP + "}")
    p["config_list"] = _write(os.path.join(root, "edge_list.json"), "[1, 2]")
    p["config_latin1"] = _write(os.path.join(root, "edge_latin1.json"), b"{\"source\": \"caf\xe9\"}")
    p["config_nan_literal"] = _write(os.path.join(root, "edge_nan_literal.json"), "{\"interval_s\": NaN}")
    p["config_dup_key"] = _write(os.path.join(root, "edge_dup.json"), "{\"interval_s\": 5, \"interval_s\": 60}")
    # Names that are not UTF-8 (Linux file names are bytes): main() sees them surrogate-escaped, as in sys.argv.
    raw = os.fsencode(root)
    p["bytes_missing"] = os.fsdecode(raw + b"/caf\xe9_missing")
    p["bytes_dir"] = os.fsdecode(raw + b"/caf\xe9_dir")
    os.makedirs(os.fsencode(p["bytes_dir"]))
    p["bytes_config"] = _write(raw + b"/caf\xe9.json", b"{\"interval_s\": -1}")
    p["bytes_garbage_tgz"] = _write(raw + b"/caf\xe9.tar.gz", b"garbage")
    p["bytes_yaml"] = _write(raw + b"/caf\xe9.yaml", b"nc: 3\n")
    p["bytes_frames"] = os.fsdecode(raw + b"/caf\xe9_frames")
    write_frames(os.path.join(root, "frames_to_rename"), 1)  # cv2.imwrite crashes on a non-UTF-8 name
    os.rename(os.path.join(root, "frames_to_rename"), p["bytes_frames"])
    p["bytes_replay"] = _write(raw + b"/caf\xe9.csv", b"t_s,power_w\n0,2.5\n1,3.5\n")
    p["bytes_bundle"] = os.fsdecode(raw + b"/caf\xe9_bundle")
    shutil.copytree(bundle.root, p["bytes_bundle"])
    _write(os.path.join(p["bytes_bundle"], "manifest.json"), "[]")
    return p


def _has_tensorrt():
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


# (case id, argv with {input} placeholders, fragment expected in the one-line message, owner file when the
# fault lives in a file this table's author does not own: those cases are xfail(strict=True)).
SERVE = ["serve", "--http", "", "--meter", "estimated", "--max-frames", "1"]
# {out}: a path of the case's own under {tmp}/out that no bad input may create (see the last test)
SERVE_OK = SERVE + ["--bundle", "{bundle}", "--source", "{frames}", "--store", "{out}.sqlite"]
DETECT = ["detect", "--bundle", "{bundle}", "--source", "{frames}", "--out", "{out}.json"]
BUILD = ["bundle", "build", "--model", "balanced={onnx}", "--classes", "{classes}", "--out", "{out}"]
POWER = ["power", "--meter", "estimated", "--seconds", "0.05", "--interval", "0.01"]

CASES = [
    # --- the parser itself ---
    ("no-command", [], "{bundle,detect,power,serve}", None),
    ("unknown-command", ["frobnicate"], "invalid choice: 'frobnicate'", None),
    ("unknown-flag", ["power", "--bogus"], "unrecognized arguments: --bogus", None),
    ("bundle-no-action", ["bundle"], "{build,verify,engines}", None),
    ("bundle-unknown-action", ["bundle", "rebuild"], "invalid choice: 'rebuild'", None),
    # --- bundle build ---
    ("build-classes-missing-flag", ["bundle", "build", "--model", "balanced={onnx}", "--out", "{out}"],
     "--classes", None),
    ("build-out-missing-flag", ["bundle", "build", "--model", "balanced={onnx}", "--classes", "{classes}"],
     "--out", None),
    ("build-no-model", ["bundle", "build", "--classes", "{classes}", "--out", "{out}"], "--model", None),
    ("build-model-no-equals", ["bundle", "build", "--model", "{onnx}", "--classes", "{classes}", "--out",
                               "{out}"], "VARIANT=PATH", None),
    ("build-model-bad-variant", ["bundle", "build", "--model", "fastest={onnx}", "--classes", "{classes}",
                                 "--out", "{out}"], "fastest", None),
    ("build-model-missing", ["bundle", "build", "--model", "balanced={missing}.onnx", "--classes", "{classes}",
                             "--out", "{out}"], "missing.onnx", None),
    ("build-model-is-a-folder", ["bundle", "build", "--model", "balanced={empty}", "--classes", "{classes}",
                                 "--out", "{out}"], "empty", None),
    ("build-model-garbage", ["bundle", "build", "--model", "balanced={garbage_onnx}", "--classes", "{classes}",
                             "--out", "{out}"], "garbage.onnx", None),
    ("build-model-unknown-extension", ["bundle", "build", "--model", "balanced={text_model}", "--classes",
                                       "{classes}", "--out", "{out}"], "model.txt", None),
    ("build-model-bytes-name-missing", ["bundle", "build", "--model", "balanced={bytes_missing}.onnx",
                                        "--classes", "{classes}", "--out", "{out}"], "caf\\xe9_missing", None),
    ("build-classes-missing", ["bundle", "build", "--model", "balanced={onnx}", "--classes", "{missing}.yaml",
                               "--out", "{out}"], "missing.yaml", None),
    ("build-classes-is-a-folder", ["bundle", "build", "--model", "balanced={onnx}", "--classes", "{empty}",
                                   "--out", "{out}"], "empty", None),
    ("build-classes-garbage", BUILD[:5] + ["{garbage_yaml}", "--out", "{out}"], "garbage.yaml", None),
    ("build-classes-not-utf8", BUILD[:5] + ["{latin1_yaml}", "--out", "{out}"], "latin1.yaml", None),
    ("build-classes-deeply-nested", BUILD[:5] + ["{deep_yaml}", "--out", "{out}"], "deep.yaml", None),
    ("build-classes-a-list", BUILD[:5] + ["{list_yaml}", "--out", "{out}"], "names", None),
    ("build-classes-no-names", BUILD[:5] + ["{no_names_yaml}", "--out", "{out}"], "names", None),
    ("build-classes-bad-category", BUILD[:5] + ["{bad_categories_yaml}", "--out", "{out}"], "protected", None),
    ("build-classes-bytes-name", BUILD[:5] + ["{bytes_yaml}", "--out", "{out}"], "caf\\xe9.yaml", None),
    ("build-critical-unknown", BUILD + ["--critical", "kraken"], "kraken", None),
    ("build-tta-unknown", BUILD + ["--tta", "sideways"], "sideways", None),
    ("build-imgsz-zero", BUILD + ["--imgsz", "0"], "--imgsz", None),
    ("build-imgsz-negative", BUILD + ["--imgsz", "-64"], "--imgsz", None),
    ("build-imgsz-not-a-number", BUILD + ["--imgsz", "big"], "argument --imgsz", None),
    ("build-target-unknown", BUILD + ["--target", "toaster"], "argument --target", None),
    ("build-decode-thr-nan", BUILD + ["--decode-thr", "nan"], "--decode-thr", None),
    ("build-decode-thr-over-1", BUILD + ["--decode-thr", "2"], "--decode-thr", None),
    ("build-decode-thr-negative", BUILD + ["--decode-thr", "-0.1"], "--decode-thr", None),
    ("build-iou-nan", BUILD + ["--iou", "nan"], "--iou", None),
    ("build-iou-over-1", BUILD + ["--iou", "1.5"], "--iou", None),
    ("build-operating-thr-no-equals", BUILD + ["--operating-thr", "0.3"], "--operating-thr", None),
    ("build-operating-thr-unknown-profile", BUILD + ["--operating-thr", "turbo=0.3"], "turbo", None),
    ("build-operating-thr-nan", BUILD + ["--operating-thr", "single=nan"], "single", None),
    ("build-operating-thr-inf", BUILD + ["--operating-thr", "single=inf"], "single", None),
    ("build-operating-thr-text", BUILD + ["--operating-thr", "single=high"], "single", None),
    ("build-out-is-a-file", BUILD[:7] + ["{file}"], "plain.txt", None),
    ("build-out-not-empty", BUILD[:7] + ["{bundle}"], "bundle", None),
    # --- bundle engines (refused before TensorRT is looked for) ---
    ("engines-no-bundle", ["bundle", "engines"], "bundle", None),
    ("engines-workspace-zero", ["bundle", "engines", "{bundle}", "--workspace-mb", "0"], "--workspace-mb", None),
    ("engines-missing", ["bundle", "engines", "{missing}"], "missing does not exist", None),
    ("engines-an-archive", ["bundle", "engines", "{garbage_tgz}"], "extract it first", None),
    # --- bundle verify ---
    ("verify-no-bundle", ["bundle", "verify"], "bundle", None),
    ("verify-missing", ["bundle", "verify", "{missing}"], "missing", None),
    ("verify-bytes-name-missing", ["bundle", "verify", "{bytes_missing}"], "caf\\xe9_missing", None),
    ("verify-a-plain-file", ["bundle", "verify", "{file}"], "plain.txt", None),
    ("verify-empty-folder", ["bundle", "verify", "{empty}"], "manifest.json", None),
    ("verify-no-manifest", ["bundle", "verify", "{no_manifest}"], "manifest.json", None),
    ("verify-garbage-manifest", ["bundle", "verify", "{garbage_manifest}"], "manifest.json", None),
    ("verify-empty-manifest", ["bundle", "verify", "{empty_manifest}"], "manifest.json", None),
    ("verify-deep-manifest", ["bundle", "verify", "{deep_manifest}"], "manifest.json", None),
    ("verify-list-manifest", ["bundle", "verify", "{list_manifest}"], "manifest.json", None),
    ("verify-object-manifest", ["bundle", "verify", "{object_manifest}"], "manifest.json", None),
    ("verify-latin1-manifest", ["bundle", "verify", "{latin1_manifest}"], "manifest.json", None),
    ("verify-nan-manifest", ["bundle", "verify", "{nan_manifest}"], "decode_thr", None),
    ("verify-bytes-name-manifest", ["bundle", "verify", "{bytes_bundle}"], "manifest.json", None),
    ("verify-garbage-tgz", ["bundle", "verify", "{garbage_tgz}"], "garbage.tar.gz", None),
    ("verify-empty-tgz", ["bundle", "verify", "{empty_tgz}"], "empty.tar.gz", None),
    ("verify-gzip-not-tar", ["bundle", "verify", "{gzip_not_tar}"], "notar.tar.gz", None),
    ("verify-manifestless-tgz", ["bundle", "verify", "{manifestless_tgz}"], "manifest", None),
    ("verify-escaping-tgz", ["bundle", "verify", "{escaping_tgz}"], "escaped.txt", None),
    ("verify-zip", ["bundle", "verify", "{zip_named_tgz}"], "bundle.zip", None),
    ("verify-bytes-name-garbage-tgz", ["bundle", "verify", "{bytes_garbage_tgz}"], "caf\\xe9.tar.gz", None),
    ("verify-backend-unknown", ["bundle", "verify", "{bundle}", "--backend", "cuda"], "argument --backend", None),
    # --- detect ---
    ("detect-bundle-missing-flag", ["detect", "--source", "{frames}", "--out", "{out}.json"], "--bundle", None),
    ("detect-bundle-missing", ["detect", "--bundle", "{missing}", "--source", "{frames}", "--out",
                               "{out}.json"], "missing", None),
    ("detect-bundle-garbage-tgz", ["detect", "--bundle", "{garbage_tgz}", "--source", "{frames}", "--out",
                                   "{out}.json"], "garbage.tar.gz", None),
    ("detect-bundle-deep-manifest", ["detect", "--bundle", "{deep_manifest}", "--source", "{frames}", "--out",
                                     "{out}.json"], "manifest.json", None),
    ("detect-source-missing", DETECT[:4] + ["{missing}"] + DETECT[5:], "missing", None),
    ("detect-source-bytes-name-missing", DETECT[:4] + ["{bytes_missing}"] + DETECT[5:], "caf\\xe9_missing", None),
    ("detect-source-empty-folder", DETECT[:4] + ["{empty}"] + DETECT[5:], "empty", None),
    ("detect-source-not-an-image", DETECT[:4] + ["{file}"] + DETECT[5:], "plain.txt", None),
    ("detect-out-is-a-folder", DETECT[:6] + ["{empty}"], "folder", None),
    ("detect-out-folder-missing", DETECT[:6] + ["{missing}/r.json"], "missing", None),
    ("detect-out-bytes-folder-missing", DETECT[:6] + ["{bytes_missing}/r.json"], "caf\\xe9_missing", None),
    ("detect-save-images-is-a-file", DETECT + ["--save-images", "{file}"], "--save-images", None),
    ("detect-tta-unknown", DETECT + ["--tta", "sideways"], "sideways", None),
    ("detect-models-unknown", DETECT + ["--models", "precision"], "precision", None),
    ("detect-models-empty", DETECT + ["--models", ","], "has no model ''", None),
    ("detect-backend-unknown", DETECT + ["--backend", "cuda"], "argument --backend", None),
    ("detect-draw-thr-nan", DETECT + ["--draw-thr", "nan"], "--draw-thr", None),
    ("detect-draw-thr-over-1", DETECT + ["--draw-thr", "1.5"], "--draw-thr", None),
    ("detect-draw-thr-text", DETECT + ["--draw-thr", "high"], "argument --draw-thr", None),
    ("detect-decode-thr-nan", DETECT + ["--decode-thr", "nan"], "--decode-thr", None),
    ("detect-decode-thr-negative", DETECT + ["--decode-thr", "-1"], "--decode-thr", None),
    ("detect-decode-thr-inf", DETECT + ["--decode-thr", "inf"], "--decode-thr", None),
    ("detect-coco-gt-missing", DETECT + ["--coco-gt", "{missing}.json"], "missing.json", None),
    ("detect-coco-gt-is-a-folder", DETECT + ["--coco-gt", "{empty}"], "--coco-gt", None),
    ("detect-coco-gt-garbage", DETECT + ["--coco-gt", "{garbage_json}"], "garbage.json", None),
    ("detect-coco-gt-deep", DETECT + ["--coco-gt", "{deep_json}"], "deep.json", None),
    ("detect-coco-gt-a-list", DETECT + ["--coco-gt", "{list_json}"], "list.json", None),
    ("detect-coco-gt-not-utf8", DETECT + ["--coco-gt", "{latin1_json}"], "latin1.json", None),
    # --- power ---
    ("power-meter-unknown", ["power", "--meter", "wattmeter"], "argument --meter", None),
    ("power-seconds-zero", POWER + ["--seconds", "0"], "--seconds", None),
    ("power-seconds-negative", POWER + ["--seconds", "-1"], "--seconds", None),
    ("power-seconds-nan", POWER + ["--seconds", "nan"], "--seconds", None),
    ("power-seconds-inf", POWER + ["--seconds", "inf"], "--seconds", None),
    ("power-seconds-text", POWER + ["--seconds", "long"], "argument --seconds", None),
    ("power-interval-zero", POWER + ["--interval", "0"], "--interval", None),
    ("power-interval-nan", POWER + ["--interval", "nan"], "--interval", None),
    ("power-interval-inf", POWER + ["--interval", "inf"], "--interval", None),
    ("power-idle-negative", POWER + ["--idle-w", "-1"], "--idle-w", None),
    ("power-idle-nan", POWER + ["--idle-w", "nan"], "--idle-w", None),
    ("power-busy-inf", POWER + ["--busy-w", "inf"], "--busy-w", None),
    ("power-busy-below-idle", POWER + ["--idle-w", "5", "--busy-w", "1"], "--busy-w", None),
    ("power-root-missing", ["power", "--meter", "ina3221", "--root", "{missing}", "--seconds", "0.05"],
     "missing", None),
    ("power-root-is-a-file", ["power", "--root", "{file}", "--seconds", "0.05", "--interval", "0.01"],
     "--root", None),
    ("power-rapl-root-missing", ["power", "--meter", "rapl", "--root", "{missing}", "--seconds", "0.05"],
     "missing", None),
    ("power-tegrastats-absent", ["power", "--meter", "tegrastats", "--root", "{empty}", "--seconds", "0.05"],
     "tegrastats", None),
    ("power-replay-no-file", ["power", "--meter", "replay", "--seconds", "0.05"], "--replay-file", None),
    ("power-replay-missing", ["power", "--meter", "replay", "--replay-file", "{missing}.csv", "--seconds", "0.05"],
     "missing.csv", None),
    ("power-replay-is-a-folder", ["power", "--meter", "replay", "--replay-file", "{empty}", "--seconds", "0.05"],
     "empty", None),
    ("power-replay-garbage", ["power", "--meter", "replay", "--replay-file", "{garbage_csv}", "--seconds",
                              "0.05"], "garbage.csv", None),
    ("power-replay-empty", ["power", "--meter", "replay", "--replay-file", "{empty_csv}", "--seconds", "0.05"],
     "empty.csv", None),
    ("power-replay-nan", ["power", "--meter", "replay", "--replay-file", "{nan_csv}", "--seconds", "0.05"],
     "nan.csv", None),
    ("power-replay-bytes-name-missing", ["power", "--meter", "replay", "--replay-file", "{bytes_missing}",
                                         "--seconds", "0.05"], "caf\\xe9_missing", None),
    # --- serve: flags ---
    ("serve-meter-unknown", ["serve", "--meter", "wattmeter"], "argument --meter", None),
    ("serve-backend-unknown", ["serve", "--backend", "cuda"], "argument --backend", None),
    ("serve-max-frames-zero", SERVE_OK[:6] + ["0"] + SERVE_OK[7:], "--max-frames", None),
    ("serve-max-frames-negative", SERVE_OK[:6] + ["-3"] + SERVE_OK[7:], "--max-frames", None),
    ("serve-max-frames-text", SERVE_OK[:6] + ["all"] + SERVE_OK[7:], "argument --max-frames", None),
    ("serve-interval-zero", SERVE_OK + ["--interval", "0"], "interval_s", None),
    ("serve-interval-negative", SERVE_OK + ["--interval", "-10"], "interval_s", None),
    ("serve-interval-nan", SERVE_OK + ["--interval", "nan"], "interval_s", None),
    ("serve-interval-inf", SERVE_OK + ["--interval", "inf"], "interval_s", None),
    ("serve-budget-zero", SERVE_OK + ["--budget-wh-day", "0"], "budget_wh_day", None),
    ("serve-budget-nan", SERVE_OK + ["--budget-wh-day", "nan"], "budget_wh_day", None),
    ("serve-budget-inf", SERVE_OK + ["--budget-wh-day", "inf"], "budget_wh_day", None),
    ("serve-measure-idle-negative", SERVE_OK + ["--measure-idle", "-1"], "--measure-idle", None),
    ("serve-measure-idle-nan", SERVE_OK + ["--measure-idle", "nan"], "--measure-idle", None),
    ("serve-measure-idle-inf", SERVE_OK + ["--measure-idle", "inf"], "--measure-idle", None),
    ("serve-profile-unknown", SERVE_OK + ["--profile", "fastest"], "fastest", None),
    ("serve-http-no-port", SERVE_OK + ["--http", "localhost"], "localhost", None),
    ("serve-http-port-range", SERVE_OK + ["--http", "127.0.0.1:70000"], "70000", None),
    ("serve-http-port-text", SERVE_OK + ["--http", "127.0.0.1:http"], "127.0.0.1:http", None),
    ("serve-http-no-host", SERVE_OK + ["--http", ":8080"], ":8080", None),
    ("serve-http-unresolvable", SERVE_OK + ["--http", "no-such-host.invalid:8080"], "no-such-host.invalid", None),
    ("serve-http-foreign-address", SERVE_OK + ["--http", "203.0.113.7:8080"], "203.0.113.7", None),
    ("serve-bundle-missing", SERVE + ["--bundle", "{missing}", "--source", "{frames}", "--store",
                                      "{out}.sqlite"], "missing", None),
    ("serve-bundle-garbage-tgz", SERVE + ["--bundle", "{garbage_tgz}", "--source", "{frames}", "--store",
                                          "{out}.sqlite"], "garbage.tar.gz", None),
    ("serve-bundle-deep-manifest", SERVE + ["--bundle", "{deep_manifest}", "--source", "{frames}", "--store",
                                            "{out}.sqlite"], "manifest.json", None),
    ("serve-bundle-bytes-name", SERVE + ["--bundle", "{bytes_bundle}", "--source", "{frames}", "--store",
                                         "{out}.sqlite"], "manifest.json", None),
    ("serve-source-missing", SERVE + ["--bundle", "{bundle}", "--source", "{missing}", "--store",
                                      "{out}.sqlite"], "missing", None),
    ("serve-source-bytes-name-missing", SERVE + ["--bundle", "{bundle}", "--source", "{bytes_missing}",
                                                 "--store", "{out}.sqlite"], "caf\\xe9_missing", None),
    ("serve-source-unknown-scheme", SERVE + ["--bundle", "{bundle}", "--source", "http://camera/1", "--store",
                                             "{out}.sqlite"], "http://camera/1", None),
    ("serve-store-is-a-folder", SERVE + ["--bundle", "{bundle}", "--source", "{frames}", "--store", "{empty}"],
     "empty", None),
    ("serve-store-folder-missing", SERVE + ["--bundle", "{bundle}", "--source", "{frames}", "--store",
                                            "{missing}/s.sqlite"], "missing", None),
    ("serve-store-not-sqlite", SERVE + ["--bundle", "{bundle}", "--source", "{frames}", "--store", "{file}"],
     "plain.txt", None),
    ("serve-crops-is-a-file", SERVE_OK + ["--crops", "{file}"], "plain.txt", None),
    # --- serve: the config file ---
    ("serve-config-missing", ["serve", "--config", "{missing}.json"], "missing.json", None),
    ("serve-config-bytes-name-missing", ["serve", "--config", "{bytes_missing}.json"], "caf\\xe9_missing", None),
    ("serve-config-is-a-folder", ["serve", "--config", "{empty}"], "empty", None),
    ("serve-config-garbage", ["serve", "--config", "{config_garbage}"], "not valid JSON", None),
    ("serve-config-empty", ["serve", "--config", "{config_empty}"], "edge_empty.json", None),
    ("serve-config-deeply-nested", ["serve", "--config", "{config_deep}"], "edge_deep.json", None),
    ("serve-config-deep-value", ["serve", "--config", "{config_deep_value}"], "edge_deep_value.json", None),
    ("serve-config-a-list", ["serve", "--config", "{config_list}"], "expected a JSON object", None),
    ("serve-config-not-utf8", ["serve", "--config", "{config_latin1}"], "edge_latin1.json", None),
    ("serve-config-nan-literal", ["serve", "--config", "{config_nan_literal}"], "interval_s", None),
    ("serve-config-duplicate-key", ["serve", "--config", "{config_dup_key}"], "'interval_s' is given twice", None),
    ("serve-config-bytes-name", ["serve", "--config", "{bytes_config}"], "interval_s", None),
] + [("serve-config-" + name.replace("_", "-"), ["serve", "--max-frames", "1", "--config", "{config_%s}" % name],
      fragment, None) for name, fragment in (
    ("unknown_key", "intervall_s"), ("nan_interval", "interval_s"), ("inf_budget", "budget_wh_day"),
    ("negative_interval", "interval_s"), ("zero_interval", "interval_s"), ("text_interval", "interval_s"),
    ("bool_interval", "interval_s"), ("list_interval", "interval_s"), ("hours_over_24", "powered_hours_per_day"),
    ("negative_crops_bytes", "crops_max_bytes"), ("float_crops_per_frame", "crops_per_frame"),
    ("bad_profile", "fastest"), ("bad_profiles", "bogus"), ("empty_profiles", "profiles"),
    ("bad_band", "cascade_band"), ("nan_band", "cascade_band"), ("bad_http", "http_address"),
    ("http_port_range", "http_address"), ("http_number", "http_address"), ("bad_log_level", "log_level"),
    ("bad_sync", "store_synchronous"), ("bad_meter", "wattmeter"), ("empty_bundle", "bundle"),
    ("null_bundle", "bundle"), ("dict_source", "source"), ("negative_source", "source"),
    ("reconnect_order", "reconnect_initial_s"), ("unit_over_1", "critical_min_score"),
    ("bad_classes", "critical_classes"), ("infeasible_budget", "budget"), ("huge_int", "crops_max_bytes"),
    ("bad_scope", "budget_scope"), ("missing_bundle", "missing"), ("missing_source", "missing"),
    ("store_is_a_folder", "empty"), ("store_folder_missing", "missing"), ("crops_is_a_file", "plain.txt"),
    ("garbage_bundle", "garbage.tar.gz"))]

TENSORRT_CASES = [   # a bundle with engines, then one without: both say what is missing
    ("verify-tensorrt", ["bundle", "verify", "{engine_bundle}", "--backend", "tensorrt"], "tensorrt", None),
    ("detect-tensorrt", DETECT[:2] + ["{engine_bundle}"] + DETECT[3:] + ["--backend", "tensorrt"], "tensorrt",
     None),
    ("serve-tensorrt", SERVE + ["--bundle", "{engine_bundle}", "--source", "{frames}", "--store", "{out}.sqlite",
                                "--backend", "tensorrt"], "tensorrt", None),
    ("verify-tensorrt-no-engine", ["bundle", "verify", "{bundle}", "--backend", "tensorrt"], "engine", None),
    ("detect-tensorrt-no-engine", DETECT + ["--backend", "tensorrt"], "engine", None),
    ("serve-tensorrt-no-engine", SERVE_OK + ["--backend", "tensorrt"], "engine", None),
]


def _have_yaml():
    try:
        import yaml  # noqa: F401
    except ImportError:
        return False
    return True


# bundle build cases argparse refuses before --classes is read (the rest need PyYAML, absent on the Jetson's 3.6)
PARSED_BEFORE_CLASSES = ("imgsz", "iou", "target", "decode-thr", "missing-flag")


def _params(cases):
    for case_id, argv, fragment, owner in cases:
        marks = [pytest.mark.xfail(strict=True, reason="fault in %s (not this table's author's file)" % owner)] \
            if owner else []
        if case_id.startswith("build-") and not any(k in case_id for k in PARSED_BEFORE_CLASSES):
            marks.append(pytest.mark.skipif(not _have_yaml(), reason="bundle build reads data.yaml with PyYAML"))
        yield pytest.param(case_id, argv, fragment, id=case_id, marks=marks)


def _argv(inputs, case_id, argv):
    return [a.format(out=os.path.join(inputs["tmp"], "out", case_id), **inputs) for a in argv]


# Outputs a refused input may leave by design: detect writes its (empty) results when no frame could be read.
WRITTEN_ANYWAY = {"detect-source-not-an-image": ["detect-source-not-an-image.json"]}


def _left_behind(inputs, case_id):
    """What a case made under {tmp}/out; serve's store is test_serve_refusal_leaves_no_store's concern."""
    out = os.path.join(inputs["tmp"], "out")
    made = sorted(n for n in os.listdir(out) if n.startswith(case_id) or n == "crops")
    if case_id.startswith("serve"):
        made = [n for n in made if not (n.startswith(case_id + ".sqlite") or n == "crops")]
    return [n for n in made if n not in WRITTEN_ANYWAY.get(case_id, [])]


def _check_one_line(inputs, case_id, argv, fragment, caplog):
    caplog.set_level(logging.INFO)
    rc, out, err, crash = run_main(_argv(inputs, case_id, argv))
    assert crash is None, crash
    assert "Traceback" not in out + err, out + err
    logged = [r for r in caplog.records if r.exc_info]
    assert not logged, logged[0].getMessage()  # a logged traceback is one too
    assert rc == 2, (rc, out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("reefwatch-edge"), err
    assert fragment.lower() in lines[0].lower(), lines[0]
    assert _left_behind(inputs, case_id) == [], "a refused input left outputs behind"


@pytest.mark.parametrize("case_id, argv, fragment", list(_params(CASES)))
def test_bad_input_is_one_line_and_exit_2(inputs, case_id, argv, fragment, caplog):
    _check_one_line(inputs, case_id, argv, fragment, caplog)


@pytest.mark.skipif(_have_yaml(), reason="PyYAML is installed here")
def test_bundle_build_without_pyyaml_is_one_line(inputs, caplog):
    """The Jetson's Python has no PyYAML: bundle build says so in one line instead of failing on import."""
    _check_one_line(inputs, "build-without-pyyaml", BUILD, "needs PyYAML", caplog)


@pytest.mark.skipif(_has_tensorrt(), reason="TensorRT is installed here: --backend tensorrt is no bad input")
@pytest.mark.parametrize("case_id, argv, fragment", list(_params(TENSORRT_CASES)))
def test_tensorrt_without_tensorrt_is_one_line(inputs, case_id, argv, fragment, caplog):
    _check_one_line(inputs, case_id, argv, fragment, caplog)


@pytest.mark.parametrize("argv", [
    pytest.param(SERVE_OK, id="serve"), pytest.param(DETECT, id="detect"), pytest.param(POWER, id="power"),
    pytest.param(["bundle", "verify", "{bundle}"], id="verify"),
    pytest.param(SERVE + ["--bundle", "{bundle}", "--source", "{bytes_frames}", "--store", "{out}.sqlite"],
                 id="serve-bytes-source"),
    pytest.param(DETECT[:4] + ["{bytes_frames}"] + DETECT[5:] + ["--save-images", "{out}_drawn"],
                 id="detect-bytes-source"),
    pytest.param(POWER[:2] + ["replay", "--replay-file", "{bytes_replay}"] + POWER[3:], id="power-bytes-replay"),
])
def test_good_input_still_runs(inputs, argv, tmp_path):
    """The same flags without the fault succeed: the table's failures are the bad input's."""
    rc, out, err, crash = run_main([a.format(out=str(tmp_path / "good"), **inputs) for a in argv])
    assert crash is None, crash
    assert rc == 0, (rc, out, err)


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"], ["bundle", "build", "--help"]])
def test_help_exits_0(argv):
    rc, out, err, crash = run_main(argv)
    assert crash is None and rc == 0 and "usage:" in out and err == "", (rc, out, err, crash)


def test_serve_refusal_leaves_no_store(inputs, tmp_path):
    """A serve refused for its bundle, source or HTTP address has not created its store yet."""
    for bad in (["--bundle", "{missing}", "--source", "{frames}"], ["--bundle", "{bundle}", "--source", "{missing}"]):
        store = str(tmp_path / "refused.sqlite")
        rc, out, err, crash = run_main(SERVE + [a.format(**inputs) for a in bad] + ["--store", store])
        assert crash is None and rc == 2, (rc, err, crash)
        assert os.listdir(str(tmp_path)) == [], os.listdir(str(tmp_path))
