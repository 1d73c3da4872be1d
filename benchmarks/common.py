"""Small shared pieces of the benchmark scripts: timing statistics, image lists, report writing."""
import json
import os
import platform
import statistics

from edge.errors import SourceError
from edge.images import IMAGE_EXTENSIONS, list_images, read_image


def median_ms(seconds):
    return 1000.0 * statistics.median(seconds)


def load_images(folder, limit=None):
    """The first `limit` images of a folder in name order, decoded by edge.images.read_image."""
    paths = list_images(folder)
    if not paths:
        raise SourceError("no images (%s) in %s" % (", ".join(IMAGE_EXTENSIONS), folder))
    return [read_image(path) for path in paths[:limit]]


def machine_facts():
    return {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "cpus": os.cpu_count()}


def write_json(path, payload):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
