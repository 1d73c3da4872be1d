"""MoCo v3 pretraining: formulas on tables, augmentations on tiny tensors, one tiny run whose
backbone is then proven to arrive in an ultralytics training run."""
import json
import math
import os
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from trainer import backbone as backbone_io  # noqa: E402
from trainer import ssl, ssl_augment, ssl_model  # noqa: E402
from trainer.errors import ConfigError, DataError, TrainerError  # noqa: E402
from tests.test_baseline import make_yolo_dataset  # noqa: E402

GENERAL = SimpleNamespace(device="cpu", num_workers=0, seed=0)


def ssl_config(**overrides):
    values = dict(model="yolov8n.yaml", epochs=2, batch_size=4, lr=1.5e-4, temperature=1.0, momentum_base=0.99,
                  proj_hidden_dim=32, proj_dim=16, pred_hidden_dim=32, crop_min_scale=0.2, imgsz=64,
                  checkpoint_every=1, keep_last=1)
    values.update(overrides)
    return SimpleNamespace(**values)


def write_images(folder, n, seed=0):
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        sub = os.path.join(folder, "sub") if i % 2 else folder  # the listing is recursive
        os.makedirs(sub, exist_ok=True)
        paths.append(os.path.join(sub, "%d.%s" % (i, "png" if i % 3 == 0 else "jpg")))
        cv2.imwrite(paths[-1], rng.integers(0, 255, (48 + 8 * i, 80, 3), dtype=np.uint8))
    return sorted(paths)


# ----------------------------------------------------------------------------------------
# Formulas


@pytest.mark.parametrize("t, total, m0", [(0, 100, 0.99), (50, 100, 0.99), (100, 100, 0.99), (25, 100, 0.996),
                                          (150, 100, 0.99), (0, 0, 0.99)])
def test_momentum_schedule(t, total, m0):
    frac = min(t, total) / max(total, 1)
    assert ssl_model.momentum_at(t, total, m0) == pytest.approx(1 - 0.5 * (1 + math.cos(math.pi * frac)) * (1 - m0))


@pytest.mark.parametrize("t, total, m0, expected", [(0, 10, 0.99, 0.99), (10, 10, 0.99, 1.0), (5, 10, 0.99, 0.995)])
def test_momentum_schedule_end_points(t, total, m0, expected):
    assert ssl_model.momentum_at(t, total, m0) == pytest.approx(expected)


@pytest.mark.parametrize("epoch, warmup, epochs", [(0, 2, 10), (1, 2, 10), (2, 2, 10), (6, 2, 10), (10, 2, 10),
                                                    (0.5, 0, 4)])
def test_lr_schedule(epoch, warmup, epochs):
    base = 0.3
    if epoch < warmup:
        expected = base * epoch / warmup
    else:
        expected = base * 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / (epochs - warmup)))
    assert ssl_model.lr_at(epoch, base, warmup, epochs) == pytest.approx(expected)


@pytest.mark.parametrize("n, temperature", [(1, 1.0), (4, 1.0), (4, 0.2), (8, 0.5)])
def test_contrastive_loss_of_orthonormal_pairs(n, temperature):
    # q == k and rows orthonormal: logits are I / T, so each row's CE is
    # -log(e^(1/T) / (e^(1/T) + (n - 1))), and the loss is that times 2T.
    q = torch.eye(n, 16) * 3.0  # scale is removed by the L2 normalisation
    ce = -math.log(math.exp(1 / temperature) / (math.exp(1 / temperature) + n - 1))
    got = ssl_model.contrastive_loss(q, q.clone(), temperature)
    assert got.item() == pytest.approx(ce * 2 * temperature, rel=1e-5)


def test_mlp_heads_follow_moco_v3():
    projector = ssl_model.mlp(2, 8, 16, 4)
    predictor = ssl_model.mlp(2, 4, 16, 4, last_bn=False)
    kinds = [type(m).__name__ for m in projector]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert projector[-1].affine is False and projector[1].affine is True
    assert [type(m).__name__ for m in predictor] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert all(m.bias is None for m in list(projector) + list(predictor) if isinstance(m, torch.nn.Linear))


def test_momentum_update_is_an_ema():
    model = ssl_model.MoCoV3(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), 4, 8, 4, 8, 1.0)
    with torch.no_grad():
        for p in model.base.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.momentum.parameters()]
    model.update_momentum(0.9)
    for p_mom, p_old, p_base in zip(model.momentum.parameters(), before, model.base.parameters()):
        assert torch.allclose(p_mom, 0.9 * p_old + 0.1 * p_base)
        assert not p_mom.requires_grad


# ----------------------------------------------------------------------------------------
# Backbone


def test_backbone_chain_matches_ultralytics_forward():
    """A sequential pass over layers 0-9 gives what DetectionModel's own forward computes at
    layer 9 (SPPF): YOLOv8's backbone reads only the previous layer."""
    full = backbone_io.yolo.detection_model("yolov8n.yaml").eval()
    captured = {}
    full.model[9].register_forward_hook(lambda m, i, o: captured.setdefault("sppf", o))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        full(x)
        chained = full.model[:backbone_io.backbone_layer_count(full)](x)
    assert backbone_io.backbone_layer_count(full) == 10
    assert type(full.model[9]).__name__ == "SPPF"
    assert torch.equal(chained, captured["sppf"])


