"""Dockerfile.l4t cannot be built here (arm64, JetPack base image): check its structure instead."""
import json
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NANO_BASES = ("nvcr.io/nvidia/l4t-ml:r32.7.1-py3", "nvcr.io/nvidia/l4t-tensorrt:r8.2.1-runtime")


@pytest.fixture(scope="module")
def dockerfile():
    with open(os.path.join(ROOT, "Dockerfile.l4t")) as f:
        text = f.read()
    instructions = []
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def _all(instructions, keyword):
    return [rest for k, rest in instructions if k == keyword]


def test_base_image_is_jetpack_46(dockerfile):
    assert _all(dockerfile, "FROM") and _all(dockerfile, "FROM")[0] in NANO_BASES


def test_installs_pycuda_for_python36(dockerfile):
    runs = " ".join(_all(dockerfile, "RUN"))
    assert "pycuda==2021.1" in runs and "python3 -m pip" in runs


def test_copies_the_edge_runtime_and_its_config_only(dockerfile):
    sources = [rest.split()[0] for rest in _all(dockerfile, "COPY")]
    assert "edge" in sources and "packaging/edge.json" in sources
    assert not any(s.startswith("trainer") for s in sources)
    for source in sources:
        assert os.path.exists(os.path.join(ROOT, source)), source


def test_entry_point_runs_the_daemon(dockerfile):
    entry = json.loads(_all(dockerfile, "ENTRYPOINT")[-1])
    command = json.loads(_all(dockerfile, "CMD")[-1])
    assert entry == ["python3", "-m", "edge"] and command[0] == "serve"
    config = command[command.index("--config") + 1]
    assert any(config in rest for rest in _all(dockerfile, "COPY"))
