"""Parametric animal outlines for the synthetic scene generator.

Each family function turns a parameter dict into a list of primitives in body
coordinates: the animal's length runs along x from about -1 (tail) to +1
(head), y points down. A primitive is ("poly", part, points) or
("line", part, points, thickness in body units); later primitives paint over
earlier ones. Parts pick the colour: BODY carries the class pattern.
"""
import numpy as np

BODY, FIN, BELLY, DARK, ACCENT, LIGHT = 1, 2, 3, 4, 5, 6
N_PARTS = 7


def ellipse(cx, cy, rx, ry, n=24, a0=0.0, a1=2 * np.pi):
    a = np.linspace(a0, a1, n, endpoint=a1 - a0 < 2 * np.pi - 1e-9)
    return np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], 1)


def tube(center, widths):
    """Polygon around a centreline with a half-width per point (rounded by the caller's ends)."""
    center = np.asarray(center, float)
    d = np.gradient(center, axis=0)
    d /= np.linalg.norm(d, axis=1, keepdims=True) + 1e-9
    normal = np.stack([-d[:, 1], d[:, 0]], 1) * np.asarray(widths, float)[:, None]
    return np.concatenate([center + normal, (center - normal)[::-1]])


def curve(x0, y0, x1, y1, bend=0.0, n=10):
    """Points on a quadratic curve from (x0, y0) to (x1, y1), bowed sideways by `bend`."""
    t = np.linspace(0, 1, n)[:, None]
    p0, p1 = np.array([x0, y0]), np.array([x1, y1])
    mid = (p0 + p1) / 2 + bend * np.array([-(y1 - y0), x1 - x0])
    return (1 - t) ** 2 * p0 + 2 * t * (1 - t) * mid + t ** 2 * p1


def mirror(points):
    return np.asarray(points, float) * np.array([1.0, -1.0])


def fish_profile(H, hump=0.0, belly=1.0, blunt=0.75, ped=0.25, n=24):
    """(x, top y, bottom y) of a fish body from the tail peduncle (x=-0.6) to the nose (x=1)."""
    t = np.linspace(0, 1, n)
    x = -0.6 + 1.6 * t
    h = H * (ped * (1 - t) + (1 - ped) * np.sin(np.pi * t ** 0.9) ** blunt)
    top = -h - hump * H * np.exp(-((t - 0.8) / 0.12) ** 2)
    return x, top, h * belly


def _tail(kind, ped, T):
    x0 = -0.58
    shapes = {
        "forked": [(x0, -ped), (-1.0, -T), (-0.8, 0), (-1.0, T), (x0, ped)],
        "lunate": [(x0, -ped), (-1.0, -1.3 * T), (-0.86, 0), (-1.0, 1.3 * T), (x0, ped)],
        "truncate": [(x0, -ped), (-0.92, -T), (-0.9, 0), (-0.92, T), (x0, ped)],
        "hetero": [(x0, -ped), (-1.0, -1.3 * T), (-0.84, -0.1 * T), (-0.9, 0.6 * T), (x0, ped)],
    }
    if kind == "round":
        return np.concatenate([[(x0, -ped)], ellipse(-0.62, 0, 0.32, T, 16, 0.6 * np.pi, 1.4 * np.pi), [(x0, ped)]])
    return np.array(shapes[kind], float)


