"""Small real YOLO models for tests: built from yaml, no download, exported to ONNX."""
import glob
import os

import numpy as np


def yolo_yaml_with_classes(folder, nc, scale="n"):
    """A copy of ultralytics' yolov8.yaml with nc classes; the file name carries the scale."""
    import yaml
    from trainer.yolo import ultralytics_module

    root = os.path.dirname(ultralytics_module().__file__)
    (src,) = glob.glob(os.path.join(root, "cfg", "models", "v8", "yolov8.yaml"))
    with open(src) as f:
        cfg = yaml.safe_load(f)
    cfg["nc"] = nc
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "yolov8%s.yaml" % scale)
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return path


def random_detector_onnx(folder, nc, imgsz, seed=0, batch=1, dynamic=False):
    """A YOLOv8n whose class head is randomized so scores spread over 0..1 and depend on the image.

    An untrained head outputs the same tiny prior score everywhere, which would make
    decoding and NMS comparisons vacuous.
    """
    import torch
    from trainer.export import export_onnx
    from trainer.yolo import yolo

    torch.manual_seed(seed)
    model = yolo(yolo_yaml_with_classes(folder, nc))
    network = model.model
    with torch.no_grad():
        # Fresh BatchNorm statistics make features vanish; a few training-mode passes
        # over smooth random images give the layers unit-scale activations.
        norms = [m for m in network.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # a plain average over the passes below
        network.train()
        for _ in range(3):
            network(torch.nn.functional.avg_pool2d(torch.rand(4, 3, imgsz, imgsz), 9, 1, 4))
        network.eval()
        for norm in norms:
            norm.momentum = 0.03
        for branch in network.model[-1].cv3:
            last = branch[-1]
            last.weight.normal_(0.0, 0.004)
            last.bias.copy_(torch.randn_like(last.bias) - 2.5)
    cwd = os.getcwd()
    os.chdir(folder)  # ultralytics writes the export into the working directory
    try:
        return export_onnx(model, os.path.join(folder, "yolov8n-%dcls-%d.onnx" % (nc, seed)), imgsz,
                           batch=batch, dynamic=dynamic)
    finally:
        os.chdir(cwd)


def write_data_yaml(path, nc, categories=None):
    import yaml

    data = {"names": ["species_%d" % i for i in range(nc)],
            "categories": categories or {i: ("critical", "important", "general")[i % 3] for i in range(nc)}}
    with open(path, "w") as f:
        yaml.safe_dump(data, f)
    return path


def random_frames(folder, count, seed=0, sizes=((240, 320), (300, 200), (160, 160))):
    import cv2

    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(count):
        h, w = sizes[i % len(sizes)]
        image = cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), (0, 0), 3)
        paths.append(os.path.join(folder, "frame_%03d.jpg" % i))
        cv2.imwrite(paths[-1], image)
    return paths
