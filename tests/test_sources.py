"""Frame sources: spec parsing, CSI pipeline string, folder watching, video files, reconnects."""
import os
import threading
import time

import cv2
import numpy as np
import pytest

from edge.errors import SourceError
from edge.images import MIN_SIDE_PX
from edge.sources import (Backoff, CaptureSource, FolderSource, check_image, nvargus_pipeline, open_source,
                          parse_source_spec)
from tests.test_images import encoded, hostile_entries, picture, write_video


def test_nvargus_pipeline_string():
    got = nvargus_pipeline(sensor_id=1, width=1920, height=1080, fps=21, flip_method=2, out_width=960, out_height=540)
    assert got == (
        "nvarguscamerasrc sensor-id=1 ! "
        "video/x-raw(memory:NVMM), width=(int)1920, height=(int)1080, framerate=(fraction)21/1, format=(string)NV12 ! "
        "nvvidconv flip-method=2 ! video/x-raw, width=(int)960, height=(int)540, format=(string)BGRx ! "
        "videoconvert ! video/x-raw, format=(string)BGR ! appsink drop=true max-buffers=1")
    assert "width=(int)1280, height=(int)720, format=(string)BGRx" in nvargus_pipeline()


@pytest.mark.parametrize("kwargs", [{"flip_method": 9}, {"fps": -1}, {"width": 12.5}])
def test_nvargus_pipeline_rejects_bad_values(kwargs):
    with pytest.raises(SourceError, match=list(kwargs)[0]):
        nvargus_pipeline(**kwargs)


def test_parse_source_spec(tmp_path):
    video = tmp_path / "clip.avi"
    video.write_bytes(b"x")
    table = [
        (0, ("v4l2", 0)), ("2", ("v4l2", 2)), ("/dev/video1", ("v4l2", "/dev/video1")), ("csi://0", ("csi", 0)),
        ("csi://1", ("csi", 1)), ("rtsp://cam.local:554/s1", ("rtsp", "rtsp://cam.local:554/s1")),
        (str(video), ("video", str(video))), (str(tmp_path), ("folder", str(tmp_path))),
    ]
    for spec, expected in table:
        assert parse_source_spec(spec) == expected


@pytest.mark.parametrize("spec", ["/no/such/file.mp4", "http://cam/stream", "csi://x", -1])
def test_unknown_spec_names_it_and_the_accepted_forms(spec):
    with pytest.raises(SourceError) as err:
        parse_source_spec(spec)
    assert repr(spec) in str(err.value) and "csi://N" in str(err.value) and "rtsp://" in str(err.value)


@pytest.mark.parametrize("attempt, expected", [(0, 1.0), (1, 2.0), (2, 4.0), (5, 30.0), (100, 30.0)])
def test_backoff_is_exponential_and_capped(attempt, expected):
    assert Backoff(1.0, 2.0, 30.0).delay_s(attempt) == min(30.0, 1.0 * 2.0 ** attempt) == expected


@pytest.mark.parametrize("image, ok", [
    (np.zeros((8, 9, 3), np.uint8), True), (None, False), (np.zeros((8, 9), np.uint8), False),
    (np.zeros((8, 9, 3), np.float32), False), (np.zeros((0, 9, 3), np.uint8), False),
    (np.zeros((MIN_SIDE_PX - 1, 9, 3), np.uint8), False), (np.zeros((1, 1, 3), np.uint8), False),
])
def test_check_image(image, ok):
    assert (check_image(image) == "") is ok


def write_image(path, value):
    cv2.imwrite(str(path), np.full((16, 24, 3), value, np.uint8))


