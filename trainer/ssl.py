"""MoCo v3 self-supervised pretraining of the YOLO backbone on unlabelled reef imagery.

The base encoder is the chain of backbone layers (YOLOv8: 0-9, ending in SPPF), a
global average pool and a projector MLP; a predictor MLP follows it; the momentum
encoder is a copy of backbone + projector updated by EMA with m rising from
momentum_base to 1 on a cosine over all iterations. The loss is MoCo v3's symmetrized
contrastive loss. One device or the CPU runs it as is; under torchrun (WORLD_SIZE > 1)
it joins a process group, shards the images and gathers keys across ranks.

Writes under `out_dir` (rank 0 only): ssl_config.json, ssl_log.csv (one row per epoch:
loss, lr, momentum, seconds), checkpoints/ssl_epochNNNN.pt (base encoder, predictor,
momentum encoder, optimizer, epoch, iteration, config; newest `keep_last` kept; a rerun
resumes from the newest), backbone.pt (for `YOLO(yaml).train(pretrained=...)`, see
trainer.backbone) and backbone_transfer.json (matched and missing keys).

Attributes read from `config` (any object, e.g. a SimpleNamespace):
    model            model yaml whose backbone is pretrained, e.g. "yolov8m.yaml"
    epochs, batch_size (total over all ranks), imgsz, crop_min_scale
    lr               base learning rate per 256 images (scaled by batch_size / 256)
    temperature      contrastive temperature (1.0 for conv backbones)
    momentum_base    m0 of the momentum schedule (0.99)
    proj_hidden_dim, proj_dim, pred_hidden_dim
    checkpoint_every (epochs), keep_last (checkpoints kept)
  optional, with defaults: weight_decay (0.1), warmup_epochs (epochs // 10, at most 10),
    optimizer ("adamw", "lars" or "sgd"; "adamw", which suits the configured lr 1.5e-4 and
    weight_decay 0.1; MoCo v3's ResNet recipe is lars with lr 0.6, weight_decay 1e-6),
    image_budget (None; else images seen in all: the epochs shrink to budget // images, see fit_image_budget)
Attributes read from `general`: device ("cpu", "0", "cuda:0", "mps"; "" or None = first GPU
if any; under torchrun each rank takes GPU LOCAL_RANK), num_workers, seed.
"""
import csv
import dataclasses
import glob
import json
import logging
import os
import re
import time

from trainer import backbone as backbone_io
from trainer.errors import ConfigError, DataError, TrainerError
from trainer.ssl_augment import UnlabelledImages, list_images, photometric
from trainer.ssl_model import (OPTIMIZERS, build_moco, concat_all_gather, lr_at, make_optimizer, momentum_at,
                               set_lr, unwrap)

logger = logging.getLogger(__name__)
CHECKPOINT_RE = re.compile(r"ssl_epoch(\d+)\.pt$")

__all__ = ["SSLResult", "run_ssl", "checkpoints_to_delete", "newest_checkpoint", "concat_all_gather"]


@dataclasses.dataclass(frozen=True)
class SSLResult:
    out_dir: str
    backbone_path: str
    transfer_report_path: str
    log_path: str
    checkpoint_path: str | None
    epochs_done: int
    iterations: int
    last_loss: float | None


@dataclasses.dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def main(self):
        return self.rank == 0


def run_ssl(config, general, images, out_dir, resume=True):
    """Pretrain, checkpoint every `checkpoint_every` epochs, save backbone.pt and its transfer report."""
    import torch

    _validate(config)
    config = fit_image_budget(config, len(list_images(images)))
    dist = _init_distributed(general)
    try:
        run = _prepare(config, general, images, out_dir, dist, resume)
        iteration, last_loss, last_ckpt = run.start_iteration, None, run.resumed_from
        for epoch in range(run.start_epoch, int(config.epochs)):
            run.dataset.set_epoch(epoch)
            if run.sampler is not None:
                run.sampler.set_epoch(epoch)
            else:
                run.loader.generator.manual_seed(run.seed * 1000003 + epoch)
            photo_gen = torch.Generator().manual_seed(run.seed * 1000003 + epoch * 1009 + dist.rank)
            t0 = time.monotonic()
            last_loss, iteration = _train_epoch(run.model, run.optimizer, run.loader, epoch, iteration, run.sched,
                                                run.device, photo_gen, dist)
            if dist.main:
                last_ckpt = _end_epoch(run, config, general, epoch, iteration, last_loss, t0) or last_ckpt
        result = _export(config, run.model, out_dir, last_ckpt, run.log_path, iteration, last_loss, dist)
        if dist.world > 1:
            torch.distributed.barrier()
        return result
    finally:
        if dist.initialised_here:
            import torch.distributed as tdist

            tdist.destroy_process_group()


