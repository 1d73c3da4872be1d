"""Opt-in: import, validate and split the real sets in ../shared/data (skipped when absent).

Run with `pytest -m shared_data -s tests/test_data_shared.py` to see the figures.
"""
import os

import pytest

from tests.conftest import SHARED_DATA
from trainer.data import importers, split, validate
from trainer.data.taxonomy import load_taxonomy

pytestmark = pytest.mark.shared_data

SETS = [("aquarium", "yolo", "aquarium"), ("deepfish", "deepfish-yolo", None)]


@pytest.mark.parametrize("folder, fmt, source", SETS)
def test_shared_set_imports_validates_and_splits(tmp_path, folder, fmt, source):
    src = os.path.join(SHARED_DATA, folder)
    if not os.path.isdir(src):
        pytest.skip("%s is absent" % src)
    tax = load_taxonomy()
    out = str(tmp_path / folder)
    rep = importers.import_dataset(fmt, src, out, tax, source=source)
    val = validate.validate_dataset(out, tax, check_images=False)  # the import already decoded and hashed each
    spl = split.split_dataset(out, str(tmp_path / (folder + "_split")), tax, seed=0)
    videos = {s: {split.default_group_key(p) for p in open(os.path.join(spl.out, s + ".txt")).read().split()}
              for s in split.SPLITS}
    shared_videos = (videos["train"] & videos["val"]) | (videos["train"] & videos["test"]) | (videos["val"] & videos["test"])
    print("\n%s: items=%d imported=%d boxes=%d backgrounds=%d clipped=%d unmapped=%s quarantined=%d "
          "duplicates=%d missing=%d" % (folder, rep.items, rep.imported, rep.boxes, rep.backgrounds,
                                        rep.clipped_boxes, rep.unmapped, len(rep.quarantined),
                                        len(rep.duplicates), len(rep.missing_images)))
    print("%s: validation images=%d bad=%d duplicates=%d clipped=%d categories=%s"
          % (folder, val.images, len(val.bad), len(val.duplicates), val.clipped_boxes, val.category_counts))
    print("%s: split groups=%d images=%s group_counts=%s categories=%s straddling=%d videos_shared=%d"
          % (folder, spl.groups, spl.images, spl.group_counts, spl.categories, len(spl.straddling_groups),
             len(shared_videos)))
    assert rep.unmapped == {}
    assert rep.imported + len(rep.quarantined) == rep.items
    assert val.images == rep.imported and not val.bad
    assert spl.straddling_groups == [] and not shared_videos
    total = sum(spl.images.values())
    for s, r in zip(split.SPLITS, (0.7, 0.15, 0.15)):
        assert abs(spl.images[s] / total - r) < 0.05
