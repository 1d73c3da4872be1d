"""Unlabelled images and the two asymmetric MoCo v3 views, scaled 0-1 as YOLO feeds them.

Geometry (random resized crop, flips, 90-degree turns) runs per image with cv2 in the
DataLoader workers, so a large photograph is cropped before it is resized. Photometry
(colour jitter, grayscale, blur, solarize, underwater colour cast) runs batched on
tensors on the training device. No mean/std normalisation: YOLO sees pixels / 255.

Randomness is drawn from generators seeded by (seed, epoch, index) for the crops and
by an explicit torch.Generator for photometry, never from global state.
"""
import math
import os

import numpy as np

from edge.errors import FrameError
from edge.images import IMAGE_EXTENSIONS, read_image
from edge.images import list_images as list_image_files
from trainer.errors import DataError

# Per-view probabilities, as in MoCo v3's asymmetric BYOL-style recipe; the underwater
# cast is ours: red fades first under water and the background turns blue-green.
VIEW_PARAMS = (
    {"jitter_p": 0.8, "gray_p": 0.2, "blur_p": 1.0, "solarize_p": 0.0, "cast_p": 0.5},
    {"jitter_p": 0.8, "gray_p": 0.2, "blur_p": 0.1, "solarize_p": 0.2, "cast_p": 0.5},
)
JITTER = (0.4, 0.4, 0.2, 0.1)  # brightness, contrast, saturation, hue
BLUR_SIGMA_224 = (0.1, 2.0)    # reference sigma range at 224 px, scaled with the crop size


def list_images(source):
    """Image paths from a folder (recursive, regular files, edge.images.IMAGE_EXTENSIONS) or a list file.

    A list file has one path a line; relative lines are taken relative to the list file's folder.
    """
    source = os.fspath(source)
    if os.path.isdir(source):
        paths = list_image_files(source, recursive=True)
    elif os.path.isfile(source):
        base = os.path.dirname(os.path.abspath(source))
        with open(source) as fh:
            lines = [line.strip() for line in fh]
        paths = [line if os.path.isabs(line) else os.path.join(base, line) for line in lines if line and not line.startswith("#")]
    else:
        raise DataError("unlabelled images %r: no such folder or list file" % source)
    if not paths:
        raise DataError("unlabelled images %r: no image files (%s) found" % (source, "/".join(IMAGE_EXTENSIONS)))
    return paths


def random_resized_crop(image, rng, size, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)):
    """A crop of `scale` of the area and `ratio` aspect, resized to size x size (torchvision's rule)."""
    import cv2

    h, w = image.shape[:2]
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            break
    else:  # fall back to a centre crop at the nearest allowed aspect
        aspect = w / h
        if aspect < ratio[0]:
            cw, ch = w, min(h, int(round(w / ratio[0])))
        elif aspect > ratio[1]:
            cw, ch = min(w, int(round(h * ratio[1]))), h
        else:
            cw, ch = w, h
        y0, x0 = (h - ch) // 2, (w - cw) // 2
    crop = image[y0:y0 + ch, x0:x0 + cw]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if cw > size else cv2.INTER_LINEAR)


def random_flip_rotate(image, rng):
    """Horizontal and vertical flips (p 0.5 each) and a random multiple of 90 degrees:
    a camera on the reef sees species from any side."""
    if rng.random() < 0.5:
        image = image[:, ::-1]
    if rng.random() < 0.5:
        image = image[::-1, :]
    return np.ascontiguousarray(np.rot90(image, int(rng.integers(0, 4))))


class UnlabelledImages(object):
    """A torch-style Dataset of two uint8 CHW RGB crops per image (the geometric half of the views).

    Call set_epoch(e) before each epoch so crops differ between epochs but repeat on resume.
    """

    def __init__(self, paths, imgsz, crop_min_scale=0.2, seed=0):
        self.paths = list(paths)
        self.imgsz = int(imgsz)
        self.scale = (float(crop_min_scale), 1.0)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        import cv2
        import torch

        path = self.paths[index]
        try:
            image = read_image(path)
        except FrameError as e:
            raise DataError("unlabelled %s" % e) from e
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)  # YOLO feeds RGB
        rng = np.random.default_rng((self.seed, self.epoch, index))
        views = []
        for _ in range(2):
            crop = random_flip_rotate(random_resized_crop(image, rng, self.imgsz, self.scale), rng)
            views.append(torch.from_numpy(crop.transpose(2, 0, 1).copy()))
        return views[0], views[1]


# ----------------------------------------------------------------------------------------
# Batched photometry on float (B, 3, H, W) RGB tensors in [0, 1]


