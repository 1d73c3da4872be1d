"""Write a file so that no reader sees half of it: a temporary file beside it, then one rename.

The temporary file is `<path>.tmp` in the same folder (a rename across file systems is not
atomic), made with the process's umask like any other file, so a bundle or crop written this
way keeps the permissions a plain open() would give it. A crash between write and rename
leaves only the `.tmp` file; the crop store sweeps those on start. Standard library only:
edge runs on the Nano's Python 3.6 and the trainer imports it too.
"""
import contextlib
import os

TMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_output(path, mode="w", fsync=False):
    """Yield a file open on `path`.tmp; on a clean exit it replaces `path`, on any error it is removed and `path`
    stays as it was. Text modes are UTF-8. fsync: flush to the disk before the rename (a power cut keeps the old
    file or the whole new one, not an empty one)."""
    path = str(path)
    tmp = path + TMP_SUFFIX
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise


def write_atomically(path, data, fsync=False):
    """Write bytes or text to `path` through `atomic_output`."""
    with atomic_output(path, "wb" if isinstance(data, (bytes, bytearray, memoryview)) else "w", fsync) as fh:
        fh.write(data)


def _remove_quietly(tmp):
    try:
        os.remove(tmp)
    except OSError:   # never made, or its folder went: the error being raised is the one that matters
        pass