def test_backbone_layer_count_rejects_branching_backbones():
    full = backbone_io.yolo.detection_model("yolov8n.yaml")
    full.model[4].f = [-1, 2]
    with pytest.raises(TrainerError, match="layer 4"):
        backbone_io.backbone_layer_count(full)


# ----------------------------------------------------------------------------------------
# Augmentations and data


def test_list_images_from_folder_and_list_file(tmp_path):
    paths = write_images(tmp_path / "imgs", 4)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    assert sorted(ssl_augment.list_images(tmp_path / "imgs")) == paths
    listing = tmp_path / "list.txt"
    listing.write_text("# unlabelled\nimgs/0.png\n\n%s\n" % paths[1])
    assert ssl_augment.list_images(listing) == [str(tmp_path / "imgs" / "0.png"), paths[1]]


@pytest.mark.parametrize("make", [lambda p: p.mkdir(), lambda p: None])
def test_list_images_errors_name_the_source(tmp_path, make):
    make(tmp_path / "empty")
    with pytest.raises(DataError, match="empty"):
        ssl_augment.list_images(tmp_path / "empty")


def test_dataset_gives_two_uint8_views_repeatable_per_epoch(tmp_path):
    paths = write_images(tmp_path, 2)
    data = ssl_augment.UnlabelledImages(paths, imgsz=32, seed=3)
    v1, v2 = data[1]
    assert v1.shape == v2.shape == (3, 32, 32) and v1.dtype == torch.uint8
    assert torch.equal(data[1][0], v1)  # same (seed, epoch, index): same crop
    data.set_epoch(1)
    assert not torch.equal(data[1][0], v1)


def test_unreadable_image_raises_naming_it(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="bad.jpg"):
        ssl_augment.UnlabelledImages([str(bad)], imgsz=32)[0]


@pytest.mark.parametrize("view", [0, 1])
def test_photometric_views_are_0_1_floats_and_seeded(view):
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    a = ssl_augment.photometric(images, view, torch.Generator().manual_seed(0))
    b = ssl_augment.photometric(images, view, torch.Generator().manual_seed(0))
    assert a.shape == images.shape and a.dtype == torch.float32
    assert 0.0 <= a.min().item() and a.max().item() <= 1.0
    assert torch.equal(a, b)


def test_single_photometric_ops():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 16, 16)
    assert torch.allclose(ssl_augment.solarize(x, 1.0, gen), torch.where(x >= 0.5, 1 - x, x))
    assert torch.equal(ssl_augment.solarize(x, 0.0, gen), x)
    gray = ssl_augment.grayscale(x, 1.0, gen)
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])
    flat = torch.full((2, 3, 16, 16), 0.3)  # blurring a constant image changes nothing
    assert torch.allclose(ssl_augment.gaussian_blur(flat, 1.0, gen), flat, atol=1e-6)
    cast = ssl_augment.underwater_cast(torch.full((4, 3, 8, 8), 0.8), 1.0, gen)
    assert (cast[:, 0] < cast[:, 2]).all()  # red attenuated below blue


# ----------------------------------------------------------------------------------------
# Checkpoints and configuration


@pytest.mark.parametrize("names, keep, expected", [
    ([], 3, []),
    (["ssl_epoch0001.pt", "ssl_epoch0002.pt"], 3, []),
    (["ssl_epoch0010.pt", "ssl_epoch0009.pt", "ssl_epoch0011.pt", "ssl_epoch0012.pt"], 3, ["ssl_epoch0009.pt"]),
    (["ssl_epoch0001.pt", "ssl_epoch0002.pt.tmp", "backbone.pt"], 1, []),
])
def test_ssl_checkpoints_to_delete(names, keep, expected):
    assert ssl.checkpoints_to_delete(names, keep) == expected


@pytest.mark.parametrize("field, value", [("batch_size", 1), ("crop_min_scale", 0), ("temperature", 0),
                                          ("keep_last", 0), ("optimizer", "adam-ish")])
def test_bad_ssl_config_raises(tmp_path, field, value):
    write_images(tmp_path / "imgs", 4)
    with pytest.raises(ConfigError, match=field.split("_")[0]):
        ssl.run_ssl(ssl_config(**{field: value}), GENERAL, tmp_path / "imgs", tmp_path / "out")


def test_too_few_images_for_a_batch_raises(tmp_path):
    write_images(tmp_path / "imgs", 3)
    with pytest.raises(DataError, match="batch"):
        ssl.run_ssl(ssl_config(), GENERAL, tmp_path / "imgs", tmp_path / "out")


