"""The committed aquarium bundle (benchmarks/results/aquarium/bundle) still loads, verifies and runs.

It is what a user runs the daemon on without retraining: a schema or loader change must not
strand it. Runs on both Pythons; running its models needs onnxruntime.
"""
import os

import numpy as np
import pytest

from edge.bundle import load_bundle

BUNDLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "results",
                      "aquarium", "bundle")


def _size(folder):
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(folder) for name in names)


def test_the_committed_bundle_verifies_and_fits_its_size():
    bundle = load_bundle(BUNDLE)  # checksums of every model against the manifest
    assert [m.name for m in bundle.models] == ["recall", "balanced", "precision"]
    assert bundle.names == ["fish", "jellyfish", "penguin", "puffin", "shark", "starfish", "stingray"]
    assert sorted(bundle.ids_in("critical")) == [1, 4, 6]
    assert bundle.default_profile == "ensemble_full"
    assert bundle.gate is not None and bundle.gate["passed"] and not bundle.gate["forced"]
    assert _size(BUNDLE) < 30 * 2 ** 20


def test_the_committed_bundle_runs_a_frame():
    pytest.importorskip("onnxruntime")
    from edge.pipeline import Pipeline

    frame = np.random.RandomState(0).randint(0, 256, (240, 320, 3)).astype(np.uint8)
    with Pipeline.open(BUNDLE, backend="onnxruntime") as pipeline:  # check=True runs each model once
        found = pipeline.detect(frame, profile="ensemble_full", all_scores=True)
    assert found.xyxy.shape[1] == 4 and len(found.score) == len(found.class_id)
