"""Image files as frames: which names are images, which files can be frames, and the one reader.

Everything that reads an image file (`detect`, the watched folder of `serve`,
the trainer, the benchmarks) goes through `read_image`, so all agree on what a
usable frame is:

- only regular files are read: a FIFO named x.jpg blocks any reader forever,
  and a directory, a dangling link or a symlink loop is named for what it is;
- the file is read by its bytes (opened non-blocking) and decoded with
  cv2.imdecode: OpenCV's path functions crash on a name that is not UTF-8;
- the header is parsed first (PNG, JPEG, BMP, TIFF, WebP; anything else is
  refused), so an image declaring more than `max_pixels` is refused before
  decoding: a 20000x20000 PNG decodes to 1.2 GB, more than a Nano can spare;
- a JPEG without its end marker or a PNG without IEND is truncated and
  refused: decoders fill the missing part with grey and the detector runs on it;
- a frame under `min_side` pixels on a side is refused (`frame_problem`).
"""
import errno
import logging
import os
import stat
import struct

import numpy as np

from edge.errors import FrameError, TruncatedImage

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MAX_PIXELS = 40 * 1000 * 1000  # 40 MP decodes to 120 MB BGR: fits beside the models on a 4 GB Nano
MIN_SIDE_PX = 8
# No image file is larger than 8 bytes a pixel (16-bit RGBA, uncompressed) plus its metadata.
_BYTES_PER_PIXEL, _METADATA_BYTES = 8, 1 << 20

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # frame headers; C4/C8/CC are DHT/JPG/DAC
_JPEG_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}  # RSTn and TEM carry no length
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def display_name(path):
    """Printable text for a path (str or bytes): bytes that are not UTF-8 become \\xNN escapes."""
    path = os.fspath(path)
    if isinstance(path, str):
        try:
            raw = os.fsencode(path)
        except UnicodeEncodeError:  # characters the filesystem encoding lacks: not from a listing
            raw = path.encode("utf-8", "surrogateescape")
    else:
        raw = path
    return raw.decode("utf-8", "backslashreplace")


def has_image_extension(name, extensions=IMAGE_EXTENSIONS):
    return os.fsdecode(name).lower().endswith(tuple(extensions))


def image_names(folder, extensions=IMAGE_EXTENSIONS):
    """Sorted names in `folder` with an image extension, whatever they are (see `file_problem`)."""
    return sorted(n for n in os.listdir(folder) if has_image_extension(n, extensions))


def list_images(folder, recursive=False, extensions=IMAGE_EXTENSIONS):
    """Paths of the regular image files in `folder` (and below it when `recursive`).

    Names are sorted within each folder; a folder's files come before its
    subfolders' (os.walk order). Links to regular files count; links to
    folders are not followed. Entries that are not regular files are left out
    and logged once per call.
    """
    found, passed = [], []
    _collect(os.fspath(folder), recursive, tuple(e.lower() for e in extensions), found, passed)
    if passed:
        logger.warning("%s: left out %d entries that are not regular files: %s", display_name(folder),
                       len(passed), ", ".join(display_name(p) for p in passed[:5]))
    return found


def _collect(folder, recursive, extensions, found, passed):
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    subfolders = []
    for entry in entries:
        if recursive and entry.is_dir(follow_symlinks=False):
            subfolders.append(entry.path)
        elif has_image_extension(entry.name, extensions):
            (passed if file_problem(entry.path) else found).append(entry.path)  # follows links
    for sub in subfolders:
        _collect(sub, recursive, extensions, found, passed)