def fit_image_budget(config, image_count):
    """The config with its epochs cut to `image_budget // image_count` (at least 1) when the budget is set.

    A schedule sized on a few hundred images keeps its cost on a data set ten times the size, and MoCo v3
    sees every image of it: more images at fewer epochs, the same number of steps.
    """
    budget = getattr(config, "image_budget", None)
    if budget is None:
        return config
    epochs = max(1, min(int(config.epochs), int(budget) // max(1, int(image_count))))
    if epochs == int(config.epochs):
        return config
    logger.info("ssl.image_budget %d over %d images: %d epochs instead of %d", budget, image_count, epochs,
                config.epochs)
    if dataclasses.is_dataclass(config):
        return dataclasses.replace(config, epochs=epochs)
    return type(config)(**dict(vars(config), epochs=epochs))


@dataclasses.dataclass
class _Run:
    model: object
    optimizer: object
    loader: object
    dataset: object
    sampler: object
    device: object
    seed: int
    sched: dict
    ckpt_dir: str
    log_path: str
    start_epoch: int = 0
    start_iteration: int = 0
    resumed_from: str | None = None


def _prepare(config, general, images, out_dir, dist, resume):
    """Data, model, optimizer and schedule; the state of the newest checkpoint when resuming."""
    import torch

    device = _resolve_device(getattr(general, "device", None), dist)
    seed = int(getattr(general, "seed", 0))
    ckpt_dir = os.path.join(out_dir, "checkpoints")
    loader, dataset, sampler = _make_loader(config, general, images, dist, seed)  # checks the images first
    if dist.main:
        os.makedirs(ckpt_dir, exist_ok=True)
        _write_json(os.path.join(out_dir, "ssl_config.json"),
                    {"config": _plain(config), "general": _plain(general), "images": str(images)})
    with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the caller's RNG
        torch.manual_seed(seed)
        model, _ = build_moco(config, device)
    if dist.world > 1:
        model = _wrap_ddp(model, device)
    optimizer = make_optimizer(getattr(config, "optimizer", "adamw"), unwrap(model),
                               float(getattr(config, "weight_decay", 0.1)))
    epochs = int(config.epochs)
    sched = {"lr": float(config.lr) * int(config.batch_size) / 256.0, "epochs": epochs,
             "warmup": float(getattr(config, "warmup_epochs", min(10, epochs // 10))),
             "per_epoch": len(loader), "total": epochs * len(loader), "m0": float(config.momentum_base)}
    run = _Run(model, optimizer, loader, dataset, sampler, device, seed, sched, ckpt_dir,
               os.path.join(out_dir, "ssl_log.csv"))
    newest = newest_checkpoint(ckpt_dir) if resume else None
    if newest:
        run.start_epoch, run.start_iteration = _load_checkpoint(newest, model, optimizer, device)
        run.resumed_from = newest
        logger.info("resuming SSL from %s (epoch %d, iteration %d)", newest, run.start_epoch, run.start_iteration)
    return run


def _end_epoch(run, config, general, epoch, iteration, loss, t0):
    """Rank 0: log the epoch; checkpoint and prune when due. Returns the new checkpoint or None."""
    sched = run.sched
    _append_log(run.log_path, {"epoch": epoch + 1, "iteration": iteration, "loss": loss,
                               "lr": lr_at(epoch + 1, sched["lr"], sched["warmup"], sched["epochs"]),
                               "momentum": momentum_at(iteration, sched["total"], sched["m0"]),
                               "epoch_s": round(time.monotonic() - t0, 3)})
    if (epoch + 1) % int(config.checkpoint_every) and epoch + 1 != sched["epochs"]:
        return None
    path = _save_checkpoint(run.ckpt_dir, run.model, run.optimizer, epoch + 1, iteration, config, general)
    for old in checkpoints_to_delete(os.listdir(run.ckpt_dir), int(config.keep_last)):
        os.remove(os.path.join(run.ckpt_dir, old))
    return path


def _train_epoch(model, optimizer, loader, epoch, iteration, sched, device, photo_gen, dist):
    """One explicit pass over the loader; returns (mean loss over ranks, iteration)."""
    import torch
    from tqdm import tqdm

    model.train()
    total_loss, count = torch.zeros((), device=device), 0
    bar = tqdm(loader, desc="ssl epoch %d/%d" % (epoch + 1, sched["epochs"]), disable=not dist.main,
               leave=False, dynamic_ncols=True)
    for i, (v1, v2) in enumerate(bar):
        set_lr(optimizer, lr_at(epoch + i / sched["per_epoch"], sched["lr"], sched["warmup"], sched["epochs"]))
        m = momentum_at(iteration, sched["total"], sched["m0"])
        x1 = photometric(v1.to(device, non_blocking=True), 0, photo_gen)
        x2 = photometric(v2.to(device, non_blocking=True), 1, photo_gen)
        loss = model(x1, x2, m)
        if not torch.isfinite(loss):
            raise TrainerError("SSL loss is %s at epoch %d iteration %d; lower lr (now %g) or check the images"
                               % (loss.item(), epoch + 1, iteration, optimizer.param_groups[0]["lr"]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        iteration += 1
        total_loss += loss.detach()
        count += 1
        bar.set_postfix(loss="%.4f" % loss.item(), m="%.4f" % m)
    if dist.world > 1:
        torch.distributed.all_reduce(total_loss)
        total_loss /= dist.world
    return float(total_loss.item() / max(count, 1)), iteration


def _export(config, model, out_dir, last_ckpt, log_path, iteration, last_loss, dist):
    """Rank 0 writes backbone.pt (the base encoder's backbone) and its transfer report."""
    backbone_path = os.path.join(out_dir, "backbone.pt")
    report_path = os.path.join(out_dir, "backbone_transfer.json")
    epochs_done = _epochs_in(last_ckpt) if last_ckpt else 0
    if dist.main:
        state = unwrap(model).base.backbone.model.state_dict()
        backbone_io.save_backbone(state, config.model, backbone_path,
                                  meta={"method": "moco-v3", "epochs": epochs_done, "iterations": iteration,
                                        "imgsz": int(config.imgsz), "loss": last_loss})
        report = backbone_io.transfer_report(backbone_path, config.model)
        backbone_io.write_transfer_report(report, report_path)
    return SSLResult(out_dir=str(out_dir), backbone_path=backbone_path, transfer_report_path=report_path,
                     log_path=log_path, checkpoint_path=last_ckpt, epochs_done=epochs_done,
                     iterations=iteration, last_loss=last_loss)


# ----------------------------------------------------------------------------------------
# Checkpoints


def checkpoints_to_delete(names, keep_last):
    """The ssl_epochN.pt names beyond the newest `keep_last` (by N); other names are left alone."""
    numbered = sorted((int(m.group(1)), n) for n in names for m in [CHECKPOINT_RE.search(n)] if m)
    keep = max(int(keep_last), 1)
    return [n for _, n in numbered[:-keep]]


def newest_checkpoint(ckpt_dir):
    paths = glob.glob(os.path.join(glob.escape(ckpt_dir), "ssl_epoch*.pt"))
    paths = [p for p in paths if CHECKPOINT_RE.search(p)]
    return max(paths, key=_epochs_in) if paths else None


def _epochs_in(path):
    return int(CHECKPOINT_RE.search(path).group(1))


def _save_checkpoint(ckpt_dir, model, optimizer, epoch, iteration, config, general):
    import torch

    path = os.path.join(ckpt_dir, "ssl_epoch%04d.pt" % epoch)
    state = {"model": unwrap(model).state_dict(),  # base encoder, predictor and momentum encoder
             "optimizer": optimizer.state_dict(), "epoch": epoch, "iteration": iteration,
             "config": _plain(config), "general": _plain(general)}
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)
    return path


def _load_checkpoint(path, model, optimizer, device):
    import torch

    try:
        state = torch.load(path, map_location=device, weights_only=True)
        unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, KeyError, ValueError) as e:
        raise TrainerError("cannot resume from %s (%s); it was written for another model or config: move it "
                           "away or pass resume=False" % (path, e)) from e
    return int(state["epoch"]), int(state["iteration"])


# ----------------------------------------------------------------------------------------
# Setup


def _validate(config):
    for name in ("model", "epochs", "batch_size", "lr", "temperature", "momentum_base", "proj_hidden_dim",
                 "proj_dim", "pred_hidden_dim", "crop_min_scale", "imgsz", "checkpoint_every", "keep_last"):
        if not hasattr(config, name):
            raise ConfigError("ssl config has no %r" % name)
    if int(config.batch_size) < 2:
        raise ConfigError("ssl batch_size %r: need at least 2 (batch norm and the contrastive loss)" % config.batch_size)
    if not 0 < float(config.crop_min_scale) <= 1:
        raise ConfigError("ssl crop_min_scale %r: expected 0 < scale <= 1" % config.crop_min_scale)
    if not 0 <= float(config.momentum_base) <= 1:
        raise ConfigError("ssl momentum_base %r: expected 0..1" % config.momentum_base)
    if float(config.temperature) <= 0:
        raise ConfigError("ssl temperature %r: expected > 0" % config.temperature)
    if str(getattr(config, "optimizer", "adamw")).lower() not in OPTIMIZERS:
        raise ConfigError("ssl optimizer %r: expected one of %s" % (config.optimizer, sorted(OPTIMIZERS)))
    if int(config.checkpoint_every) < 1 or int(config.keep_last) < 1 or int(config.epochs) < 1:
        raise ConfigError("ssl epochs, checkpoint_every and keep_last must be >= 1")


def _init_distributed(general):
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch
    import torch.distributed as tdist

    here = not tdist.is_initialized()
    if here:
        tdist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return _Dist(rank=tdist.get_rank(), world=tdist.get_world_size(),
                 local_rank=int(os.environ.get("LOCAL_RANK", "0")), initialised_here=here)


def _resolve_device(device, dist):
    import torch

    text = "" if device is None else str(device).strip().lower()
    if text == "cpu" or (not text and not torch.cuda.is_available()):
        return torch.device("cpu")
    if text == "mps":
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise TrainerError("device %r asked for a GPU but CUDA is not available; use device: cpu" % device)
    if dist.world > 1:  # torchrun gives each rank its GPU
        torch.cuda.set_device(dist.local_rank)
        return torch.device("cuda", dist.local_rank)
    index = text.split(",")[0].replace("cuda:", "").replace("cuda", "") or "0"
    return torch.device("cuda", int(index))


def check_inputs(config, images):
    """Refuse a bad ssl config or too few images before the caller writes anything to the output folder.

    run_ssl checks the same again; this lets the command line check before it saves training_config.yaml.
    """
    _validate(config)
    world = os.environ.get("WORLD_SIZE", "1")
    if not world.isdigit():
        raise ConfigError("WORLD_SIZE=%r: expected the number of processes torchrun starts" % world)
    _per_rank_batch(config, images, max(1, int(world)), list_images(images))


def _per_rank_batch(config, images, world, paths):
    per_rank = int(config.batch_size) // world
    if per_rank < 2:
        raise ConfigError("ssl batch_size %d over %d ranks leaves %d per rank; need 2" % (
            int(config.batch_size), world, per_rank))
    if len(paths) // world < per_rank:
        raise DataError("%d unlabelled images under %s make no full batch of %d per rank; add images or lower "
                        "batch_size" % (len(paths), images, per_rank))
    return per_rank


def _make_loader(config, general, images, dist, seed):
    import torch
    from torch.utils.data import DataLoader, DistributedSampler

    paths = list_images(images)
    per_rank = _per_rank_batch(config, images, dist.world, paths)
    dataset = UnlabelledImages(paths, config.imgsz, config.crop_min_scale, seed)
    sampler = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=True) if dist.world > 1 else None
    workers = int(getattr(general, "num_workers", 0))
    loader = DataLoader(dataset, batch_size=per_rank, shuffle=sampler is None, sampler=sampler,
                        num_workers=workers, drop_last=True, pin_memory=torch.cuda.is_available(),
                        generator=torch.Generator() if sampler is None else None)
    return loader, dataset, sampler


def _wrap_ddp(model, device):
    import torch

    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
    return torch.nn.parallel.DistributedDataParallel(model)


# ----------------------------------------------------------------------------------------
# Small helpers


def _plain(obj):
    if dataclasses.is_dataclass(obj):
        data = dataclasses.asdict(obj)
    elif isinstance(obj, dict):
        data = dict(obj)
    else:
        data = {k: v for k, v in vars(obj).items() if not k.startswith("_")}
    return json.loads(json.dumps(data, default=str))


def _write_json(path, data):
    with open(path, "w") as fh:
        json.dump(data, fh, indent=2)


def _append_log(path, row):
    new = not os.path.exists(path)
    with open(path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow({k: ("%.6g" % v if isinstance(v, float) else v) for k, v in row.items()})


def read_log(path):
    """The per-epoch rows of ssl_log.csv as dicts of floats."""
    with open(path, newline="") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]