def test_folder_source_reads_good_skips_corrupt_in_name_order(tmp_path):
    write_image(tmp_path / "b.png", 20)
    write_image(tmp_path / "a.png", 10)
    (tmp_path / "c.jpg").write_bytes(b"not a jpeg at all")
    (tmp_path / "notes.txt").write_text("ignored")
    old = time.time() - 60
    for name in ("a.png", "b.png", "c.jpg"):
        os.utime(str(tmp_path / name), (old, old))
    src = FolderSource(str(tmp_path), watch=False, poll_interval_s=0.01)
    frames = list(src)
    assert [os.path.basename(f.origin) for f in frames] == ["a.png", "b.png", "c.jpg"]
    assert [f.frame_id for f in frames] == [0, 1, 2]
    assert [int(f.image[0, 0, 0]) for f in frames[:2]] == [10, 20]
    assert frames[2].image is None and "c.jpg" in frames[2].reason
    assert src.counters["frames"] == 2 and src.counters["corrupt"] == 1
    assert all(f.source == "folder:{}".format(tmp_path) for f in frames)


def _old_images(folder, names):
    old = time.time() - 60
    for i, name in enumerate(names):
        write_image(folder / name, 10 * (i + 1))
        os.utime(str(folder / name), (old, old))


@pytest.mark.parametrize("make_skip", [
    lambda done: set(done),
    lambda done: (lambda origin: origin in done),
    lambda done: list(done),
])
def test_folder_source_skips_recorded_origins_unread(tmp_path, make_skip):
    _old_images(tmp_path, ["a.png", "b.png", "c.png", "d.png"])
    done = [str(tmp_path / "a.png"), str(tmp_path / "c.png"), str(tmp_path / "gone.png")]
    read = []

    def imread(path):
        read.append(os.path.basename(path))
        return cv2.imread(path)

    src = FolderSource(str(tmp_path), watch=False, imread=imread, skip=make_skip(done))
    frames = list(src)
    assert [os.path.basename(f.origin) for f in frames] == ["b.png", "d.png"] == read
    assert [f.frame_id for f in frames] == [0, 1]
    assert src.counters["already_recorded"] == 2 and src.counters["frames"] == 2


def test_folder_source_resume_from_before_iterating(tmp_path):
    _old_images(tmp_path, ["a.png", "b.png"])
    src = FolderSource(str(tmp_path), watch=False)
    src.resume_from({str(tmp_path / "a.png")})
    assert [os.path.basename(f.origin) for f in src] == ["b.png"]


def test_folder_source_waits_for_files_being_written_and_sees_late_ones(tmp_path):
    write_image(tmp_path / "000.png", 1)
    old = time.time() - 60
    os.utime(str(tmp_path / "000.png"), (old, old))
    stop = threading.Event()
    polls = []
    partial = tmp_path / "002.png"
    full_bytes = cv2.imencode(".png", np.full((16, 24, 3), 3, np.uint8))[1].tobytes()

    def wait(seconds):  # the "clock" of the watcher: each poll lets the writer make progress
        polls.append(seconds)
        if len(polls) == 1:
            write_image(tmp_path / "001.png", 2)  # arrives late
            partial.write_bytes(full_bytes[:20])  # still being written: it grows at every poll
        elif len(polls) in (2, 3):
            with open(str(partial), "ab") as f:
                f.write(full_bytes[20:40] if len(polls) == 2 else full_bytes[40:])
        elif len(polls) > 6:
            stop.set()

    src = FolderSource(str(tmp_path), poll_interval_s=0.5, stop_event=stop, settle_s=30.0, wait=wait)
    frames = list(src)
    assert [os.path.basename(f.origin) for f in frames] == ["000.png", "001.png", "002.png"]
    assert all(f.image is not None for f in frames), [f.reason for f in frames]
    assert int(frames[2].image[0, 0, 0]) == 3
    assert src.counters["corrupt"] == 0
    assert set(polls) == {0.5}


def test_folder_source_stop_event_ends_a_real_watch(tmp_path):
    stop = threading.Event()
    src = FolderSource(str(tmp_path), poll_interval_s=0.05, stop_event=stop)
    timer = threading.Timer(0.2, stop.set)
    timer.start()
    t0 = time.monotonic()
    assert list(src) == []
    assert time.monotonic() - t0 < 2.0
    timer.join()