def fish(p):
    """Bony fish and sharks, side view: body, tail, dorsal/anal/pectoral fins, eye, snout extras."""
    H = p["H"]
    x, top, bot = fish_profile(H, p.get("hump", 0.0), p.get("belly", 1.0), p.get("blunt", 0.75))
    ped = 0.25 * H
    prims = [("poly", FIN, _tail(p.get("tail", "forked"), ped, p.get("T", 0.9) * H))]
    dorsal = p.get("dorsal", "long")
    i0, i1 = 6, 16
    if dorsal == "tri":
        prims.append(("poly", FIN, np.array([(x[12], top[12] + 0.1 * H), (x[9] - 0.05, top[9] - p.get("D", 0.9) * H),
                                             (x[8], top[8] + 0.1 * H)])))
        if p.get("second_dorsal"):
            prims.append(("poly", FIN, np.array([(x[5], top[5] + 0.05), (x[3] - 0.05, top[3] - 0.45 * H),
                                                 (x[3], top[3] + 0.05)])))
    elif dorsal in ("long", "spiny"):
        xs, ts = x[i0:i1], top[i0:i1]
        lift = np.full(len(xs), 0.35 * H)
        if dorsal == "spiny":
            lift[::2] *= 1.8
        prims.append(("poly", FIN, np.concatenate([np.stack([xs, ts + 0.05], 1)[::-1],
                                                   np.stack([xs, ts - lift], 1)])))
    prims.append(("poly", FIN, np.array([(x[9], bot[9] - 0.05), (x[5], bot[5] + 0.45 * H), (x[4], bot[4] - 0.05)])))
    snout = p.get("snout")
    if snout == "saw":
        prims.append(("poly", LIGHT, np.array([(0.9, -0.03), (1.55, -0.025), (1.55, 0.025), (0.9, 0.03)])))
        for sx in np.linspace(1.0, 1.5, 7):
            prims.append(("line", LIGHT, np.array([(sx, -0.08), (sx, 0.08)]), 0.012))
    if snout == "hammer":
        prims.append(("poly", BODY, np.array([(0.8, -0.36), (0.94, -0.36), (0.94, 0.36), (0.8, 0.36)])))
        prims.append(("poly", DARK, ellipse(0.87, -0.33, 0.035, 0.035, 8)))
    body = np.concatenate([np.stack([x, top], 1), np.stack([x, bot], 1)[::-1]])
    prims.append(("poly", BODY, body))
    if p.get("belly_part"):
        prims.append(("poly", BELLY, np.concatenate([np.stack([x, bot * 0.2], 1), np.stack([x, bot], 1)[::-1]])))
    pect = np.array([(0.45, 0.1 * H), (0.1, 0.45 * H + p.get("pect", 0.0)), (0.3, 0.05 * H)])
    prims.append(("poly", FIN, pect))
    if p.get("tips"):
        prims.append(("poly", DARK, np.array([(x[9] - 0.05, top[9] - 0.9 * H), (x[9] - 0.02, top[9] - 0.55 * H),
                                              (x[9] + 0.08, top[9] - 0.55 * H)])))
        prims.append(("poly", DARK, np.array([(-1.0, -1.3 * 0.9 * H), (-0.93, -0.85 * H), (-0.88, -0.95 * H)])))
    if p.get("gills"):
        for gx in np.linspace(0.55, 0.7, 4):
            prims.append(("line", DARK, np.array([(gx, -0.35 * H), (gx - 0.03, 0.3 * H)]), 0.008))
    if snout == "beak":
        prims.append(("poly", LIGHT, np.array([(0.93, -0.12 * H), (1.04, 0.0), (0.93, 0.12 * H)])))
    eye_r = p.get("eye", 0.05)
    prims.append(("poly", LIGHT, ellipse(0.8, -0.32 * H, eye_r * 1.5, eye_r * 1.5, 12)))
    prims.append(("poly", DARK, ellipse(0.8, -0.32 * H, eye_r, eye_r, 12)))
    return prims


def turtle(p):
    """Sea turtle from above: flippers, head, patterned shell."""
    hs = p.get("head", 0.16)
    prims = []
    for s in (-1, 1):
        front = curve(0.25, 0.25 * s, -0.15, 0.95 * s, bend=-0.25 * s, n=10)
        prims.append(("poly", FIN, tube(front, np.linspace(0.11, 0.03, 10))))
        prims.append(("poly", FIN, tube(curve(-0.4, 0.25 * s, -0.7, 0.5 * s, 0.1 * s, 6), np.linspace(0.08, 0.03, 6))))
    prims.append(("poly", FIN, np.array([(-0.5, -0.05), (-0.82, 0.0), (-0.5, 0.05)])))
    prims.append(("poly", FIN, ellipse(0.62 + hs, 0, hs * 1.3, hs, 16)))
    prims.append(("poly", DARK, ellipse(0.7 + hs, -0.6 * hs, 0.03, 0.03, 8)))
    prims.append(("poly", DARK, ellipse(0.7 + hs, 0.6 * hs, 0.03, 0.03, 8)))
    shell = ellipse(0.0, 0, 0.62, 0.46, 32)
    if p.get("pointed"):
        shell[:, 0] -= 0.15 * np.clip(-shell[:, 0], 0, None)
    prims.append(("poly", LIGHT, shell * 1.05))
    prims.append(("poly", BODY, shell))
    return prims