def test_ddp_wrap_constructs_and_steps_with_gloo(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method="file://%s" % (tmp_path / "pg"), rank=0, world_size=1)
    try:
        model = ssl_model.MoCoV3(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, 2)), 4, 8, 4, 8, 1.0)
        wrapped = ssl._wrap_ddp(model, torch.device("cpu"))
        loss = wrapped(torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8), 0.99)
        loss.backward()
        assert ssl_model.unwrap(wrapped) is model
        assert torch.equal(ssl_model.concat_all_gather(torch.ones(2, 3)), torch.ones(2, 3))
    finally:
        dist.destroy_process_group()


# ----------------------------------------------------------------------------------------
# One tiny run, resumed, and its backbone handed to ultralytics


@pytest.fixture(scope="module")
def ssl_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ssl")
    write_images(root / "imgs", 5)
    # Another seed than the detector's: with the same one, ultralytics would initialise the
    # backbone to the very weights SSL started from, and the transfer test would prove little.
    general = SimpleNamespace(device="cpu", num_workers=0, seed=7)
    first = ssl.run_ssl(ssl_config(epochs=1), general, root / "imgs", root / "out")
    resumed = ssl.run_ssl(ssl_config(epochs=2), general, root / "imgs", root / "out")
    return root, first, resumed


@pytest.mark.slow
def test_ssl_run_checkpoints_logs_and_resumes(ssl_run):
    root, first, resumed = ssl_run
    assert (first.epochs_done, first.iterations) == (1, 1)  # 5 images, batch 4, last batch dropped
    assert (resumed.epochs_done, resumed.iterations) == (2, 2)
    assert os.listdir(root / "out" / "checkpoints") == ["ssl_epoch0002.pt"]  # keep_last=1
    rows = ssl.read_log(resumed.log_path)
    assert [r["epoch"] for r in rows] == [1, 2] and all(math.isfinite(r["loss"]) for r in rows)
    assert rows[-1]["momentum"] == pytest.approx(1.0)
    state = torch.load(resumed.checkpoint_path, weights_only=True)
    assert {"model", "optimizer", "epoch", "iteration", "config", "general"} <= set(state)
    assert any(k.startswith("momentum.") for k in state["model"]) and state["config"]["model"] == "yolov8n.yaml"
    with open(root / "out" / "ssl_config.json") as fh:
        assert json.load(fh)["config"]["epochs"] == 2


@pytest.mark.slow
def test_ssl_backbone_arrives_in_ultralytics_training(ssl_run, tmp_path):
    from trainer.stages import baseline

    root, _, resumed = ssl_run
    saved = torch.load(resumed.checkpoint_path, weights_only=True)["model"]
    expected = {k[len("base.backbone.model."):]: v for k, v in saved.items() if k.startswith("base.backbone.model.")}
    assert len(expected) > 0

    with open(resumed.transfer_report_path) as fh:
        report = json.load(fh)
    assert report["matched_layers"] == list(range(10)) and report["unused"] == []
    assert all(not k.startswith("model.%d." % i) for k in report["matched"] for i in range(10, 23))

    seen = {}

    def snapshot(trainer):  # the weights training starts from, after ultralytics' own load
        seen.update({"%d.%s" % (i, k): v.detach().clone()
                     for i in range(10) for k, v in trainer.model.model[i].state_dict().items()})

    data = make_yolo_dataset(tmp_path / "data", n_images=2)
    config = SimpleNamespace(model="yolov8n.yaml", epochs=1, batch_size=2, imgsz=64, save_period=-1, keep_last=3)
    result = baseline.run_baseline(config, GENERAL, data, tmp_path / "det", ssl_backbone=root / "out",
                                   callbacks={"on_pretrain_routine_end": snapshot})
    assert set(seen) == set(expected)
    for key, value in expected.items():
        assert torch.equal(seen[key].float(), value.float()), key
    with torch.random.fork_rng(devices=[]):  # what training from the yaml alone starts from (seed 0)
        torch.manual_seed(0)
        fresh = backbone_io.yolo.detection_model("yolov8n.yaml", nc=3).model[0].conv.weight
    assert not torch.equal(seen["0.conv.weight"], fresh)
    with open(result.transfer_report_path) as fh:
        det_report = json.load(fh)
    assert det_report["nc"] == 3 and det_report["matched_layers"] == list(range(10))
    assert "model.22.cv2.0.0.conv.weight" in det_report["missing"]


def test_a_training_checkpoint_is_not_a_backbone(ssl_run, tmp_path):
    root, _, resumed = ssl_run
    with pytest.raises(TrainerError, match="backbone.pt"):
        backbone_io.transfer_report(resumed.checkpoint_path, "yolov8n.yaml")


def test_backbone_of_another_scale_is_refused(ssl_run, tmp_path):
    from trainer.stages import baseline

    root, _, resumed = ssl_run
    data = make_yolo_dataset(tmp_path / "data", n_images=1)
    config = SimpleNamespace(model="yolov8s.yaml", epochs=1, batch_size=2, imgsz=64)
    with pytest.raises(TrainerError, match="does not fit"):
        baseline.run_baseline(config, GENERAL, data, tmp_path / "det", ssl_backbone=resumed.backbone_path)
