"""A simulated active-learning round on DeepFish: uncertainty-picked vs randomly picked images, same budget.

    python -m benchmarks.active_learning [--data /work/shared/data/deepfish] [--work out/active_learning]
        [--seed-images 150] [--pool 600] [--k 100] [--val-images 200] [--eval-videos 4]
        [--epochs 8] [--imgsz 160] [--strategy margin] [--aggregate sum] [--seed 0]

Videos (the number before the first '_' of a DeepFish file name) are split:
`--eval-videos` of them give the held-out evaluation set (from DeepFish's
val/ folder); the others give a seed set (drawn evenly across those videos)
and a disjoint unlabelled pool (from train/). A tiny YOLOv8n is trained on the
seed set, exported to ONNX and run over the pool by `active select`; K pool
images are picked by uncertainty and K at random. Their labels are revealed
and two models are trained on seed + picks, both starting from the seed
model's weights, for the same epochs with the same random seed. mAP50 on the
evaluation set is printed for the seed model and both picks, with the
difference, and written as JSON.

Nothing is copied from DeepFish: the work folder holds symlinks to its images
and copies of the (small) label files, so ultralytics' label caches land there.
"""
import argparse
import collections
import json
import os
import shutil
import sys
import time

import numpy as np

DEFAULT_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "deepfish")


def video_of(name):
    return name.split("_", 1)[0]


def list_split(data, split):
    folder = os.path.join(data, split, "images")
    if not os.path.isdir(folder):
        raise SystemExit("no %s under %s; pass --data DEEPFISH_FOLDER" % (folder, data))
    return sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.lower().endswith((".jpg", ".png")))


def even_sample(paths, count, rng):
    """count paths drawn round-robin over videos (each video's frames shuffled), so every video is seen."""
    by_video = collections.OrderedDict()
    for p in paths:
        by_video.setdefault(video_of(os.path.basename(p)), []).append(p)
    queues = [list(rng.permutation(v)) for v in by_video.values()]
    picked = []
    while len(picked) < count and any(queues):
        for q in queues:
            if q and len(picked) < count:
                picked.append(str(q.pop()))
    return picked


def plan_sets(data, args, rng):
    train, val = list_split(data, "train"), list_split(data, "val")
    videos = sorted({video_of(os.path.basename(p)) for p in train + val})
    eval_videos = sorted(str(v) for v in rng.choice(videos, size=args.eval_videos, replace=False))
    held_out = [p for p in val if video_of(os.path.basename(p)) in eval_videos]
    rest = [p for p in train if video_of(os.path.basename(p)) not in eval_videos]
    seed = even_sample(rest, args.seed_images, rng)
    chosen = set(seed)
    remaining = [p for p in rest if p not in chosen]
    pool = sorted(str(p) for p in rng.choice(remaining, size=min(args.pool, len(remaining)), replace=False))
    evaluation = sorted(str(p) for p in rng.choice(held_out, size=min(args.val_images, len(held_out)), replace=False))
    return {"eval_videos": eval_videos, "seed": sorted(seed), "pool": pool, "eval": evaluation}


def label_of(image_path):
    head, name = os.path.split(image_path)
    return os.path.join(os.path.dirname(head), "labels", os.path.splitext(name)[0] + ".txt")


def link_set(folder, images, with_labels=True):
    """folder/images/<name> symlinks (and folder/labels/<name>.txt copies); returns the image paths made."""
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    if with_labels:
        os.makedirs(os.path.join(folder, "labels"), exist_ok=True)
    made = []
    for src in images:
        name = os.path.basename(src)
        dst = os.path.join(folder, "images", name)
        if not os.path.lexists(dst):
            os.symlink(os.path.abspath(src), dst)
        if with_labels:
            label = label_of(src)
            target = os.path.join(folder, "labels", os.path.splitext(name)[0] + ".txt")
            if os.path.exists(label):
                shutil.copyfile(label, target)
            else:
                open(target, "w").close()   # no label file: a background
        made.append(dst)
    return made


def write_data(work, name, train_images, eval_images):
    lists = {}
    for split, images in (("train", train_images), ("val", eval_images)):
        lists[split] = os.path.join(work, "%s_%s.txt" % (name, split))
        with open(lists[split], "w") as f:
            f.write("".join(os.path.abspath(p) + "\n" for p in images))
    path = os.path.join(work, "%s.yaml" % name)
    with open(path, "w") as f:
        f.write("path: %s\ntrain: %s\nval: %s\nnames: [fish]\n" % (work, lists["train"], lists["val"]))
    return path


def train(data, args, work, name, start=None):
    from trainer.yolo import train_args, yolo

    extra = {"pretrained": start} if start else {}
    model = yolo(args.model)
    t0 = time.perf_counter()
    model.train(**train_args(data=data, epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, workers=args.workers,
                             device="cpu", seed=args.seed, deterministic=True, project=os.path.join(work, "runs"),
                             name=name, val=False, patience=0, **extra))
    weights = os.path.join(work, "runs", name, "weights")
    best = os.path.join(weights, "best.pt")
    return (best if os.path.exists(best) else os.path.join(weights, "last.pt")), time.perf_counter() - t0


def evaluate(weights, data, args, work, name):
    from trainer.yolo import yolo

    metrics = yolo(weights).val(data=data, split="val", imgsz=args.imgsz, batch=args.batch, device="cpu",
                                workers=args.workers, plots=False, verbose=False, project=os.path.join(work, "runs"),
                                name=name, exist_ok=True)
    return {"map50": float(metrics.box.map50), "map50_95": float(metrics.box.map)}


