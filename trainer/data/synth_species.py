"""Per-class appearance of synthetic animals and how one is rasterized.

Every taxonomy class gets a fixed parameter set: a shape family with its
parameters, a view (side, top, upright), a body pattern and a palette. The 36
packaged classes are written out below so each looks like its species and
differs from the others; a class name not listed (a custom taxonomy) gets a
parameter set derived from its id, so generation never fails for lack of art.
"""
import cv2
import numpy as np

from trainer.data import synth_shapes as shapes
from trainer.data.synth_shapes import BODY, N_PARTS

# Palette entries, RGB in 0..1: body, pattern, fin, belly, dark, accent, light.
_PART_KEYS = ("body", "fin", "belly", "dark", "accent", "light")
_BASE = {"fin": None, "belly": None, "dark": (0.05, 0.05, 0.06), "accent": (0.95, 0.55, 0.1), "light": (0.9, 0.9, 0.85)}


def _sp(family, view, pattern, body, pat=(0, 0, 0), freq=4.0, size=1.0, alpha=1.0, shade=0.3, **kw):
    params = {k: v for k, v in kw.items() if k not in _PART_KEYS}
    colours = dict(_BASE, body=body, **{k: v for k, v in kw.items() if k in _PART_KEYS})
    colours["fin"] = colours["fin"] or tuple(0.8 * c for c in body)
    colours["belly"] = colours["belly"] or tuple(min(1.0, 0.4 + c) for c in body)
    return {"family": family, "view": view, "pattern": pattern, "pattern_colour": pat, "freq": freq,
            "size": size, "alpha": alpha, "shade": shade, "params": params, "colours": colours}


