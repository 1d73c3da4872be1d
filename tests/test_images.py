"""The one image reader: headers, limits, truncation, non-regular files, odd names; and `detect` over them.

Every hostile file is generated here (headers written by hand, nothing big
allocated); none is copied from a data set.
"""
import json
import os
import struct
import zlib

import cv2
import numpy as np
import pytest

from edge.detect import iter_frames, run_detect
from edge.detections import Detections
from edge.errors import EdgeError, FrameError
from edge.images import (MAX_PIXELS, MIN_SIDE_PX, TruncatedImage, display_name, file_problem, frame_problem,
                         image_header, list_images, opencv_path, read_image)
from edge.tta import check_frame

# ---- generated files (helpers shared with test_sources) ------------------------------------------------------


def picture(h=16, w=24):
    """A deterministic BGR picture whose every pixel differs from its neighbours."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 7) % 256, (y * 11) % 256, (x + y) * 3 % 256], axis=2).astype(np.uint8)


def encoded(ext, image=None, params=()):
    ok, data = cv2.imencode(ext, picture() if image is None else image, list(params))
    assert ok
    return data.tobytes()


def _png_chunk(kind, payload):
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def _jpeg_segment(marker, payload):
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def _jpeg_header(width, height):
    sof = struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + _jpeg_segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00") + _jpeg_segment(0xC0, sof)


def forged(kind, width, height):
    """A file of `kind` whose header declares width x height, with no pixel data behind it."""
    if kind == "PNG":
        ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b"")
    if kind == "JPEG":
        return _jpeg_header(width, height) + b"\xff\xd9"
    if kind == "JPEG+EXIF":  # an APP1 segment holding a thumbnail JPEG with its own (small) frame header
        thumbnail = _jpeg_header(160, 120) + b"\xff\xd9"
        return b"\xff\xd8" + _jpeg_segment(0xE1, b"Exif\x00\x00" + thumbnail) + _jpeg_header(width, height)[2:] + b"\xff\xd9"
    if kind == "BMP":
        info = struct.pack("<IiiHHIIiiII", 40, width, -height, 1, 24, 0, 0, 0, 0, 0, 0)
        return b"BM" + struct.pack("<IHHI", 0, 0, 0, 54) + info
    if kind == "TIFF-II":
        entries = struct.pack("<HHII", 256, 4, 1, width) + struct.pack("<HHII", 257, 4, 1, height)
        return b"II*\x00" + struct.pack("<IH", 8, 2) + entries + struct.pack("<I", 0)
    if kind == "TIFF-MM":  # big-endian, SHORT values
        entries = struct.pack(">HHIHH", 256, 3, 1, width, 0) + struct.pack(">HHIHH", 257, 3, 1, height, 0)
        return b"MM\x00*" + struct.pack(">IH", 8, 2) + entries + struct.pack(">I", 0)
    if kind == "WebP-VP8X":
        chunk = b"VP8X" + struct.pack("<I", 10) + b"\x00" * 4 + (width - 1).to_bytes(3, "little") \
            + (height - 1).to_bytes(3, "little")
        return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk
    raise ValueError(kind)


def hostile_entries(folder):
    """Make, in `folder`, one entry of each kind that is no usable frame; returns {name: reason fragment}."""
    folder = str(folder)
    small = encoded(".png", np.zeros((1, 1, 3), np.uint8))
    jpeg = encoded(".jpg", picture(64, 64))
    files = {"tiny.png": (small, "1x1 pixels, under the %d px minimum side" % MIN_SIDE_PX),
             "cut.jpg": (jpeg[:len(jpeg) // 2], "truncated"),
             "empty.jpg": (b"", "empty"),
             "huge.png": (forged("PNG", 20000, 20000), "over the %.1f MP limit" % (MAX_PIXELS / 1e6)),
             "text.png": (b"hello, not an image", "is not a PNG, JPEG"),
             os.fsdecode(b"\xff\xfe-tiny.png"): (small, "under the")}
    expected = {}
    for name, (data, reason) in files.items():
        path = os.path.join(folder, name)
        with open(path, "wb") as f:
            f.write(data)
        os.utime(path, (1e9, 1e9))  # long settled
        expected[name] = reason
    os.mkfifo(os.path.join(folder, "fifo.jpg"))
    os.mkdir(os.path.join(folder, "dir.jpg"))
    os.symlink(os.path.join(folder, "nowhere.png"), os.path.join(folder, "dangling.png"))
    os.symlink("loop.jpg", os.path.join(folder, "loop.jpg"))
    expected.update({"fifo.jpg": "is a FIFO, not a regular file", "dir.jpg": "is a directory, not a regular file",
                     "dangling.png": "is a dangling symlink", "loop.jpg": "is a symlink loop"})
    return expected


def write_video(path, frames, size=(64, 48)):
    """An MJPG AVI of `frames` noise frames, so the frames outweigh the headers (`path` must be UTF-8)."""
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 5.0, size)
    assert writer.isOpened()
    for k in range(frames):
        writer.write(np.random.RandomState(k).randint(0, 256, (size[1], size[0], 3)).astype(np.uint8))
    writer.release()


def declared_frames(path):
    capture = cv2.VideoCapture(path)
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    return count


# ---- headers and the pixel limit ------------------------------------------------------------------------------

@pytest.mark.parametrize("ext, params, kind", [
    (".png", (), "PNG"), (".jpg", (), "JPEG"), (".bmp", (), "BMP"), (".tiff", (), "TIFF"),
    (".webp", (cv2.IMWRITE_WEBP_QUALITY, 101), "WebP"), (".webp", (cv2.IMWRITE_WEBP_QUALITY, 80), "WebP"),
])
def test_encoded_files_read_back_with_their_header_size(tmp_path, ext, params, kind):
    image = picture(40, 56)
    data = encoded(ext, image, params)
    assert image_header(data) == (kind, image.shape[1], image.shape[0])
    path = str(tmp_path / ("x" + ext))
    with open(path, "wb") as f:
        f.write(data)
    got = read_image(path)
    assert got.shape == image.shape and got.dtype == np.uint8
    if kind != "JPEG" and params != (cv2.IMWRITE_WEBP_QUALITY, 80):  # the lossless ones give every pixel back
        np.testing.assert_array_equal(got, image)


@pytest.mark.parametrize("kind", ["PNG", "JPEG", "JPEG+EXIF", "BMP", "TIFF-II", "TIFF-MM", "WebP-VP8X"])
@pytest.mark.parametrize("width, height", [(20000, 20000), (640, 480)])
def test_forged_headers_give_their_declared_size(kind, width, height):
    assert image_header(forged(kind, width, height)) == (kind.split("-")[0].split("+")[0], width, height)


@pytest.mark.parametrize("kind", ["PNG", "JPEG", "BMP", "TIFF-II", "WebP-VP8X"])
def test_an_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path, monkeypatch, kind):
    path = str(tmp_path / "huge.img")
    with open(path, "wb") as f:
        f.write(forged(kind, 20000, 20000))

    def no_decoding(*args):
        raise AssertionError("decoded an image over the pixel limit")

    monkeypatch.setattr(cv2, "imdecode", no_decoding)
    with pytest.raises(FrameError) as err:
        read_image(path)
    assert "20000x20000" in str(err.value) and "%.1f MP limit" % (MAX_PIXELS / 1e6) in str(err.value)
    assert "huge.img" in str(err.value)


@pytest.mark.parametrize("max_pixels, ok", [(40 * 56, True), (40 * 56 - 1, False)])
def test_the_pixel_limit_is_configurable(tmp_path, max_pixels, ok):
    path = str(tmp_path / "x.png")
    cv2.imwrite(path, picture(40, 56))
    if ok:
        assert read_image(path, max_pixels=max_pixels).shape == (40, 56, 3)
    else:
        with pytest.raises(FrameError, match="over the"):
            read_image(path, max_pixels=max_pixels)


# ---- truncation, size, emptiness ------------------------------------------------------------------------------

def _cut(data, kind):
    return {"half": data[:len(data) // 2], "no end marker": data[:-2], "zero padded": data + b"\x00" * 64,
            "whole": data}[kind]


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".webp"])
@pytest.mark.parametrize("cut, truncated", [("half", True), ("no end marker", True), ("zero padded", False),
                                            ("whole", False)])
def test_truncated_files_are_refused_and_padding_is_allowed(tmp_path, ext, cut, truncated):
    path = str(tmp_path / ("x" + ext))
    with open(path, "wb") as f:
        f.write(_cut(encoded(ext, picture(64, 80)), cut))
    if ext in (".bmp", ".webp") and cut == "no end marker":
        truncated = True  # their header declares the file size: two bytes short is short
    if truncated:
        with pytest.raises(TruncatedImage, match="truncated"):
            read_image(path)
    else:
        assert read_image(path).shape == (64, 80, 3)


@pytest.mark.parametrize("side, min_side, ok", [(1, MIN_SIDE_PX, False), (MIN_SIDE_PX - 1, MIN_SIDE_PX, False),
                                                (MIN_SIDE_PX, MIN_SIDE_PX, True), (1, 1, True)])
def test_a_frame_under_the_minimum_side_is_refused(tmp_path, side, min_side, ok):
    path = str(tmp_path / "small.png")
    cv2.imwrite(path, picture(side, 40))
    if ok:
        assert read_image(path, min_side=min_side).shape == (side, 40, 3)
    else:
        with pytest.raises(FrameError, match="40x%d pixels, under the %d px minimum side" % (side, min_side)):
            read_image(path, min_side=min_side)


@pytest.mark.parametrize("image, problem", [
    (picture(8, 8), ""), (None, "no image decoded"), (np.zeros((8, 8), np.uint8), "not (H, W, 3)"),
    (np.zeros((8, 8, 3), np.float32), "not uint8"), (np.zeros((0, 8, 3), np.uint8), "under the"),
    (np.zeros((1, 1, 3), np.uint8), "1x1 pixels"),
])
def test_frame_problem_is_the_one_rule(image, problem):
    got = frame_problem(image)
    assert (got == "") if not problem else (problem in got)


# ---- what is a file, and names ------------------------------------------------------------------------------

def test_every_hostile_entry_is_refused_with_what_it_is(tmp_path):
    expected = hostile_entries(tmp_path)
    for name, reason in expected.items():
        path = os.path.join(str(tmp_path), name)
        with pytest.raises(FrameError) as err:
            read_image(path)  # a FIFO would block here if it were opened for a blocking read
        message = str(err.value)
        assert reason in message and display_name(name) in message, (name, message)
        message.encode("utf-8")  # printable and storable whatever the name's bytes


@pytest.mark.parametrize("path, shown", [
    ("plain.jpg", "plain.jpg"), ("récif.jpg", "récif.jpg"), (os.fsdecode(b"\xff\xfe.jpg"), "\\xff\\xfe.jpg"),
    (b"\xffa.png", "\\xffa.png"), (b"caf\xc3\xa9.png", "café.png"),
])
def test_display_name_escapes_bytes_that_are_not_utf8(path, shown):
    assert display_name(path) == shown


@pytest.mark.parametrize("as_bytes", [False, True])
def test_a_name_that_is_not_utf8_reads_by_bytes(tmp_path, as_bytes):
    raw = os.path.join(os.fsencode(str(tmp_path)), b"\xff\xfe.png")
    with open(raw, "wb") as f:
        f.write(encoded(".png"))
    got = read_image(raw if as_bytes else os.fsdecode(raw))  # cv2.imread would crash (SIGSEGV) on this name
    np.testing.assert_array_equal(got, picture())


@pytest.mark.parametrize("make, problem", [
    (lambda p: open(p, "w").close(), ""), (os.mkfifo, "is a FIFO"), (os.mkdir, "is a directory"),
    (lambda p: os.symlink(p + ".missing", p), "is a dangling symlink"), (lambda p: os.symlink(p, p), "symlink loop"),
    (lambda p: None, "does not exist"),
])
def test_file_problem_says_what_an_entry_is(tmp_path, make, problem):
    path = str(tmp_path / "x.jpg")
    make(path)
    got = file_problem(path)
    assert (got == "") if not problem else (problem in got)


def test_list_images_keeps_regular_image_files_only_in_walk_order(tmp_path):
    hostile_entries(tmp_path)
    good = ["a.png", "b.jpg", os.fsdecode(b"\xfe.png")]
    _good(tmp_path, good)
    os.symlink(os.path.join(str(tmp_path), "a.png"), os.path.join(str(tmp_path), "link.png"))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.png").write_bytes(encoded(".png"))
    regular = [n for n in os.listdir(str(tmp_path)) if os.path.isfile(os.path.join(str(tmp_path), n))
               and n.endswith((".png", ".jpg"))]
    top = [os.path.join(str(tmp_path), n) for n in sorted(regular)]
    assert list_images(str(tmp_path)) == top
    assert list_images(str(tmp_path), recursive=True) == top + [str(tmp_path / "sub" / "c.png")]


def test_opencv_path_opens_a_video_whose_name_is_not_utf8(tmp_path):
    plain = str(tmp_path / "clip.avi")
    write_video(plain, 4)
    odd = os.fsdecode(os.path.join(os.fsencode(str(tmp_path)), b"\xff-clip.avi"))
    os.rename(plain, odd)
    with opencv_path(odd) as name:
        capture = cv2.VideoCapture(name)  # with `odd` itself OpenCV crashes
    frames = 0
    while capture.read()[0]:
        frames += 1
    capture.release()
    assert frames == 4


# ---- detect over hostile sources (a fake pipeline: no model needed) ---------------------------------------

class FakeClass(object):
    def __init__(self, class_id):
        self.id, self.category = class_id, "general"


class FakeBundle(object):
    names = ["fish"]
    classes = [FakeClass(0)]


class FakePipeline(object):
    """One box per frame, after the runtime's own frame check (tta.check_frame)."""

    bundle = FakeBundle()

    def __init__(self):
        self.seen = []

    def detect(self, frame, models=None, plan=None, all_scores=False):
        check_frame(frame)
        self.seen.append(frame.shape)
        return Detections([[1, 1, 5, 5]], [0.9], [0])


