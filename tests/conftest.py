import os
import tempfile

# ultralytics reads these at first import: keep it offline and out of $HOME.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="reefwatch-yolo-config-"))
os.environ.setdefault("MPLBACKEND", "Agg")

SHARED_DATA = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))

import sys

if sys.version_info < (3, 8):
    _TRAINER_MARKERS = ("from trainer", "import trainer", "tests.yolo_models", "tests import yolo_models")

    def pytest_ignore_collect(path, config):
        """On the Jetson's Python (3.6) only the edge runtime's tests run: the trainer needs a current Python."""
        if not (path.basename.startswith("test_") and path.basename.endswith(".py")):
            return None
        source = path.read_text("utf-8")
        return True if any(marker in source for marker in _TRAINER_MARKERS) else None