SPECIES = {
    "green_turtle": _sp("turtle", "top", "scutes", (0.45, 0.5, 0.25), (0.25, 0.28, 0.12), 3.0, fin=(0.6, 0.6, 0.4)),
    "hawksbill_turtle": _sp("turtle", "top", "mottled", (0.65, 0.4, 0.15), (0.25, 0.12, 0.05), 7.0, pointed=True,
                            fin=(0.5, 0.35, 0.2), light=(0.95, 0.8, 0.5)),
    "loggerhead_turtle": _sp("turtle", "top", "plain", (0.7, 0.32, 0.18), head=0.27, fin=(0.85, 0.65, 0.4)),
    "whale_shark": _sp("fish", "side", "spotgrid", (0.18, 0.25, 0.38), (0.9, 0.92, 0.95), 9.0, size=1.3,
                       H=0.21, tail="hetero", dorsal="tri", blunt=0.35, belly_part=True, second_dorsal=True,
                       belly=(0.85, 0.87, 0.9)),
    "hammerhead_shark": _sp("fish", "side", "plain", (0.55, 0.53, 0.45), H=0.17, tail="hetero", dorsal="tri", D=1.4,
                            snout="hammer", belly_part=True, belly=(0.85, 0.83, 0.78), gills=True),
    "reef_shark": _sp("fish", "side", "plain", (0.45, 0.47, 0.5), H=0.19, tail="hetero", dorsal="tri", tips=True,
                      belly_part=True, belly=(0.95, 0.95, 0.95), gills=True),
    "shark": _sp("fish", "side", "plain", (0.35, 0.45, 0.6), H=0.15, tail="hetero", dorsal="tri", D=0.7,
                 eye=0.035, second_dorsal=True),
    "manta_ray": _sp("ray", "top", "plain", (0.08, 0.08, 0.1), kind="manta", span=1.25, back=0.25, tail=0.7,
                     fin=(0.1, 0.1, 0.12), light=(0.85, 0.85, 0.85), size=1.2),
    "eagle_ray": _sp("ray", "top", "spots", (0.15, 0.17, 0.25), (0.95, 0.95, 0.9), 8.0, kind="eagle", span=1.0,
                     back=0.35, tail=1.7),
    "stingray": _sp("ray", "top", "mottled", (0.72, 0.62, 0.45), (0.5, 0.42, 0.3), 5.0, kind="disc", tail=1.3,
                    shade=0.0),
    "sawfish": _sp("fish", "side", "plain", (0.55, 0.5, 0.32), H=0.13, tail="hetero", dorsal="tri", D=0.8,
                   snout="saw", second_dorsal=True, light=(0.75, 0.7, 0.55)),
    "humphead_wrasse": _sp("fish", "side", "wavy", (0.18, 0.55, 0.5), (0.08, 0.25, 0.35), 6.0, size=1.2, H=0.38,
                           hump=0.35, tail="round", dorsal="long", fin=(0.2, 0.45, 0.35)),
    "giant_grouper": _sp("fish", "side", "mottled", (0.3, 0.28, 0.22), (0.62, 0.58, 0.35), 6.0, size=1.3, H=0.36,
                         tail="round", dorsal="spiny", blunt=0.5, fin=(0.6, 0.55, 0.2)),
    "dugong": _sp("mammal", "side", "plain", (0.55, 0.52, 0.5), H=0.24, fluke=True, snout_y=0.1, arch=0.05),
    "seahorse": _sp("seahorse", "upright", "hbands", (0.95, 0.75, 0.15), (0.6, 0.35, 0.05), 9.0, size=0.85,
                    shade=0.0),
    "crown_of_thorns_starfish": _sp("star", "top", "spots", (0.55, 0.2, 0.45), (0.85, 0.45, 0.3), 14.0, arms=14,
                                    inner=0.6, spines=True, light=(0.9, 0.6, 0.5), shade=0.0),
    "giant_clam": _sp("clam", "top", "spots", (0.1, 0.45, 0.65), (0.4, 0.9, 0.8), 12.0, fin=(0.75, 0.72, 0.65),
                      shade=0.0),
    "penguin": _sp("bird", "side", "plain", (0.08, 0.08, 0.1), H=0.26, belly=(0.95, 0.95, 0.95), beak=0.1,
                   fin=(0.1, 0.1, 0.12), accent=(0.2, 0.2, 0.2)),
    "sea_lion": _sp("mammal", "side", "plain", (0.45, 0.3, 0.18), H=0.2, arch=0.15, fin=(0.3, 0.2, 0.12)),
    "bumphead_parrotfish": _sp("fish", "side", "plain", (0.3, 0.42, 0.42), size=1.2, H=0.4, hump=0.6, blunt=0.4,
                               tail="lunate", dorsal="long", snout="beak", light=(0.85, 0.8, 0.6)),
    "grouper": _sp("fish", "side", "spots", (0.75, 0.6, 0.45), (0.5, 0.12, 0.08), 10.0, H=0.32, tail="round",
                   dorsal="spiny", blunt=0.55),
    "snapper": _sp("fish", "side", "plain", (0.9, 0.3, 0.3), H=0.3, tail="forked", dorsal="spiny", belly_part=True,
                   belly=(0.98, 0.75, 0.7), fin=(0.95, 0.45, 0.35)),
    "parrotfish": _sp("fish", "side", "scales", (0.15, 0.75, 0.55), (0.9, 0.45, 0.65), 10.0, H=0.33, tail="lunate",
                      dorsal="long", snout="beak", fin=(0.3, 0.5, 0.9), light=(0.95, 0.9, 0.8)),
    "octopus": _sp("octopus", "top", "mottled", (0.7, 0.3, 0.22), (0.45, 0.15, 0.1), 8.0, fin=(0.75, 0.4, 0.3)),
    "cuttlefish": _sp("cuttlefish", "side", "zebra", (0.65, 0.55, 0.45), (0.2, 0.16, 0.13), 8.0,
                      fin=(0.85, 0.8, 0.7)),
    "lobster": _sp("lobster", "top", "spots", (0.6, 0.25, 0.15), (0.95, 0.85, 0.6), 9.0, fin=(0.85, 0.6, 0.35),
                   light=(0.5, 0.2, 0.12), shade=0.0),
    "jellyfish": _sp("jellyfish", "upright", "radial", (0.85, 0.7, 0.85), (0.6, 0.3, 0.55), 8.0, alpha=0.6,
                     fin=(0.9, 0.85, 0.95), accent=(0.9, 0.6, 0.8), shade=-0.3),
    "puffin": _sp("bird", "side", "plain", (0.1, 0.1, 0.12), H=0.22, face=True, beak=0.24, belly=(0.95, 0.95, 0.92),
                  accent=(0.95, 0.35, 0.1), size=0.7),
    "moray_eel": _sp("eel", "side", "reticulated", (0.75, 0.68, 0.25), (0.2, 0.18, 0.1), 14.0, size=1.2, shade=0.0),
    "fish": _sp("fish", "side", "plain", (0.62, 0.66, 0.7), H=0.24, tail="forked", dorsal="tri", D=0.6,
                belly_part=True, belly=(0.9, 0.92, 0.95), fin=(0.5, 0.55, 0.6), size=0.8),
    "starfish": _sp("star", "top", "spots", (0.95, 0.45, 0.1), (0.75, 0.25, 0.05), 12.0, arms=5, inner=0.35,
                    shade=0.0, size=0.7),
    "crab": _sp("crab", "top", "plain", (0.8, 0.2, 0.1), fin=(0.85, 0.35, 0.2), accent=(0.9, 0.3, 0.15), size=0.7,
                shade=0.0),
    "sea_urchin": _sp("urchin", "top", "plain", (0.2, 0.08, 0.25), fin=(0.08, 0.03, 0.1), shade=0.0, size=0.6),
    "sea_cucumber": _sp("cucumber", "top", "spots", (0.3, 0.2, 0.12), (0.7, 0.5, 0.2), 12.0, shade=0.0, size=0.8),
    "damselfish": _sp("fish", "side", "vbars", (0.95, 0.95, 0.92), (0.05, 0.05, 0.06), 2.5, H=0.5, tail="forked",
                      dorsal="long", blunt=0.5, fin=(0.2, 0.2, 0.2), size=0.5),
    "wrasse": _sp("fish", "side", "midstripe", (0.35, 0.6, 0.95), (0.03, 0.03, 0.05), 1.0, H=0.17, tail="truncate",
                  dorsal="long", fin=(0.3, 0.5, 0.85), size=0.6),
}