def file_problem(path):
    """'' when `path` is (or links to) a regular file, else what it is instead."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        return _stat_problem(path, e)
    if stat.S_ISREG(mode):
        return ""
    return "is %s, not a regular file" % next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


def _stat_problem(path, error):
    if error.errno == errno.ELOOP:
        return "is a symlink loop"
    if error.errno == errno.ENOENT and os.path.islink(path):
        return "is a dangling symlink (to %s)" % display_name(os.readlink(path))
    if error.errno == errno.ENOENT:
        return "does not exist"
    return "cannot be read: %s" % (error.strerror or error)


def frame_problem(image, min_side=MIN_SIDE_PX):
    """'' when `image` is a usable BGR uint8 frame, else the reason it is not: the one rule for frames."""
    if image is None:
        return "no image decoded"
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        return "image is not uint8 (got {})".format(getattr(image, "dtype", type(image).__name__))
    if image.ndim != 3 or image.shape[2] != 3:
        return "image shape {} is not (H, W, 3)".format(image.shape)
    if min(image.shape[:2]) < min_side:
        return "image is {}x{} pixels: too small (under the {} px minimum side)".format(
            image.shape[1], image.shape[0], min_side)
    return ""


def read_image(path, max_pixels=MAX_PIXELS, min_side=MIN_SIDE_PX):
    """BGR uint8 image of a file, or FrameError naming the file and the reason it is no usable frame."""
    name = display_name(path)
    data = read_bytes(path, _BYTES_PER_PIXEL * max_pixels + _METADATA_BYTES)
    return decode_image(data, name, max_pixels=max_pixels, min_side=min_side)


def read_bytes(path, max_bytes):
    """The bytes of a regular file of at most `max_bytes`; FrameError otherwise. Never blocks on a FIFO."""
    name = display_name(path)
    problem = file_problem(path)
    if problem:
        raise FrameError("image %s %s" % (name, problem))
    try:
        # O_NONBLOCK: if the file was swapped for a FIFO since the stat above, open and read still return.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as e:
        raise FrameError("image %s %s" % (name, _stat_problem(path, e))) from e
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise FrameError("image %s is not a regular file" % name)
        if st.st_size > max_bytes:
            raise FrameError("image %s is %d bytes, larger than any image under the pixel limit (%d bytes)"
                             % (name, st.st_size, max_bytes))
        try:
            data = f.read(max_bytes + 1)
        except OSError as e:
            raise FrameError("image %s cannot be read: %s" % (name, e.strerror or e)) from e
    if not data:
        raise FrameError("image %s is empty (0 bytes)" % name)
    if len(data) > max_bytes:
        raise FrameError("image %s grew past %d bytes while being read" % (name, max_bytes))
    return data


def decode_image(data, name="image", max_pixels=MAX_PIXELS, min_side=MIN_SIDE_PX):
    """Decode image file bytes to BGR uint8 after checking the header, size and end; FrameError naming `name`."""
    import cv2

    kind, width, height = image_header(data, name)
    if width * height > max_pixels:
        raise FrameError("image %s declares %dx%d pixels (%.1f MP), over the %.1f MP limit; raise max_pixels "
                         "to read it" % (name, width, height, width * height / 1e6, max_pixels / 1e6))
    if min(width, height) < min_side:
        raise FrameError("image %s is %dx%d pixels, under the %d px minimum side" % (name, width, height, min_side))
    truncated = _truncation(kind, data)
    if truncated:
        raise TruncatedImage("image %s is truncated: %s" % (name, truncated))
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise FrameError("image %s cannot be decoded (corrupt %s data)" % (name, kind))
    problem = frame_problem(image, min_side)
    if problem:
        raise FrameError("image %s: %s" % (name, problem))
    return image


def image_header(data, name="image"):
    """(format, width, height) from the first bytes of a PNG, JPEG, BMP, TIFF or WebP file; FrameError otherwise."""
    for magic, kind, parse in _FORMATS:
        if data.startswith(magic):
            try:
                width, height = parse(data)
            except (struct.error, IndexError, ValueError) as e:
                raise FrameError("image %s has a malformed %s header (%s)" % (name, kind, e)) from e
            if width <= 0 or height <= 0:
                raise FrameError("image %s declares %dx%d pixels" % (name, width, height))
            return kind, width, height
    raise FrameError("image %s is not a PNG, JPEG, BMP, TIFF or WebP file (starts with %r)" % (name, data[:8]))


def _png_size(data):
    if data[12:16] != b"IHDR":
        raise ValueError("first chunk is %r, not IHDR" % data[12:16])
    return struct.unpack(">II", data[16:24])


def _jpeg_size(data):
    """Width and height from the first SOFn segment; segments are skipped by length (so EXIF thumbnails are)."""
    i = 2
    while True:
        if data[i] != 0xFF:
            raise ValueError("no marker at byte %d" % i)
        while data[i] == 0xFF:  # fill bytes may precede a marker
            i += 1
        marker = data[i]
        if marker in _JPEG_STANDALONE:
            i += 1
            continue
        if marker in (0xD9, 0xDA):
            raise ValueError("no frame header (SOFn) before %s" % ("end of image" if marker == 0xD9 else "scan"))
        length = struct.unpack(">H", data[i + 1:i + 3])[0]
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", data[i + 4:i + 8])
            return width, height
        i += 1 + length


def _bmp_size(data):
    header_size = struct.unpack("<I", data[14:18])[0]
    if header_size == 12:  # OS/2 BITMAPCOREHEADER
        return struct.unpack("<HH", data[18:22])
    width, height = struct.unpack("<ii", data[18:26])
    return width, abs(height)  # negative height: rows stored top-down


def _tiff_size(data):
    order = "<" if data[:2] == b"II" else ">"
    offset = struct.unpack(order + "I", data[4:8])[0]
    count = struct.unpack(order + "H", data[offset:offset + 2])[0]
    size = {}
    for k in range(count):
        entry = data[offset + 2 + 12 * k:offset + 14 + 12 * k]
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT (3) or LONG (4)
            size[tag] = struct.unpack(order + ("H" if kind == 3 else "I"), entry[8:10] if kind == 3 else entry[8:12])[0]
    if len(size) < 2:
        raise ValueError("first IFD lacks ImageWidth/ImageLength")
    return size[256], size[257]


def _webp_size(data):
    if data[8:12] != b"WEBP":
        raise ValueError("RIFF file of type %r, not WEBP" % data[8:12])
    chunk = data[12:16]
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":
        bits = struct.unpack("<I", data[21:25])[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if len(data) < 30:
        raise ValueError("%d bytes, shorter than a WebP header" % len(data))
    if chunk == b"VP8X":
        return (int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1)
    raise ValueError("unknown WebP chunk %r" % chunk)


_FORMATS = ((_PNG_MAGIC, "PNG", _png_size), (b"\xff\xd8", "JPEG", _jpeg_size), (b"BM", "BMP", _bmp_size),
            (b"II*\x00", "TIFF", _tiff_size), (b"MM\x00*", "TIFF", _tiff_size), (b"RIFF", "WebP", _webp_size))


def _truncation(kind, data):
    """Why a file is truncated ('' when its end is where its format says); trailing zero padding is allowed."""
    if kind == "JPEG" and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        return "the JPEG does not end with its end-of-image marker (FFD9)"
    if kind == "PNG" and not data.rstrip(b"\x00").endswith(_PNG_END):
        return "the PNG does not end with its IEND chunk"
    if kind == "BMP":
        declared = struct.unpack("<I", data[2:6])[0]
        if declared and len(data) < declared:
            return "the BMP declares %d bytes, the file has %d" % (declared, len(data))
    if kind == "WebP":
        declared = 8 + struct.unpack("<I", data[4:8])[0]
        if len(data) < declared:
            return "the WebP declares %d bytes, the file has %d" % (declared, len(data))
    return ""


class opencv_path(object):
    """`with opencv_path(path) as name:` a name of the file that OpenCV's path functions can take.

    cv2.VideoCapture and cv2.imread crash (SIGSEGV) on a name that is not
    UTF-8, so such a file is opened here and passed as /proc/self/fd/N (Linux).
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self._fd = None

    def __enter__(self):
        path = os.fsdecode(self.path)
        try:
            path.encode("utf-8")
            return path
        except UnicodeEncodeError:
            pass
        if not os.path.isdir("/proc/self/fd"):
            raise FrameError("file %s has a name that is not UTF-8, which OpenCV cannot open here; rename it"
                             % display_name(path))
        self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        return "/proc/self/fd/%d" % self._fd

    def __exit__(self, exc_type, exc, tb):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        return False
