import os
import tempfile

# ultralytics reads these at first import: keep it offline and out of $HOME.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="reefwatch-yolo-config-"))
os.environ.setdefault("MPLBACKEND", "Agg")

SHARED_DATA = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