def test_missing_folder_raises(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        FolderSource(str(tmp_path / "nope"))


def test_video_file_source_reads_every_frame(tmp_path):
    path = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 48))
    assert writer.isOpened()
    for k in range(6):
        writer.write(np.full((48, 64, 3), 40 * k, np.uint8))
    writer.release()
    with open_source(path) as src:
        frames = list(src)
    assert [f.frame_id for f in frames] == list(range(6))
    assert [f.origin for f in frames] == ["video:%s#%d" % (path, k) for k in range(6)]
    assert all(f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 for f in frames)
    assert [int(round(f.image.mean() / 40)) for f in frames] == list(range(6))
    assert src.name == "video:" + path and src.counters["frames"] == 6


class FakeCapture(object):
    def __init__(self, frames, opened=True):
        self.frames, self.opened, self.released = list(frames), opened, False

    def isOpened(self):
        return self.opened

    def read(self):
        if not self.frames:
            return False, None
        item = self.frames.pop(0)
        return (item is not False), (None if item is False else item)

    def set(self, prop, value):
        return True

    def release(self):
        self.released = True


class FakeFactory(object):
    """Fails `failures` times (raising or not opened), then serves captures from `sessions` in order."""

    def __init__(self, failures, sessions):
        self.failures, self.sessions, self.calls = failures, list(sessions), []

    def __call__(self, target, api):
        self.calls.append((target, api))
        if self.failures > 0:
            self.failures -= 1
            if self.failures % 2:
                raise RuntimeError("camera busy")
            return FakeCapture([], opened=False)
        return FakeCapture(self.sessions.pop(0)) if self.sessions else FakeCapture([], opened=False)


def img(v):
    return np.full((MIN_SIDE_PX, MIN_SIDE_PX, 3), v, np.uint8)


def test_reconnect_with_backoff_after_failures_and_lost_stream():
    stop = threading.Event()
    sleeps = []
    factory = FakeFactory(3, [[img(1), img(2), False], [img(3), np.zeros((4, 4), np.uint8), img(4)]])
    src = open_source("rtsp://user:secret@cam/s", stop_event=stop, backoff=Backoff(1.0, 2.0, 3.0),
                      sleep=sleeps.append, capture_factory=factory)
    got = []
    for frame in src:
        got.append(frame)
        if len(got) == 5:
            stop.set()
    assert [f.image is None for f in got] == [False, False, False, True, False]
    assert [int(f.image[0, 0, 0]) for f in got if f.image is not None] == [1, 2, 3, 4]
    assert [f.frame_id for f in got] == list(range(5))
    assert sleeps == [1.0, 2.0, 3.0]  # three failed opens, capped at 3 s; the lost stream reopened at once
    assert src.counters == {"frames": 4, "corrupt": 1, "reconnects": 1, "open_failures": 3}
    assert "secret" not in src.name and all(call[0] == "rtsp://user:secret@cam/s" for call in factory.calls)
    assert all(call[1] == cv2.CAP_FFMPEG for call in factory.calls)


def test_backoff_resets_and_gives_up_after_max_attempts():
    sleeps = []
    factory = FakeFactory(10, [])
    src = CaptureSource("csi:0", lambda: factory("p", 0), backoff=Backoff(0.5, 2.0, 10.0), sleep=sleeps.append,
                        max_attempts=4)
    with pytest.raises(SourceError, match="gave up after 4"):
        list(src)
    assert sleeps == [0.5, 1.0, 2.0]


def test_stop_event_interrupts_reconnect():
    stop = threading.Event()
    factory = FakeFactory(10 ** 6, [])
    src = open_source("csi://0", stop_event=stop, capture_factory=factory, sleep=lambda s: stop.set())
    assert list(src) == []
    assert factory.calls[0][1] == cv2.CAP_GSTREAMER and factory.calls[0][0].startswith("nvarguscamerasrc sensor-id=0")


def test_video_that_cannot_open_raises(tmp_path):
    path = tmp_path / "broken.avi"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(SourceError, match="cannot open"):
        list(open_source(str(path), capture_factory=lambda t, api: FakeCapture([], opened=False)))


# ---- hostile files in a watched folder ------------------------------------------------------------------------

def _polls(count, stop, on_poll=None):
    """A folder source's wait(): lets `count` polls happen, then stops the source."""
    polls = []

    def wait(seconds):
        polls.append(seconds)
        if on_poll is not None:
            on_poll(len(polls))
        if len(polls) >= count:
            stop.set()
    return wait, polls


