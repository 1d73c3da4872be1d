"""edge.atomic_file: a reader sees the old file or the whole new one, never a part; an error leaves no .tmp."""
import os

import pytest

from edge.atomic_file import TMP_SUFFIX, atomic_output, write_atomically


def test_text_and_bytes_replace_the_file_whole(tmp_path):
    path = str(tmp_path / "manifest.json")
    write_atomically(path, "caf\u00e9\n")
    with open(path, "rb") as fh:
        assert fh.read() == "caf\u00e9\n".encode("utf-8")   # text is UTF-8 whatever the locale
    write_atomically(path, b"\x00\xff", fsync=True)
    with open(path, "rb") as fh:
        assert fh.read() == b"\x00\xff"
    assert os.listdir(str(tmp_path)) == ["manifest.json"]


def test_an_error_while_writing_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = str(tmp_path / "state.json")
    write_atomically(path, "old")
    with pytest.raises(ValueError, match="half-way"):
        with atomic_output(path) as fh:
            fh.write("new, half")
            raise ValueError("half-way")
    with open(path) as fh:
        assert fh.read() == "old"
    assert not os.path.exists(path + TMP_SUFFIX)


def test_a_missing_folder_is_an_oserror_naming_nothing_written(tmp_path):
    path = str(tmp_path / "absent" / "crop.jpg")
    with pytest.raises(OSError):
        write_atomically(path, b"jpeg")
    assert not os.path.exists(str(tmp_path / "absent"))