def ray(p):
    """Manta, eagle ray, stingray from above: wing disc, cephalic lobes or head, tail."""
    kind = p["kind"]
    prims = [("line", FIN, np.array([(-0.4, 0), (-p.get("tail", 1.0), 0.0)]), 0.025)]
    if kind == "disc":
        prims.append(("poly", BODY, ellipse(0.05, 0, 0.55, 0.5, 32)))
    else:
        span, back = p.get("span", 1.1), p.get("back", 0.2)
        half = [(0.5, 0.0), (0.35, 0.3), (-0.05 - back, span), (-0.22 - back, span - 0.12), (-0.45, 0.22), (-0.5, 0.0)]
        prims.append(("poly", BODY, np.concatenate([np.array(half), mirror(half[::-1])])))
    if kind == "manta":
        for s in (-1, 1):
            prims.append(("poly", DARK, ellipse(0.58, 0.17 * s, 0.14, 0.05, 12)))
            prims.append(("poly", LIGHT, ellipse(0.05, 0.38 * s, 0.2, 0.12, 16)))
    if kind == "eagle":
        prims.append(("poly", BODY, ellipse(0.6, 0, 0.2, 0.11, 16)))
    prims.append(("poly", DARK, ellipse(0.42, -0.1, 0.03, 0.03, 8)))
    prims.append(("poly", DARK, ellipse(0.42, 0.1, 0.03, 0.03, 8)))
    return prims


def star(p):
    """Sea stars from above: n arms around a disc; crown-of-thorns adds spines."""
    n, inner = p["arms"], p["inner"]
    a = np.linspace(0, 2 * np.pi, 2 * n, endpoint=False)
    r = np.where(np.arange(2 * n) % 2 == 0, 1.0, inner)
    pts = np.stack([r * np.cos(a), r * np.sin(a)], 1)
    prims = []
    if p.get("spines"):
        for ang in np.linspace(0, 2 * np.pi, 3 * n, endpoint=False):
            c, s = np.cos(ang), np.sin(ang)
            prims.append(("line", LIGHT, np.array([(0.3 * c, 0.3 * s), (1.1 * c, 1.1 * s)]), 0.02))
    prims.append(("poly", BODY, pts))
    return prims


def urchin(p):
    """Sea urchin: a dark test with radiating spines."""
    prims = []
    for i, ang in enumerate(np.linspace(0, 2 * np.pi, 40, endpoint=False)):
        length = 0.75 + 0.25 * ((i * 7) % 5) / 4
        prims.append(("line", FIN, np.array([(0, 0), (length * np.cos(ang), length * np.sin(ang))]), 0.022))
    prims.append(("poly", BODY, ellipse(0, 0, 0.42, 0.42, 24)))
    return prims


def clam(p):
    """Giant clam from above: fluted shell rim, patterned mantle."""
    a = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    r = 1.0 + 0.08 * np.cos(10 * a)
    shell = np.stack([r * 0.95 * np.cos(a), r * 0.55 * np.sin(a)], 1)
    mantle = np.stack([0.8 * np.cos(a), 0.3 * np.sin(a) * (1 + 0.15 * np.cos(7 * a))], 1)
    return [("poly", FIN, shell), ("poly", BODY, mantle), ("line", DARK, np.array([(-0.6, 0), (0.6, 0)]), 0.03)]


def bird(p):
    """Penguin or puffin swimming, side view: torpedo body, flipper, beak, feet."""
    x, top, bot = fish_profile(p["H"], blunt=0.6, ped=0.08)
    x = x * 0.9
    prims = [("poly", ACCENT, np.array([(-0.55, 0.0), (-0.85, -0.12), (-0.85, 0.12)]))]
    prims.append(("poly", BODY, np.concatenate([np.stack([x, top], 1), np.stack([x, bot], 1)[::-1]])))
    prims.append(("poly", BELLY, np.concatenate([np.stack([x, bot * 0.1], 1), np.stack([x, bot], 1)[::-1]])))
    if p.get("face"):
        prims.append(("poly", BELLY, ellipse(0.72, -0.02, 0.14, 0.1, 16)))
    prims.append(("poly", FIN, tube(curve(0.3, -0.02, -0.25, 0.3, 0.1, 8), np.linspace(0.07, 0.02, 8))))
    beak = p.get("beak", 0.15)
    prims.append(("poly", ACCENT, np.array([(0.85, -0.5 * beak), (0.85 + beak * 1.4, 0.02), (0.85, 0.5 * beak)])))
    prims.append(("poly", DARK, ellipse(0.75, -0.07, 0.025, 0.025, 8)))
    return prims


