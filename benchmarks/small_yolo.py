"""Training and scoring the small YOLOs of the trainer experiments, the same way for every arm.

Short CPU runs from scratch need more optimizer steps than ultralytics' defaults give:
with nbs 64 a batch of 8 accumulates 8 batches per step (five steps per epoch of 300
images). So each run steps every batch (nbs = batch), uses AdamW at lr0 (what
ultralytics' "auto" picks for short runs, fixed here so every arm gets the same) and a
one-epoch warmup. Every epoch is scored on the evaluation frames; the figure of a run
is the mean mAP50 of its last `tail` epochs, with their spread as the noise of one run
(the last epoch alone swings by a factor of two at this scale). The scored weights are
last.pt: best.pt is chosen on the evaluation frames and would flatter the run.
"""
import csv
import os
import time

import numpy as np

MAP50_COLUMN = "metrics/mAP50(B)"


def add_training_arguments(parser, epochs, imgsz=160):
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--imgsz", type=int, default=imgsz, help="training size; frames are stored at this size")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr0", type=float, default=0.002)
    parser.add_argument("--tail", type=int, default=5, help="epochs averaged into a run's mAP50")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", default="yolov8n.yaml")
    parser.add_argument("--seed", type=int, default=0)


def new_work_folder(path):
    """The absolute path of an empty (or new) work folder, which also holds ultralytics' settings."""
    work = os.path.abspath(path)
    if os.path.exists(work) and os.listdir(work):
        raise SystemExit("work folder %s is not empty; remove it or pass another --work" % work)
    os.makedirs(work, exist_ok=True)
    os.environ.setdefault("YOLO_CONFIG_DIR", os.path.join(work, "yolo_config"))
    return work


def train(data, args, work, name, start=None, epochs=None, warmup_epochs=1):
    """(weights/last.pt, seconds, per-epoch mAP50 list) of one run on `data`, from `start` weights if given.
    A run that continues a trained model still starts a fresh AdamW at lr0, and its first epoch loses most of
    the model's mAP50 (measured on DeepFish: 0.048 -> 0.005 with the one-epoch warmup, 0.021 -> 0.001 with
    warmup_epochs=0), which later epochs win back; arms compared with each other pay it alike. A lower lr0
    for continued runs is the next thing to try."""
    from trainer.yolo import train_args, yolo

    extra = {"pretrained": start} if start else {}
    model = yolo(args.model)
    t0 = time.perf_counter()
    model.train(**train_args(data=data, epochs=epochs or args.epochs, imgsz=args.imgsz, batch=args.batch,
                             nbs=args.batch, optimizer="AdamW", lr0=args.lr0,
                             warmup_epochs=warmup_epochs, close_mosaic=0,
                             workers=args.workers, device="cpu", seed=args.seed, deterministic=True,
                             project=os.path.join(work, "runs"), name=name, val=True, patience=0, **extra))
    run_dir = os.path.join(work, "runs", name)
    return os.path.join(run_dir, "weights", "last.pt"), time.perf_counter() - t0, read_map50(run_dir)


def read_map50(run_dir):
    with open(os.path.join(run_dir, "results.csv")) as f:
        return [float(row[MAP50_COLUMN]) for row in csv.DictReader(f, skipinitialspace=True)]


def summarize(curve, tail):
    """The run's figure: mean, sd, min and max of the last `tail` epochs' mAP50, and the last epoch's."""
    last = np.asarray(curve[-tail:], dtype=float)
    return {"map50": round(float(last.mean()), 4), "map50_sd": round(float(last.std(ddof=1)) if last.size > 1
                                                                     else 0.0, 4),
            "map50_range": [round(float(last.min()), 4), round(float(last.max()), 4)],
            "map50_last_epoch": round(float(curve[-1]), 4), "tail_epochs": int(last.size),
            "curve": [round(float(v), 4) for v in curve]}


def plot_curves(path, curves, title):
    """mAP50 per epoch, one line per arm, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (curve, offset) in curves.items():
        ax.plot(np.arange(1, len(curve) + 1) + offset, curve, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mAP50 on the evaluation frames")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