def test_each_hostile_entry_is_one_skipped_frame_saying_what_it_is_however_often_polled(tmp_path):
    expected = hostile_entries(tmp_path)
    write_image(tmp_path / "good.png", 30)
    os.utime(str(tmp_path / "good.png"), (1e9, 1e9))
    stop = threading.Event()
    wait, polls = _polls(5, stop)
    src = FolderSource(str(tmp_path), poll_interval_s=0.5, stop_event=stop, wait=wait)
    frames = list(src)
    assert len(polls) == 5
    by_name = {os.path.basename(f.origin): f for f in frames}
    assert len(frames) == len(by_name) == len(expected) + 1  # each entry once, not once per poll
    assert by_name["good.png"].image is not None
    for name, reason in expected.items():
        frame = by_name[name]
        assert frame.image is None and reason in frame.reason, (name, frame.reason)
        frame.reason.encode("utf-8")  # goes into the store's reason column as it is
    assert src.counters["corrupt"] == len(expected) and src.counters["frames"] == 1


def test_five_one_pixel_images_are_five_skipped_frames(tmp_path):
    for i in range(5):
        cv2.imwrite(str(tmp_path / ("%d.png" % i)), np.zeros((1, 1, 3), np.uint8))
        os.utime(str(tmp_path / ("%d.png" % i)), (1e9, 1e9))
    frames = list(FolderSource(str(tmp_path), watch=False))
    assert [f.image for f in frames] == [None] * 5
    assert all("1x1 pixels" in f.reason for f in frames)


def test_a_truncated_file_still_being_written_is_read_once_it_is_whole(tmp_path):
    whole = encoded(".png", picture(64, 80))
    path = tmp_path / "late.png"
    path.write_bytes(whole[:len(whole) // 2])
    stop = threading.Event()

    def on_poll(n):
        if n == 3:  # the writer finishes after the half file was read once
            path.write_bytes(whole)
    wait, polls = _polls(8, stop, on_poll)
    src = FolderSource(str(tmp_path), poll_interval_s=0.5, stop_event=stop, settle_s=30.0, wait=wait)
    frames = list(src)
    assert len(frames) == 1 and frames[0].image is not None, [f.reason for f in frames]
    np.testing.assert_array_equal(frames[0].image, picture(64, 80))
    assert src.counters["corrupt"] == 0


def test_a_settled_truncated_file_is_refused_not_stored_as_an_ok_frame(tmp_path):
    jpeg = encoded(".jpg", picture(64, 80))
    (tmp_path / "cut.jpg").write_bytes(jpeg[:len(jpeg) * 2 // 3])
    os.utime(str(tmp_path / "cut.jpg"), (1e9, 1e9))
    frames = list(FolderSource(str(tmp_path), watch=False))
    assert len(frames) == 1 and frames[0].image is None and "truncated" in frames[0].reason


def test_a_file_whose_name_is_not_utf8_is_read_and_resume_skips_it(tmp_path):
    raw = os.path.join(os.fsencode(str(tmp_path)), b"\xff\xfe.png")
    with open(raw, "wb") as f:
        f.write(encoded(".png"))
    os.utime(raw, (1e9, 1e9))
    frames = list(FolderSource(str(tmp_path), watch=False))  # cv2.imread crashed (SIGSEGV) on this name
    assert len(frames) == 1 and frames[0].origin == os.fsdecode(raw)
    np.testing.assert_array_equal(frames[0].image, picture())
    assert list(FolderSource(str(tmp_path), watch=False, skip={frames[0].origin})) == []


def test_a_video_file_whose_name_is_not_utf8_opens(tmp_path):
    plain = str(tmp_path / "clip.avi")
    write_video(plain, 3)
    odd = os.fsdecode(os.path.join(os.fsencode(str(tmp_path)), b"\xff.avi"))
    os.rename(plain, odd)
    with open_source(odd) as src:
        frames = list(src)
    assert [f.image.shape for f in frames] == [(48, 64, 3)] * 3