def mammal(p):
    """Sea lion or dugong, side view: a tapering tube with flippers and a tail or fluke."""
    H = p["H"]
    t = np.linspace(0, 1, 16)
    center = np.stack([-0.75 + 1.6 * t, p.get("arch", 0.1) * np.sin(np.pi * t)], 1)
    widths = H * (0.35 + 0.65 * np.sin(np.pi * (0.1 + 0.8 * t)) ** 0.7) * np.where(t > 0.85, 0.75, 1.0)
    prims = []
    if p.get("fluke"):
        prims.append(("poly", FIN, np.array([(-0.7, 0.0), (-1.0, -0.32), (-0.9, 0.0), (-1.0, 0.32)])))
    else:
        for s in (-1, 1):
            prims.append(("poly", FIN, np.array([(-0.7, 0.0), (-1.0, 0.22 * s - 0.05), (-0.95, 0.1 * s)])))
    prims.append(("poly", BODY, tube(center, widths)))
    prims.append(("poly", FIN, tube(curve(0.45, 0.1, 0.2, 0.55, -0.1, 8), np.linspace(0.08, 0.04, 8))))
    prims.append(("poly", BODY, ellipse(0.85, p.get("snout_y", 0.0), 0.14, 0.12, 16)))
    prims.append(("poly", DARK, ellipse(0.8, -0.06, 0.03, 0.03, 8)))
    return prims


def octopus(p):
    """Octopus: mantle and eight curling arms trailing behind."""
    prims = []
    for i, s in enumerate(np.linspace(-1, 1, 8)):
        n = 14
        t = np.linspace(0, 1, n)
        arm = np.stack([0.25 - 1.2 * t, 0.25 * s + 0.55 * s * t + 0.12 * np.sin(6 * t + i)], 1)
        prims.append(("poly", FIN, tube(arm, np.linspace(0.08, 0.015, n))))
    prims.append(("poly", BODY, ellipse(0.5, 0, 0.45, 0.32, 24)))
    prims.append(("poly", LIGHT, ellipse(0.2, -0.2, 0.06, 0.05, 10)))
    prims.append(("poly", DARK, ellipse(0.2, -0.2, 0.03, 0.03, 8)))
    return prims


def cuttlefish(p):
    """Cuttlefish from the side: fin skirt, mantle, head with short arms."""
    prims = [("poly", FIN, ellipse(-0.05, 0, 0.78, 0.36, 28))]
    for s in np.linspace(-0.12, 0.12, 4):
        prims.append(("poly", BODY, tube(curve(0.6, s, 1.0, s * 1.5, 0.2 * s, 6), np.linspace(0.05, 0.015, 6))))
    prims.append(("poly", BODY, ellipse(-0.05, 0, 0.7, 0.27, 28)))
    prims.append(("poly", BODY, ellipse(0.62, 0, 0.15, 0.17, 16)))
    prims.append(("poly", LIGHT, ellipse(0.62, -0.08, 0.05, 0.04, 10)))
    prims.append(("poly", DARK, ellipse(0.62, -0.08, 0.05, 0.015, 10)))
    return prims


def lobster(p):
    """Spiny lobster from above: antennae, legs, carapace, segmented tail, tail fan."""
    prims = []
    for s in (-1, 1):
        prims.append(("line", FIN, curve(0.7, 0.06 * s, 1.35, 0.45 * s, -0.15 * s, 10), 0.025))
        for lx in np.linspace(0.15, 0.55, 4):
            prims.append(("line", FIN, np.array([(lx, 0.05 * s), (lx - 0.05, 0.3 * s), (lx - 0.2, 0.38 * s)]), 0.018))
    prims.append(("poly", FIN, np.array([(-0.75, 0.0), (-1.0, -0.28), (-1.02, 0.0), (-1.0, 0.28)])))
    for i, sx in enumerate(np.linspace(-0.7, -0.05, 6)):
        prims.append(("poly", BODY if i % 2 else LIGHT, ellipse(sx, 0, 0.09, 0.15 - 0.01 * (5 - i), 12)))
    prims.append(("poly", BODY, ellipse(0.38, 0, 0.38, 0.19, 24)))
    return prims