_FALLBACK_FAMILIES = ("fish", "ray", "star", "crab", "eel", "cucumber")
_FALLBACK_PATTERNS = ("plain", "spots", "vbars", "hstripes", "mottled", "wavy")


def species_spec(class_id, name=None):
    """The fixed appearance of a class: the packaged table, or one derived from the id."""
    if name in SPECIES:
        return SPECIES[name]
    rng = np.random.default_rng(10007 + int(class_id))
    family = _FALLBACK_FAMILIES[class_id % len(_FALLBACK_FAMILIES)]
    params = {"fish": {"H": float(rng.uniform(0.18, 0.45)), "tail": str(rng.choice(["forked", "round", "lunate"]))},
              "ray": {"kind": "disc", "tail": 1.2}, "star": {"arms": int(rng.integers(5, 9)), "inner": 0.4},
              }.get(family, {})
    view = "side" if family in ("fish", "eel") else "top"
    return _sp(family, view, _FALLBACK_PATTERNS[(class_id // 6) % 6], tuple(rng.uniform(0.1, 0.95, 3)),
               tuple(rng.uniform(0.0, 0.5, 3)), float(rng.uniform(3, 10)), **params)


def pattern_mask(kind, u, v, freq, phase):
    """Where the class pattern colour replaces the body colour, from body coordinates u (length), v."""
    f = freq * np.pi
    if kind == "plain":
        return None
    if kind == "vbars":
        return np.sin(f * u + phase) > 0.3
    if kind == "hbands":
        return np.sin(f * v + phase) > 0.2
    if kind == "hstripes":
        return np.sin(f * v * 3 + phase) > 0.4
    if kind == "midstripe":
        return np.abs(v + 0.01 * np.sin(6 * u)) < 0.045
    if kind in ("spots", "spotgrid"):
        a, b = f * u / np.pi, f * v / np.pi
        row = np.floor(b)
        cu, cv = (a + 0.5 * row + phase) % 1.0 - 0.5, b % 1.0 - 0.5
        spots = cu * cu + cv * cv < 0.06
        if kind == "spotgrid":
            spots |= (np.abs(np.sin(f * u * 0.5)) < 0.12) & (np.sin(f * v * 0.7) > 0)
        return spots
    if kind == "mottled":
        return np.sin(f * u + phase) * np.sin(f * 0.8 * v - phase) + 0.5 * np.sin(f * 1.7 * (u + v)) > 0.35
    if kind == "wavy":
        return np.sin(f * 2.5 * v + 1.5 * np.sin(f * u)) > 0.5
    if kind == "scales":
        return (np.abs(np.sin(f * (u + v))) < 0.25) | (np.abs(np.sin(f * (u - v))) < 0.25)
    if kind == "reticulated":
        return np.sin(f * u + np.sin(f * 0.7 * v)) * np.sin(f * v + phase) < -0.25
    if kind == "scutes":
        return (np.abs(np.sin(f * u)) < 0.18) | (np.abs(np.sin(f * v + np.pi / 2)) < 0.18)
    if kind == "zebra":
        return np.sin(f * u + 2.0 * np.sin(f * 0.5 * v) + phase) > 0.2
    if kind == "radial":
        return np.sin(freq * np.arctan2(v + 0.15, u)) > 0.5
    raise ValueError("unknown pattern %r" % kind)


def pose_matrix(cx, cy, scale, angle, flip):
    """2x3 affine from body coordinates to image pixels: flip x, scale, rotate, translate."""
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    fx = -1.0 if flip else 1.0
    return np.array([[c * fx, -s, cx], [s * fx, c, cy]])


def rasterize(prims, matrix, height, width):
    """(x0, y0, part map of the animal's box clipped to the image) or None when fully outside."""
    scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))
    moved, lo, hi = [], np.array([np.inf, np.inf]), np.array([-np.inf, -np.inf])
    for prim in prims:
        pts = prim[2] @ matrix[:, :2].T + matrix[:, 2]
        pad = prim[3] * scale if prim[0] == "line" else 0.0
        lo, hi = np.minimum(lo, pts.min(0) - pad - 1), np.maximum(hi, pts.max(0) + pad + 1)
        moved.append((prim, pts))
    x0, y0 = max(int(np.floor(lo[0])), 0), max(int(np.floor(lo[1])), 0)
    x1, y1 = min(int(np.ceil(hi[0])), width), min(int(np.ceil(hi[1])), height)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    parts = np.zeros((y1 - y0, x1 - x0), np.uint8)
    for prim, pts in moved:
        fixed = np.round((pts - (x0, y0)) * 16).astype(np.int32)   # 4 fractional bits
        if prim[0] == "poly":
            cv2.fillPoly(parts, [fixed], prim[1], cv2.LINE_8, 4)
        else:
            cv2.polylines(parts, [fixed], False, prim[1], max(1, int(round(prim[3] * scale))), cv2.LINE_8, 4)
    return x0, y0, parts