def _good(folder, names):
    for name in names:
        with open(os.path.join(str(folder), name), "wb") as f:
            f.write(encoded(".png"))


def test_detect_skips_every_hostile_file_with_its_reason_and_keeps_the_run(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    expected = hostile_entries(folder)
    _good(folder, ["a_good.png", "z_good.png"])
    out = str(tmp_path / "r.json")
    summary = run_detect(FakePipeline(), str(folder), out)
    assert summary["frames"] == 2 and summary["skipped"] == len(expected)
    reasons = {item["file_name"]: item["reason"] for item in summary["skipped_files"]}
    assert set(reasons) == set(expected)
    assert all(expected[name] in reasons[name] for name in expected), reasons
    assert sorted({r["file_name"] for r in json.load(open(out))}) == ["a_good.png", "z_good.png"]


def test_a_frame_the_pipeline_refuses_is_skipped_not_the_end_of_the_run(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    _good(folder, ["a.png", "c.png"])
    cv2.imwrite(str(folder / "b.png"), picture(1, 1))
    out = str(tmp_path / "r.json")
    summary = run_detect(FakePipeline(), str(folder), out, min_side=1)  # let the 1x1 through to the pipeline
    assert (summary["frames"], summary["skipped"]) == (2, 1)
    assert summary["skipped_files"][0]["file_name"] == "b.png" and "too small" in summary["skipped_files"][0]["reason"]
    assert len(json.load(open(out))) == 2


def test_a_folder_of_only_bad_files_still_writes_empty_results(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    expected = hostile_entries(folder)
    out = str(tmp_path / "r.json")
    summary = run_detect(FakePipeline(), str(folder), out)
    assert summary["frames"] == 0 and summary["skipped"] == len(expected)
    assert json.load(open(out)) == []


@pytest.mark.parametrize("case", ["out is a folder", "save-images is a file", "out folder missing"])
def test_bad_outputs_are_refused_before_anything_is_written(tmp_path, case):
    folder = tmp_path / "in"
    folder.mkdir()
    _good(folder, ["a.png"])
    out, save = str(tmp_path / "r.json"), None
    if case == "out is a folder":
        out = str(tmp_path / "results")
        os.mkdir(out)
    elif case == "save-images is a file":
        save = str(tmp_path / "drawn")
        open(save, "w").close()
    else:
        out = str(tmp_path / "missing" / "r.json")
    before = sorted(os.listdir(str(tmp_path)))
    pipeline = FakePipeline()
    with pytest.raises(EdgeError) as err:
        run_detect(pipeline, str(folder), out, save_images=save)
    assert (save or out) in str(err.value)
    assert sorted(os.listdir(str(tmp_path))) == before and pipeline.seen == []
    if case == "out is a folder":
        assert os.listdir(out) == []


def test_a_failed_results_write_leaves_no_temporary_file(tmp_path):
    from edge.detect import _write_json_atomically

    out = str(tmp_path / "r.json")
    with pytest.raises(EdgeError, match="r.json"):
        _write_json_atomically(out, [object()])
    assert os.listdir(str(tmp_path)) == []


def test_a_video_that_ends_early_is_reported(tmp_path):
    whole = str(tmp_path / "whole.avi")
    write_video(whole, 10)
    data = open(whole, "rb").read()
    cut = str(tmp_path / "cut.avi")
    with open(cut, "wb") as f:
        f.write(data[:len(data) // 2])
    declared = declared_frames(cut)
    notes = []
    read = sum(1 for _ in iter_frames(cut, notes=notes))
    assert declared == 10 and 0 < read < declared
    assert notes == ["video %s ended after %d of the %d frames its header declares (truncated or corrupt)"
                     % (cut, read, declared)]
    summary = run_detect(FakePipeline(), cut, str(tmp_path / "r.json"))
    assert summary["frames"] == read and summary["warnings"] == notes
    notes = []
    assert sum(1 for _ in iter_frames(whole, notes=notes)) == 10 and notes == []


def test_detect_reads_a_video_and_images_whose_names_are_not_utf8(tmp_path):
    folder = os.path.join(os.fsencode(str(tmp_path)), b"in")
    os.mkdir(folder)
    _good(os.fsdecode(folder), [os.fsdecode(b"\xff.png")])
    summary = run_detect(FakePipeline(), os.fsdecode(folder), str(tmp_path / "r.json"))
    assert summary["frames"] == 1
    assert [r["file_name"] for r in json.load(open(str(tmp_path / "r.json")))] == [os.fsdecode(b"\xff.png")]
    plain = str(tmp_path / "clip.avi")
    write_video(plain, 3)
    odd = os.fsdecode(os.path.join(os.fsencode(str(tmp_path)), b"\xfe.avi"))
    os.rename(plain, odd)
    assert run_detect(FakePipeline(), odd, str(tmp_path / "v.json"))["frames"] == 3
