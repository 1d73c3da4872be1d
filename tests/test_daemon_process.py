"""`python -m edge serve` as a real process (kill -9, restart, SIGTERM, SIGHUP) and a 2,000-frame soak.

The process tests use a real bundle whose models are tiny ONNX graphs written
here byte by byte (the `onnx` package is not on the Jetson's Python 3.6): the
output is a fixed YOLO head (1, 4+nc, A) plus the image mean times a slope,
so scores move with brightness. ONNX Runtime runs them on both Pythons.
"""
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from edge.sources import Frame

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NC, ANCHORS, IMGSZ = 3, 4, 64
CLASSES = [(0, "turtle", "critical"), (1, "grouper", "important"), (2, "wrasse", "general")]


# ---- a YOLO-head ONNX model in raw protobuf -------------------------------------

def _varint(n):
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _int(field, value):
    return _varint(field << 3) + _varint(value)


def _bytes(field, data):
    data = data.encode("utf-8") if isinstance(data, str) else data
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _tensor(name, array):  # TensorProto: dims=1, data_type=2 (1 = FLOAT), name=8, raw_data=9
    array = np.ascontiguousarray(array, dtype="<f4")
    return b"".join(_int(1, d) for d in array.shape) + _int(2, 1) + _bytes(8, name) + _bytes(9, array.tobytes())


def _value_info(name, shape):  # ValueInfoProto{name, TypeProto{tensor_type{elem_type, shape{dim{dim_value}}}}}
    dims = b"".join(_bytes(1, _int(1, d)) for d in shape)
    return _bytes(1, name) + _bytes(2, _bytes(1, _int(1, 1) + _bytes(2, dims)))


def _node(op, inputs, outputs, attributes=b""):
    return b"".join(_bytes(1, i) for i in inputs) + b"".join(_bytes(2, o) for o in outputs) + _bytes(4, op) + attributes


def head_onnx(path, base, slope, imgsz=IMGSZ):
    """output0 = base + mean(images) * slope, for an input (1, 3, imgsz, imgsz); opset 13, IR 7."""
    keepdims = _bytes(5, _bytes(1, "keepdims") + _int(3, 0) + _int(20, 2))  # AttributeProto, type INT
    nodes = [_node("ReduceMean", ["images"], ["mean"], keepdims), _node("Mul", ["mean", "slope"], ["scaled"]),
             _node("Add", ["base", "scaled"], ["output0"])]
    graph = (b"".join(_bytes(1, n) for n in nodes) + _bytes(2, "head") + _bytes(5, _tensor("base", base))
             + _bytes(5, _tensor("slope", slope)) + _bytes(11, _value_info("images", (1, 3, imgsz, imgsz)))
             + _bytes(12, _value_info("output0", base.shape)))
    model = _int(1, 7) + _bytes(2, "reefwatch-tests") + _bytes(7, graph) + _bytes(8, _bytes(1, "") + _int(2, 13))
    with open(path, "wb") as f:
        f.write(model)
    return path


def head_model(path, seed=0):
    """Four boxes; a grouper that gets surer with brightness and a turtle that fades with it."""
    rng = np.random.RandomState(seed)
    base = np.zeros((1, 4 + NC, ANCHORS), np.float32)
    slope = np.zeros_like(base)
    base[0, :4] = np.array([[16, 48, 32, 20], [16, 16, 40, 48], [12, 14, 10, 16], [12, 10, 14, 12]], np.float32)
    base[0, :4] += rng.uniform(-1, 1, (4, ANCHORS)).astype(np.float32)
    base[0, 4 + 1, 0], slope[0, 4 + 1, 0] = 0.2, 0.7
    base[0, 4 + 0, 1], slope[0, 4 + 0, 1] = 0.9, -0.6
    base[0, 4 + 2, 2] = 0.8
    return head_onnx(path, base, slope)


def build_test_bundle(folder, variants=("recall", "balanced"), tta="flip"):
    """A verified bundle of head models (one per variant) for the 3-class test taxonomy."""
    from edge.bundle_build import build_bundle

    os.makedirs(folder, exist_ok=True)
    models = [(v, head_model(os.path.join(folder, "%s.onnx" % v), seed=i)) for i, v in enumerate(variants)]
    return build_bundle(os.path.join(folder, "bundle"), models, CLASSES, tta=tta)


def write_frames(folder, count, start=0, seed=0):
    import cv2

    os.makedirs(folder, exist_ok=True)
    rng = np.random.RandomState(seed + start)
    for i in range(start, start + count):
        image = np.full((48 + 8 * (i % 3), 64, 3), int(rng.randint(20, 235)), np.uint8)
        tmp = os.path.join(folder, "frame_%04d.tmp" % i)
        cv2.imwrite(tmp + ".png", image)
        os.rename(tmp + ".png", os.path.join(folder, "frame_%04d.png" % i))  # appears whole to the watcher