def _gray(x):
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _uniform(n, low, high, generator, device):
    import torch

    return (torch.rand(n, generator=generator) * (high - low) + low).to(device)


def _mask(n, p, generator, device):
    import torch

    return (torch.rand(n, generator=generator) < p).to(device).view(n, 1, 1, 1)


def _hue_matrices(angle):
    """RGB->RGB 3x3 matrices rotating hue by `angle` radians through YIQ (batched, linear)."""
    import torch

    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=angle.device)
    to_rgb = torch.linalg.inv(to_yiq)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.zeros(len(angle), 3, 3, device=angle.device)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    return to_rgb @ rot @ to_yiq


def colour_jitter(x, p, generator, strength=JITTER):
    """Brightness, contrast, saturation, hue with per-image factors, applied with probability p."""
    import torch

    n, dev = len(x), x.device
    b, c, s, h = strength
    out = x * _uniform(n, 1 - b, 1 + b, generator, dev).view(n, 1, 1, 1)
    out = out.clamp(0, 1)
    mean = _gray(out).mean(dim=(1, 2, 3), keepdim=True)
    out = ((out - mean) * _uniform(n, 1 - c, 1 + c, generator, dev).view(n, 1, 1, 1) + mean).clamp(0, 1)
    gray = _gray(out)
    out = ((out - gray) * _uniform(n, 1 - s, 1 + s, generator, dev).view(n, 1, 1, 1) + gray).clamp(0, 1)
    hue = _uniform(n, -h, h, generator, dev) * 2 * math.pi  # hue factor is a fraction of the colour wheel
    out = torch.einsum("nij,njhw->nihw", _hue_matrices(hue), out).clamp(0, 1)
    return torch.where(_mask(n, p, generator, dev), out, x)


def grayscale(x, p, generator):
    import torch

    return torch.where(_mask(len(x), p, generator, x.device), _gray(x).expand_as(x), x)


def gaussian_blur(x, p, generator, sigma_224=BLUR_SIGMA_224):
    """Separable Gaussian blur with a per-image sigma, batched as one grouped convolution."""
    import torch
    import torch.nn.functional as F

    n, ch, hgt, wid = x.shape
    scale = hgt / 224.0
    sigma = _uniform(n, sigma_224[0] * scale, sigma_224[1] * scale, generator, x.device)
    radius = max(1, int(math.ceil(3 * sigma_224[1] * scale)))
    radius = min(radius, (min(hgt, wid) - 1) // 2) or 1
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-(t.view(1, -1) ** 2) / (2 * sigma.view(-1, 1) ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(ch, 0)  # (n*ch, k)
    flat = x.reshape(1, n * ch, hgt, wid)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="reflect"), kernel.view(n * ch, 1, 1, -1), groups=n * ch)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="reflect"), kernel.view(n * ch, 1, -1, 1), groups=n * ch)
    return torch.where(_mask(n, p, generator, x.device), flat.view(n, ch, hgt, wid), x)


def solarize(x, p, generator, threshold=0.5):
    import torch

    return torch.where(_mask(len(x), p, generator, x.device) & (x >= threshold), 1 - x, x)


def underwater_cast(x, p, generator):
    """Attenuate red and blend towards a random blue-green haze (depth and turbidity)."""
    import torch

    n, dev = len(x), x.device
    gains = torch.stack([_uniform(n, 0.5, 1.0, generator, dev),    # red fades first
                         _uniform(n, 0.95, 1.1, generator, dev),
                         _uniform(n, 1.0, 1.2, generator, dev)], 1).view(n, 3, 1, 1)
    haze = torch.stack([_uniform(n, 0.0, 0.15, generator, dev),
                        _uniform(n, 0.35, 0.65, generator, dev),
                        _uniform(n, 0.45, 0.75, generator, dev)], 1).view(n, 3, 1, 1)
    alpha = _uniform(n, 0.0, 0.35, generator, dev).view(n, 1, 1, 1)
    out = ((x * gains) * (1 - alpha) + haze * alpha).clamp(0, 1)
    return torch.where(_mask(n, p, generator, dev), out, x)


def photometric(images_uint8, view, generator):
    """uint8 (B, 3, H, W) -> float [0, 1] with view 0's or view 1's photometric recipe."""
    params = VIEW_PARAMS[view]
    x = images_uint8.float() / 255.0
    x = underwater_cast(x, params["cast_p"], generator)
    x = colour_jitter(x, params["jitter_p"], generator)
    x = grayscale(x, params["gray_p"], generator)
    x = gaussian_blur(x, params["blur_p"], generator)
    return solarize(x, params["solarize_p"], generator)