def jellyfish(p):
    """Jellyfish, upright: bell, frilly oral arms, thin tentacles."""
    prims = []
    for s in np.linspace(-0.4, 0.4, 6):
        prims.append(("line", FIN, np.stack([s + 0.06 * np.sin(np.linspace(0, 7, 10) + s * 5),
                                             np.linspace(-0.1, p.get("tent", 1.0), 10)], 1), 0.015))
    for s in (-0.12, 0.0, 0.12):
        t = np.linspace(0, 1, 10)
        arm = np.stack([s + 0.08 * np.sin(8 * t + s * 10), -0.15 + 0.75 * t], 1)
        prims.append(("poly", ACCENT, tube(arm, np.linspace(0.07, 0.03, 10))))
    bell = ellipse(0, -0.15, 0.55, 0.55 * p.get("dome", 1.0), 28, np.pi, 2 * np.pi)
    prims.append(("poly", BODY, np.concatenate([bell, [(0.55, -0.05), (-0.55, -0.05)]])))
    return prims


def eel(p):
    """Moray eel: a long sinuous body with a big head."""
    t = np.linspace(0, 1, 28)
    center = np.stack([-1.0 + 2.0 * t, p.get("wave", 0.15) * np.sin(2.5 * np.pi * t)], 1)
    widths = 0.1 * np.clip(0.15 + 1.2 * t, 0, 1) * np.where(t > 0.93, 0.7, 1.0)
    prims = [("poly", BODY, tube(center, widths))]
    prims.append(("poly", DARK, ellipse(0.9, center[-2, 1] - 0.04, 0.025, 0.025, 8)))
    prims.append(("line", DARK, np.array([(0.88, center[-2, 1] + 0.04), (1.0, center[-1, 1] + 0.02)]), 0.01))
    return prims


def crab(p):
    """Crab from above: wide carapace, eight legs, two claws, eye stalks."""
    prims = []
    for s in (-1, 1):
        for lx in np.linspace(-0.35, 0.2, 4):
            prims.append(("line", FIN, np.array([(lx, 0.3 * s), (lx - 0.1, 0.75 * s), (lx - 0.3, 0.95 * s)]), 0.05))
        prims.append(("line", FIN, np.array([(0.2, 0.35 * s), (0.55, 0.55 * s)]), 0.07))
        prims.append(("poly", ACCENT, ellipse(0.72, 0.5 * s, 0.22, 0.13, 16)))
        prims.append(("poly", DARK, ellipse(0.5, 0.12 * s, 0.04, 0.04, 8)))
    prims.append(("poly", BODY, ellipse(0.0, 0, 0.45, 0.55, 28)))
    return prims


def cucumber(p):
    """Sea cucumber: a plump curved sausage with papillae."""
    t = np.linspace(0, 1, 16)
    center = np.stack([-0.9 + 1.8 * t, 0.12 * np.sin(np.pi * t)], 1)
    widths = p.get("W", 0.24) * np.sin(np.pi * (0.04 + 0.92 * t)) ** 0.3
    return [("poly", BODY, tube(center, widths))]


def seahorse(p):
    """Seahorse, upright: S-shaped body, snout, curled tail, small dorsal fin."""
    center = np.array([(0.0, -0.78), (0.1, -0.5), (0.02, -0.2), (0.1, 0.15), (0.04, 0.45),
                       (-0.1, 0.65), (-0.08, 0.82), (0.08, 0.86), (0.12, 0.74)])
    widths = np.array([0.13, 0.2, 0.24, 0.22, 0.13, 0.08, 0.06, 0.05, 0.04])
    prims = [("poly", FIN, ellipse(-0.14, 0.05, 0.1, 0.12, 12))]
    prims.append(("poly", BODY, tube(center, widths)))
    prims.append(("poly", BODY, tube(np.array([(0.0, -0.82), (0.2, -0.78), (0.42, -0.74)]), [0.1, 0.05, 0.04])))
    prims.append(("poly", DARK, ellipse(0.05, -0.85, 0.035, 0.035, 8)))
    return prims


FAMILIES = {
    "fish": fish, "turtle": turtle, "ray": ray, "star": star, "urchin": urchin, "clam": clam, "bird": bird,
    "mammal": mammal, "octopus": octopus, "cuttlefish": cuttlefish, "lobster": lobster,
    "jellyfish": jellyfish, "eel": eel, "crab": crab, "cucumber": cucumber, "seahorse": seahorse,
}