# ---- the process --------------------------------------------------------------------

def _serve_argv(config_path):
    return [sys.executable, "-m", "edge", "serve", "--config", config_path]


class Served(object):
    def __init__(self, tmp, config_path, name):
        self.log_path = str(tmp / ("%s.log" % name))
        self.log = open(self.log_path, "w")
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.pop("NOTIFY_SOCKET", None)
        self.proc = subprocess.Popen(_serve_argv(config_path), cwd=str(tmp), stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env)

    def text(self):
        with open(self.log_path) as f:
            return f.read()

    def wait_exit(self, timeout_s=20.0):
        try:
            return self.proc.wait(timeout_s)
        finally:
            self.log.close()

    def wait_for(self, condition, what, timeout_s=30.0):
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if condition():
                return
            if self.proc.poll() is not None:
                pytest.fail("serve exited with %s while waiting for %s:\n%s"
                            % (self.proc.returncode, what, self.text()))
            time.sleep(0.1)
        self.proc.kill()
        pytest.fail("timed out waiting for %s:\n%s" % (what, self.text()))


def frame_count(store_path, status=None):
    if not os.path.exists(store_path):
        return 0
    conn = sqlite3.connect(store_path, timeout=10)
    try:
        sql = "SELECT COUNT(*) FROM frames" + (" WHERE status = ?" if status else "")
        return conn.execute(sql, (status,) if status else ()).fetchone()[0]
    except sqlite3.OperationalError:  # the daemon has not created the tables yet
        return 0
    finally:
        conn.close()


@pytest.fixture
def deployment(tmp_path):
    pytest.importorskip("onnxruntime")
    import json

    bundle = build_test_bundle(str(tmp_path / "models"))
    frames = str(tmp_path / "frames")
    write_frames(frames, 30)
    config = {"bundle": bundle.root, "source": frames, "store_path": str(tmp_path / "store.sqlite"),
              "crops_dir": str(tmp_path / "crops"), "interval_s": 0.1, "budget_wh_day": 1000.0,
              "http_address": "127.0.0.1:0", "meter": "estimated", "folder_poll_s": 0.2}
    path = str(tmp_path / "edge.json")
    with open(path, "w") as f:
        json.dump(config, f)
    return {"tmp": tmp_path, "config": path, "store": config["store_path"], "frames": frames, "bundle": bundle.root}


def origin_counts(store_path):
    """{origin: frames stored for it}."""
    if not os.path.exists(store_path):
        return {}
    conn = sqlite3.connect(store_path, timeout=10)
    try:
        return dict(conn.execute("SELECT origin, COUNT(*) FROM frames GROUP BY origin").fetchall())
    except sqlite3.OperationalError:  # the daemon has not created the tables yet
        return {}
    finally:
        conn.close()


def _partial_frames(store_path):
    conn = sqlite3.connect(store_path)
    try:
        return conn.execute("SELECT COUNT(*) FROM frames f WHERE f.n_detections != "
                            "(SELECT COUNT(*) FROM detections d WHERE d.frame_row = f.id)").fetchone()[0]
    finally:
        conn.close()


def test_kill9_leaves_a_sound_store_then_serve_resumes_and_sigterm_drains(deployment):
    from edge.store import Store

    store = deployment["store"]
    first = Served(deployment["tmp"], deployment["config"], "first")
    first.wait_for(lambda: frame_count(store) >= 5, "5 stored frames")
    first.proc.kill()  # SIGKILL: no cleanup at all
    assert first.wait_exit() == -signal.SIGKILL
    with Store(store) as reopened:  # runs PRAGMA integrity_check and raises unless "ok"
        assert reopened.integrity_check() == ["ok"]
        before = reopened.frame_counts()["total"]
    assert before >= 5 and _partial_frames(store) == 0
    done = origin_counts(store)
    assert len(done) == before and set(done.values()) == {1}

    files = sorted(os.path.join(deployment["frames"], n) for n in os.listdir(deployment["frames"]))
    second = Served(deployment["tmp"], deployment["config"], "second")
    second.wait_for(lambda: len(origin_counts(store)) >= len(files), "every file stored")
    second.proc.send_signal(signal.SIGTERM)
    assert second.wait_exit() == 0, second.text()
    log = second.text()
    assert "restored from store: %d frames today" % before in log
    assert "%d files already in the store are skipped" % before in log
    assert "served " in log and _partial_frames(store) == 0
    # Only the frame in flight at the kill (never committed) is read again: every file is stored once.
    assert origin_counts(store) == {path: 1 for path in files}
    assert frame_count(store) == len(files) and frame_count(store, "ok") == len(files)


