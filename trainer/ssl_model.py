"""The MoCo v3 model around a YOLO backbone, its loss, schedules and LARS optimizer.

Written from the MoCo v3 paper's description (Chen, Xie, He 2021) and the notes in
shared/REFERENCE.md; the reference code is CC BY-NC and is not copied here.
"""
import copy
import math

import torch
from torch import nn


def mlp(num_layers, in_dim, hidden_dim, out_dim, last_bn=True):
    """Linear (no bias) -> BN -> ReLU blocks; the last Linear is followed by a BN without
    affine when `last_bn` (the projector) and by nothing otherwise (the predictor)."""
    layers = []
    for i in range(num_layers):
        d_in = in_dim if i == 0 else hidden_dim
        d_out = out_dim if i == num_layers - 1 else hidden_dim
        layers.append(nn.Linear(d_in, d_out, bias=False))
        if i < num_layers - 1:
            layers += [nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(d_out, affine=False))
    return nn.Sequential(*layers)


class PooledBackbone(nn.Module):
    """YOLO backbone layers run as a chain, then global average pooling of the last map.

    The layers live under `.model` so their state_dict keys read `model.<i>.` as in a
    DetectionModel.
    """

    def __init__(self, layers):
        super().__init__()
        self.model = layers

    def forward(self, x):
        return self.model(x).mean(dim=(2, 3))


class Encoder(nn.Module):
    def __init__(self, backbone, projector):
        super().__init__()
        self.backbone = backbone
        self.projector = projector

    def forward(self, x):
        return self.projector(self.backbone(x))


def contrastive_loss(q, k, temperature):
    """InfoNCE of q against all keys (gathered over ranks), positives on the diagonal, times 2T."""
    q = nn.functional.normalize(q, dim=1)
    k = nn.functional.normalize(k, dim=1)
    k = concat_all_gather(k)
    logits = q @ k.t() / temperature
    rank = torch.distributed.get_rank() if _distributed() else 0
    labels = torch.arange(len(q), device=q.device) + len(q) * rank
    return nn.functional.cross_entropy(logits, labels) * (2 * temperature)


@torch.no_grad()
def concat_all_gather(tensor):
    """Concatenate `tensor` from every rank (no gradient); itself when not distributed."""
    if not _distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def _distributed():
    return torch.distributed.is_available() and torch.distributed.is_initialized() \
        and torch.distributed.get_world_size() > 1


class MoCoV3(nn.Module):
    """Base encoder + predictor (trained) and a momentum encoder (EMA of the base)."""

    def __init__(self, backbone_layers, feat_dim, proj_hidden_dim, proj_dim, pred_hidden_dim, temperature):
        super().__init__()
        self.temperature = float(temperature)
        self.base = Encoder(PooledBackbone(backbone_layers), mlp(2, feat_dim, proj_hidden_dim, proj_dim))
        self.momentum = copy.deepcopy(self.base)
        for p in self.momentum.parameters():
            p.requires_grad_(False)
        self.predictor = mlp(2, proj_dim, pred_hidden_dim, proj_dim, last_bn=False)

    @torch.no_grad()
    def update_momentum(self, m):
        for p_base, p_mom in zip(self.base.parameters(), self.momentum.parameters()):
            p_mom.mul_(m).add_(p_base.detach(), alpha=1.0 - m)

    def forward(self, x1, x2, m):
        q1 = self.predictor(self.base(x1))
        q2 = self.predictor(self.base(x2))
        with torch.no_grad():
            self.update_momentum(m)
            k1 = self.momentum(x1)
            k2 = self.momentum(x2)
        return contrastive_loss(q1, k2, self.temperature) + contrastive_loss(q2, k1, self.temperature)


def build_moco(config, device):
    """(MoCoV3 on `device`, backbone feature width) from the ssl config's model yaml and dims."""
    from trainer.backbone import build_backbone

    layers, feat_dim = build_backbone(config.model)
    model = MoCoV3(layers, feat_dim, int(config.proj_hidden_dim), int(config.proj_dim),
                   int(config.pred_hidden_dim), float(config.temperature))
    return model.to(device), feat_dim


def unwrap(model):
    return model.module if hasattr(model, "module") else model


# ----------------------------------------------------------------------------------------
# Schedules and optimizer


def momentum_at(iteration, total_iterations, m0):
    """m = 1 - 0.5 (1 + cos(pi t / T)) (1 - m0): m0 at t = 0, 1 at t = T."""
    t = min(iteration, total_iterations) / max(total_iterations, 1)
    return 1.0 - 0.5 * (1.0 + math.cos(math.pi * t)) * (1.0 - m0)


def lr_at(epoch, base_lr, warmup_epochs, epochs):
    """Linear warm-up, then a half-cosine to 0; `epoch` may be fractional (per-iteration)."""
    if epoch < warmup_epochs:
        return base_lr * epoch / warmup_epochs
    span = max(epochs - warmup_epochs, 1e-12)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(epoch - warmup_epochs, span) / span))


def set_lr(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr


class LARS(torch.optim.Optimizer):
    """SGD with momentum whose step for each weight matrix is scaled by
    trust * ||w|| / ||g + wd w||; biases and norm parameters (1-d) get plain SGD, no decay."""

    def __init__(self, params, lr=0.0, weight_decay=0.0, momentum=0.9, trust_coefficient=0.001):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum,
                                      trust_coefficient=trust_coefficient))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                step = p.grad
                if p.ndim > 1:
                    step = step.add(p, alpha=group["weight_decay"])
                    w_norm, s_norm = torch.norm(p), torch.norm(step)
                    ratio = torch.where((w_norm > 0) & (s_norm > 0),
                                        group["trust_coefficient"] * w_norm / s_norm, torch.ones_like(w_norm))
                    step = step.mul(ratio)
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = torch.zeros_like(p)
                buf.mul_(group["momentum"]).add_(step)
                p.add_(buf, alpha=-group["lr"])


def _sgd(params, weight_decay):
    return torch.optim.SGD(params, lr=0.0, momentum=0.9, weight_decay=weight_decay)


def _lars(params, weight_decay):
    return LARS(params, lr=0.0, weight_decay=weight_decay)


def _adamw(params, weight_decay):
    return torch.optim.AdamW(params, lr=0.0, weight_decay=weight_decay)


OPTIMIZERS = {"adamw": _adamw, "lars": _lars, "sgd": _sgd}


def make_optimizer(name, model, weight_decay):
    """The optimizer over the trainable parameters (base encoder and predictor)."""
    from trainer.errors import ConfigError

    factory = OPTIMIZERS.get(str(name).lower())
    if factory is None:
        raise ConfigError("ssl optimizer %r: expected one of %s" % (name, sorted(OPTIMIZERS)))
    return factory([p for p in model.parameters() if p.requires_grad], weight_decay)