def paint(parts, x0, y0, matrix, spec, colours, phase):
    """RGB float32 colours for a part map: part palette, body pattern, top-down shading."""
    lut = np.asarray(colours, np.float32)
    rgb = lut[parts]
    inverse = cv2.invertAffineTransform(matrix)
    ys, xs = np.mgrid[y0:y0 + parts.shape[0], x0:x0 + parts.shape[1]].astype(np.float32)
    u = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    v = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    pattern = pattern_mask(spec["pattern"], u, v, spec["freq"], phase)
    if pattern is not None:
        rgb[pattern & (parts == BODY)] = lut[N_PARTS]
    if spec["shade"]:
        # Light comes from the surface: shade by image height within the animal, not body v.
        rows = np.linspace(-1, 1, parts.shape[0], dtype=np.float32)[:, None, None]
        rgb *= 1.0 - 0.5 * spec["shade"] * rows
    return rgb


def palette(spec, rng):
    """Per-instance colours (N_PARTS + pattern entry), jittered around the class palette."""
    c = spec["colours"]
    base = [(0, 0, 0), c["body"], c["fin"], c["belly"], c["dark"], c["accent"], c["light"], spec["pattern_colour"]]
    base = np.asarray(base, np.float32)
    gain = rng.uniform(0.85, 1.15) * rng.uniform(0.93, 1.07, 3)
    return np.clip(base * gain.astype(np.float32), 0, 1)


def primitives(spec):
    return shapes.FAMILIES[spec["family"]](spec["params"])
