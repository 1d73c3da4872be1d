"""Small shared pieces of the benchmark scripts: timing statistics, image lists, report writing."""
import json
import os
import platform
import statistics

from edge.detect import IMAGE_EXTENSIONS, read_image
from edge.errors import SourceError


def median_ms(seconds):
    return 1000.0 * statistics.median(seconds)


def load_images(folder, limit=None):
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise SourceError("no images (%s) in %s" % (", ".join(IMAGE_EXTENSIONS), folder))
    return [read_image(os.path.join(folder, n)) for n in names[:limit]]


def machine_facts():
    return {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "cpus": os.cpu_count()}


def write_json(path, payload):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