def test_sighup_with_a_broken_bundle_keeps_serving_then_a_good_one_loads(deployment):
    store, manifest = deployment["store"], os.path.join(deployment["bundle"], "manifest.json")
    served = Served(deployment["tmp"], deployment["config"], "hup")
    served.wait_for(lambda: frame_count(store) >= 3, "3 stored frames")
    with open(manifest) as f:
        good = f.read()
    with open(manifest, "w") as f:
        f.write(good.replace('"sha256": "', '"sha256": "0', 1))  # a checksum that no longer matches
    served.proc.send_signal(signal.SIGHUP)
    served.wait_for(lambda: "reload refused" in served.text(), "the refused reload")
    count = frame_count(store)
    served.wait_for(lambda: frame_count(store) >= count + 3, "frames after the refused reload")
    with open(manifest, "w") as f:
        f.write(good)
    served.proc.send_signal(signal.SIGHUP)
    served.wait_for(lambda: "reloaded bundle" in served.text(), "the good reload")
    write_frames(deployment["frames"], 3, start=100)
    served.wait_for(lambda: frame_count(store) >= 33, "frames added to the watched folder")
    served.proc.send_signal(signal.SIGTERM)
    assert served.wait_exit() == 0, served.text()
    assert "Traceback" not in served.text()


# ---- soak -----------------------------------------------------------------------------

def _rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


def _open_fds():
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_soak_2000_frames_keeps_memory_and_descriptors_flat(tmp_path):
    from edge.backends.fake import FakeBackend
    from edge.bundle import DEFAULT_FUSION, Bundle, ClassSpec, ModelSpec
    from edge.config import load_edge_config
    from edge.daemon import Daemon
    from edge.pipeline import Pipeline
    from edge.power.estimated import EstimatedMeter
    from edge.tta import view_plan

    total, warmup = 2000, 300
    outputs = np.zeros((1, 4 + NC, ANCHORS), np.float32)
    outputs[0, :4, :] = [[16, 48, 32, 20], [16, 16, 40, 48], [12, 14, 10, 16], [12, 10, 14, 12]]
    outputs[0, 4 + 1, 0], outputs[0, 4 + 2, 2] = 0.9, 0.8
    with_turtle = outputs.copy()
    with_turtle[0, 4 + 0, 1] = 0.7  # a critical species: its crop is saved (every 20th frame)
    scene = [outputs]
    classes = [ClassSpec(*c) for c in CLASSES]

    def pipeline_factory(path):
        models = [ModelSpec(v, v, v, v.ljust(64, "0"), "onnx", (IMGSZ, IMGSZ), 1, 0.25, 0.7, 1.0, None)
                  for v in ("recall", "balanced")]
        bundle = Bundle(path, {}, models, classes, [1.0] * NC, view_plan("flip"), dict(DEFAULT_FUSION))
        return Pipeline(bundle, {m.name: FakeBackend(lambda batch: scene[0], input_shape=(3, IMGSZ, IMGSZ))
                                 for m in models})

    image = np.full((48, 64, 3), 90, np.uint8)
    marks = {}

    def source_factory(stop_event, wait):
        def generate():
            for i in range(total):
                if i in (warmup, total - 1):
                    marks[i] = (_rss_kib(), _open_fds())
                scene[0] = with_turtle if i % 20 == 0 else outputs
                yield Frame(i, time.time(), image, "soak", "", "")
        return generate()

    config = load_edge_config(None, dict(
        bundle=str(tmp_path / "b"), source="soak", budget_wh_day=1000.0, store_path=str(tmp_path / "s.sqlite"),
        crops_dir=str(tmp_path / "crops"), crops_max_bytes=20000, store_synchronous="NORMAL",
        http_address="127.0.0.1:0", profile="ensemble_flip"))
    meter = EstimatedMeter(use_psutil=False).open()
    start = time.monotonic()
    summary = Daemon(config, pipeline_factory=pipeline_factory, source_factory=source_factory, meter=meter,
                     pace=False).run()
    elapsed_s = time.monotonic() - start
    assert summary["processed"] == total and summary["failed"] == 0
    assert 0 < len(os.listdir(str(tmp_path / "crops"))) < total // 20  # saved, then pruned to the byte limit
    (rss0, fds0), (rss1, fds1) = marks[warmup], marks[total - 1]
    assert rss1 <= rss0 * 1.05, "RSS grew from %d KiB to %d KiB over %d frames" % (rss0, rss1, total - warmup)
    assert fds1 <= fds0, "open descriptors grew from %d to %d" % (fds0, fds1)
    assert elapsed_s < 60.0