def label_stats(images):
    boxes = [sum(1 for line in open(label_of(p)) if line.strip()) if os.path.exists(label_of(p)) else 0
             for p in images]
    return {"images": len(images), "boxes": int(sum(boxes)), "backgrounds": int(sum(b == 0 for b in boxes))}


def pick_uncertain(seed_weights, pool_dir, args, work):
    from trainer.active.select import SelectOptions, run_select
    from trainer.export import export_onnx

    onnx_path = export_onnx(seed_weights, os.path.join(work, "seed.onnx"), args.imgsz)
    options = SelectOptions(k=args.k, strategy=args.strategy, aggregate=args.aggregate, imgsz=args.imgsz,
                            conf=args.conf)
    t0 = time.perf_counter()
    summary = run_select(onnx_path, pool_dir, os.path.join(work, "package.zip"), options)
    picked = summary["manifest"]["images"]
    stats = {"pool": summary["manifest"]["pool_uncertainty"],
             "picked_nonzero": sum(e["uncertainty"] > 0 for e in picked), "picked_drafts": summary["drafts"]}
    return [e["file_name"] for e in picked], stats, time.perf_counter() - t0


def run(args):
    rng = np.random.default_rng(args.seed)
    work = os.path.abspath(args.work)
    if os.path.exists(work) and os.listdir(work):
        raise SystemExit("work folder %s is not empty; remove it or pass another --work" % work)
    os.makedirs(work, exist_ok=True)
    os.environ.setdefault("YOLO_CONFIG_DIR", os.path.join(work, "yolo_config"))
    sets = plan_sets(args.data, args, rng)
    seed_images = link_set(os.path.join(work, "seed"), sets["seed"])
    eval_images = link_set(os.path.join(work, "eval"), sets["eval"])
    pool_dir = os.path.join(work, "pool")
    link_set(pool_dir, sets["pool"], with_labels=False)   # labels hidden until picked
    source_of = {os.path.basename(p): p for p in sets["pool"]}

    t_start = time.perf_counter()
    seed_weights, t_seed = train(write_data(work, "seed", seed_images, eval_images), args, work, "seed")
    picks = {}
    names, uncertainty, t_select = pick_uncertain(seed_weights, os.path.join(pool_dir, "images"), args, work)
    picks["uncertainty"] = [source_of[os.path.basename(n)] for n in names]
    # Same budget at random; if dedup left fewer than K, random gets the same smaller number.
    picks["random"] = sorted(str(p) for p in rng.choice(sets["pool"], size=len(names), replace=False))
    results = {"seed": {"train_s": round(t_seed, 1), **label_stats(sets["seed"]),
                        **evaluate(seed_weights, os.path.join(work, "seed.yaml"), args, work, "val_seed")}}
    for how, chosen in picks.items():
        images = seed_images + link_set(os.path.join(work, how), chosen)
        weights, t_train = train(write_data(work, how, images, eval_images), args, work, how, start=seed_weights)
        results[how] = {"train_s": round(t_train, 1), "picked": label_stats(chosen),
                        **evaluate(weights, os.path.join(work, "%s.yaml" % how), args, work, "val_" + how)}
    return {"settings": {k: v for k, v in vars(args).items()}, "eval_videos": sets["eval_videos"],
            "sizes": {k: len(sets[k]) for k in ("seed", "pool", "eval")}, "k": len(names),
            "select_s": round(t_select, 1), "uncertainty": uncertainty, "results": results,
            "map50_difference": results["uncertainty"]["map50"] - results["random"]["map50"],
            "total_s": round(time.perf_counter() - t_start, 1)}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=DEFAULT_DATA, help="DeepFish in YOLO format (train/, val/)")
    p.add_argument("--work", default="out/active_learning", help="scratch folder (must be empty or new)")
    p.add_argument("--json", help="result file (default WORK/active_learning.json)")
    p.add_argument("--seed-images", type=int, default=150)
    p.add_argument("--pool", type=int, default=600)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--val-images", type=int, default=200)
    p.add_argument("--eval-videos", type=int, default=4)
    p.add_argument("--epochs", type=int, default=12, help="for the seed model and for each retraining")
    p.add_argument("--imgsz", type=int, default=192)
    p.add_argument("--conf", type=float, default=0.05, help="detection threshold while scoring the pool")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--model", default="yolov8n.yaml")
    p.add_argument("--strategy", default="margin")
    p.add_argument("--aggregate", default="sum")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    result = run(args)
    path = args.json or os.path.join(args.work, "active_learning.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    r = result["results"]
    print("seed only (%d images)      mAP50 %.4f" % (result["sizes"]["seed"], r["seed"]["map50"]))
    print("seed + %d by %s/%s  mAP50 %.4f" % (result["k"], args.strategy, args.aggregate, r["uncertainty"]["map50"]))
    print("seed + %d at random        mAP50 %.4f" % (result["k"], r["random"]["map50"]))
    pool = result["uncertainty"]["pool"]
    if pool["min"] == pool["max"]:
        print("note: every pool image scored %.4g: the seed model is untrained, so the 'uncertain' pick is in "
              "name order; use more --epochs" % pool["max"])
    elif result["uncertainty"]["picked_nonzero"] < result["k"]:
        print("note: %d of %d picks had zero uncertainty (the seed model found nothing above --conf %g there); "
              "those were taken in name order: train the seed model longer or lower --conf"
              % (result["k"] - result["uncertainty"]["picked_nonzero"], result["k"], args.conf))
    print("difference (uncertainty - random): %+.4f   (%.0f s in all; wrote %s)"
          % (result["map50_difference"], result["total_s"], path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
