"""The water around synthetic animals: seabed, colour cast, haze, caustics, marine snow.

Images are float32 RGB in 0..1 until `finish` turns them into BGR uint8.
Optics, simplified: light reaching an object is filtered per channel (red is
absorbed first, so deeper scenes turn blue-green), and the farther an object
is, the more its colour is replaced by the water colour (haze).
"""
from dataclasses import dataclass

import cv2
import numpy as np

# Per-channel attenuation (RGB) per unit of depth: red goes first, blue last.
_ABSORPTION = np.array([2.6, 0.55, 0.3], np.float32)
_SHALLOW_WATER = np.array([0.2, 0.62, 0.66], np.float32)
_DEEP_WATER = np.array([0.02, 0.16, 0.34], np.float32)


@dataclass
class Water:
    depth: float           # 0 shallow .. 1 deep
    turbidity: float       # 0 clear .. 1 murky
    cast: np.ndarray       # (3,) multiplier for object colours
    water: np.ndarray      # (H, W, 3) colour of the open water at each pixel
    horizon: float         # seabed starts at this fraction of the height (>1: open water)
    caustics: np.ndarray   # (H, W) brightening factor - 1


def noise(rng, height, width, cell, octaves=3):
    """Smooth value noise in 0..1: upsampled random grids, several octaves."""
    total, weight, amp = np.zeros((height, width), np.float32), 0.0, 1.0
    for _ in range(octaves):
        grid = rng.random((height // cell + 2, width // cell + 2), dtype=np.float32)
        total += amp * cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
        weight += amp
        amp, cell = amp * 0.5, max(1, cell // 2)
    return np.clip(total / weight, 0, 1)


def _ridges(rng, size, cell, power):
    """Thin bright lines where smooth noise crosses its middle: the look of caustics."""
    r = 1 - np.abs(2 * noise(rng, size, size, cell, 2) - 1)
    out = np.ones_like(r)
    for _ in range(power):
        out *= r
    return out


def random_water(rng, size):
    depth, turbidity = float(rng.uniform(0, 1)), float(rng.uniform(0, 1))
    tint = rng.uniform(-0.06, 0.06, 3).astype(np.float32)
    base = np.clip((1 - depth) * _SHALLOW_WATER + depth * _DEEP_WATER + tint, 0.01, 1)
    lo = max(16, size // 4)   # smooth fields are computed small and upsampled
    rows = np.linspace(0, 1, lo, dtype=np.float32)[:, None, None]
    water = base * (1.35 - 0.7 * rows) * (0.9 + 0.2 * noise(rng, lo, lo, max(2, lo // 3), 2)[..., None])
    water = cv2.resize(np.clip(water, 0, 1).astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    cast = np.exp(-_ABSORPTION * (0.15 + depth)) / np.exp(-_ABSORPTION * 0.15).max()
    cast = (cast * (1.0 - 0.3 * depth) / cast.max() * rng.uniform(0.9, 1.1)).astype(np.float32)
    half = max(16, size // 2)
    ridges = _ridges(rng, half, max(4, half // 10), 10) + 0.6 * _ridges(rng, half, max(4, half // 6), 12)
    strength = 0.9 * (1 - depth) ** 2 * rng.uniform(0.3, 1.0)
    ridges *= (strength * np.exp(-2.0 * np.linspace(0, 1, half, dtype=np.float32)))[:, None]
    caustics = cv2.resize(ridges, (size, size), interpolation=cv2.INTER_LINEAR)
    horizon = float(rng.uniform(0.3, 0.85)) if rng.random() < 0.8 else 2.0
    return Water(depth, turbidity, cast, water, horizon, caustics)


def haze(rgb, water, distance, turbidity):
    """Blend colours toward the water colour by distance (0 near .. 1 far)."""
    keep = np.exp(-(0.2 + 0.9 * turbidity) * distance)
    return rgb * keep + water * (1 - keep)


def backdrop(rng, w):
    """Open water above a wavy seabed of sand ripples and rocks (textures made at half size)."""
    size = w.water.shape[0]
    if w.horizon >= 1:
        return w.water.copy()
    n = max(16, size // 2)
    cols = np.arange(n, dtype=np.float32)[None, :]
    rows = np.arange(n, dtype=np.float32)[:, None]
    edge = w.horizon * n + n * 0.06 * (noise(rng, 1, n, max(4, n // 4), 2)[0] - 0.5)
    grain = noise(rng, n, n, max(4, n // 8), 3)
    ripple = 0.06 * np.sin(cols * rng.uniform(0.3, 0.7) + rows * 0.6 + 6 * grain)
    sand = np.array([0.78, 0.7, 0.52], np.float32) * rng.uniform(0.8, 1.1, 3).astype(np.float32)
    ground = sand * (0.75 + 0.4 * grain + ripple)[..., None]
    rocky = noise(rng, n, n, max(4, n // 5), 3) > rng.uniform(0.55, 0.7)
    rock = np.array([0.42, 0.38, 0.33], np.float32) * rng.uniform(0.7, 1.2, 3).astype(np.float32)
    ground[rocky] = (rock * (0.5 + 0.8 * noise(rng, n, n, 2, 2)[..., None]))[rocky]
    # Near rows (bottom) are close to the camera, rows at the horizon far away.
    distance = np.clip(1.0 - (rows - edge[None, :]) / max(1.0, n - edge.min()), 0, 1) ** 1.5
    alpha = np.clip(rows - edge[None, :] + 0.5, 0, 1)     # antialiased seabed edge
    water_small = cv2.resize(w.water, (n, n), interpolation=cv2.INTER_AREA)
    ground = haze(ground * w.cast, water_small, distance[..., None] * 0.9, w.turbidity)
    small = water_small * (1 - alpha[..., None]) + ground * alpha[..., None]
    img = cv2.resize(small.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    top = int(np.clip(edge.min() * size / n - 2, 0, size))
    img[:top] = w.water[:top]       # keep the open water at full resolution
    return img


def _distractor_shape(rng, layer, kind, cx, cy, size):
    if kind == "seaweed":
        h = rng.uniform(0.2, 0.6) * size
        t = np.linspace(0, 1, 12)
        pts = np.stack([cx + 0.08 * size * np.sin(t * rng.uniform(3, 8) + rng.uniform(0, 6)), size - t * h], 1)
        cv2.polylines(layer, [np.round(pts).astype(np.int32)], False, 1, max(2, int(size * rng.uniform(0.01, 0.03))))
        return np.array([0.2, 0.45, 0.15], np.float32) * rng.uniform(0.6, 1.3)
    a, b = rng.uniform(0.05, 0.15) * size, rng.uniform(0.02, 0.06) * size
    cv2.ellipse(layer, (int(cx), int(cy)), (int(a), int(b)), float(rng.uniform(-30, 30)), 0, 360, 1, -1)
    if kind == "rock":
        # Fish-sized, fish-shaped rock: an ellipse with a tail-like wedge, in stone colours.
        wedge = np.array([(cx - a * 0.8, cy), (cx - a * 1.4, cy - b), (cx - a * 1.3, cy + b)])
        cv2.fillPoly(layer, [np.round(wedge).astype(np.int32)], 1)
        return np.array([0.45, 0.42, 0.38], np.float32) * rng.uniform(0.6, 1.2, 3).astype(np.float32)
    return None


def draw_distractors(rng, img, w, count):
    """Things that are not animals but look a little like them: seaweed, rocks, blurry blobs."""
    size = img.shape[0]
    texture = 0.8 + 0.4 * noise(rng, size, size, 6, 2)[..., None] if count else None
    for _ in range(count):
        kind = rng.choice(["seaweed", "rock", "blob"])
        layer = np.zeros(img.shape[:2], np.uint8)
        cx, cy = rng.uniform(0, size), rng.uniform(0.2 * size, size)
        colour = _distractor_shape(rng, layer, kind, cx, cy, size)
        alpha = 1.0
        if colour is None:      # a blurry dark blob, like a far-off fish in murky water
            colour = w.water[min(int(cy), size - 1), min(int(cx), size - 1)] * rng.uniform(0.3, 0.7)
            alpha = rng.uniform(0.4, 0.8)
        ys, xs = np.nonzero(layer)
        if len(xs) == 0:
            continue
        k = int(size * (0.03 if kind == "blob" else 0.004)) * 2 + 1
        y0, y1 = max(0, ys.min() - k), min(size, ys.max() + k + 1)
        x0, x1 = max(0, xs.min() - k), min(size, xs.max() + k + 1)
        roi = (slice(y0, y1), slice(x0, x1))
        mask = cv2.GaussianBlur(layer[roi].astype(np.float32), (k, k), 0)[..., None] * alpha
        tinted = haze(colour * w.cast * texture[roi], w.water[roi], rng.uniform(0.1, 0.6), w.turbidity)
        img[roi] = img[roi] * (1 - mask) + tinted * mask
    return img


def marine_snow(rng, size, turbidity):
    """Additive layer of suspended particles: many specks, a few larger blurred flakes."""
    layer = np.zeros((size, size), np.float32)
    n = int((60 + 340 * turbidity) * (size / 320.0) ** 2)
    ys, xs = rng.integers(0, size, n), rng.integers(0, size, n)
    layer[ys, xs] = rng.uniform(0.3, 1.0, n).astype(np.float32)
    for _ in range(int(rng.integers(0, 6))):
        cv2.circle(layer, (int(rng.integers(0, size)), int(rng.integers(0, size))), int(rng.integers(1, 4)),
                   float(rng.uniform(0.3, 0.6)), -1)
    return layer


def finish(rng, img, w, caustic_shift=0):
    """Caustics, marine snow, softness and sensor noise; returns BGR uint8."""
    caustics = np.roll(w.caustics, caustic_shift, axis=1) if caustic_shift else w.caustics
    img = img * (1 + caustics[..., None])
    img += marine_snow(rng, img.shape[0], w.turbidity)[..., None] * np.array([0.75, 0.85, 0.85], np.float32)
    img = cv2.GaussianBlur(img, (5, 5), 0.5 + 0.7 * w.turbidity)
    img += rng.standard_normal(img.shape[:2], dtype=np.float32)[..., None] * np.float32(0.012)
    out = cv2.convertScaleAbs(img, alpha=255.0)     # saturating float -> uint8
    return cv2.cvtColor(out, cv2.COLOR_RGB2BGR)
