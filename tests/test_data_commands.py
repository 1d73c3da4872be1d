import argparse
import io
import os
import shutil

import cv2
import numpy as np
import pytest

from trainer.data.commands import add_data_parser, run_data
from trainer.errors import DataError

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "data")


def parse(argv):
    parser = argparse.ArgumentParser(prog="reefwatch-train")
    add_data_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def run(argv):
    stream = io.StringIO()
    return run_data(parse(argv), stream=stream), stream.getvalue()


def test_import_validate_split_commands(tmp_path):
    src = tmp_path / "voc"
    shutil.copytree(os.path.join(FIXTURES, "voc"), src)
    for i in (1, 2):
        img = np.random.default_rng(i).integers(0, 255, (48, 64, 3), dtype=np.uint8)
        os.makedirs(src / "JPEGImages", exist_ok=True)
        cv2.imwrite(str(src / "JPEGImages" / ("reef_000%d.jpg" % i)), img)
    ds = str(tmp_path / "ds")
    rc, text = run(["data", "import", "--format", "voc", "--src", str(src), "--out", ds])
    assert rc == 0 and "imported: 1" in text and "diver=1" in text
    assert os.path.exists(os.path.join(ds, "reports", "import_voc.md"))
    rc, text = run(["data", "validate", ds, "--report", str(tmp_path / "rep")])
    assert rc == 0 and "images: 1" in text and os.path.exists(tmp_path / "rep" / "validation_classes.png")
    rc, text = run(["data", "split", ds, "--out", ds, "--ratios", "0.7", "0.15", "0.15", "--seed", "3"])
    assert rc == 0 and "split images: train=1, val=0, test=0" in text


def test_validate_returns_1_on_bad_records(tmp_path):
    ds = tmp_path / "ds"
    (ds / "images").mkdir(parents=True)
    (ds / "images" / "x.jpg").write_bytes(b"junk")
    rc, text = run(["data", "validate", str(ds)])
    assert rc == 1 and "bad: 1" in text


def test_errors_reach_the_caller(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        run(["data", "validate", str(tmp_path / "none")])


def test_format_choices_are_enforced():
    with pytest.raises(SystemExit):
        parse(["data", "import", "--format", "kitti", "--src", "x", "--out", "y"])
