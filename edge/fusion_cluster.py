"""The clustering loop of weighted boxes fusion (``edge.fusion``), with a grid of cluster centres.

1.0.9 clusters each label's boxes in descending score order: a box joins the
first cluster of highest IoU > iou_thr, whose fused box (the score-weighted
mean of its members, in float32) then moves, or starts a new cluster. We keep
that order and every value, and only skip clusters that provably cannot pass
the IoU test: per label, cluster centres sit in a uniform grid, and a box only
looks at the cells its centre window reaches.

The window. Let b be the box, c a cluster's fused box, w their widths and iw
their overlap in x (all exact). IoU > t implies iw * ih > t * area(b) >=
t * w_b * ih, so iw > t * w_b, and likewise iw > t * w_c. Since iw <= min(w_b,
w_c) and iw <= (w_b + w_c) / 2 - |centre distance|, a short case split on
which box is wider and on t <= 1/2 gives
    |cx_c - cx_b| < k * w_b,  k = (1 - t) * max(1, 1 / (2 t)),
and the same in y. We use t (1 - 1e-9) and add 1e-9 to the reach, which
covers float64 rounding of the centres and of 1.0.9's IoU. A cluster whose
centre is outside the window therefore has IoU <= t and can change neither
1.0.9's argmax nor its threshold test; the grid cell of a centre is
floor(centre * G), monotone in the centre, so every cell that can hold such a
centre is visited. Ties of equal IoU go to the lowest cluster index, as
numpy's argmax does. This needs t > 0 (else every overlap matches); a label
with a zero score (its 0/0 fused boxes are NaN and win argmax) or a label
float32 cannot hold (merged clusters never match again) goes through
``cluster_plain``, the same loop over all clusters with those rules.

Most boxes of a cluttered frame never share a cluster with anything; before
the loop, ``_alone`` finds boxes no other box of their label can ever match
or be matched by (vectorized), and ``_reached`` checks afterwards that no
merged cluster drifted near one of them. Their docstrings give the argument.
"""
import struct

import numpy as np

from edge import native

# 1.0.9 accumulates fused boxes in a float32 array; struct rounds four Python
# floats to float32 several times faster than numpy scalars do.
_F32X4 = struct.Struct("=4f")
_F32X1 = struct.Struct("=f")
_NEVER_MATCHED = (np.inf, np.inf, -np.inf, -np.inf, 0.0, np.inf, np.inf)
_MAX_CELLS = 48  # per axis; a finer grid costs more in empty cells than it saves
_MAX_PAIRS = 6  # rows in reach above which a row is not tested for being alone


class Clusters(object):
    """Per cluster, in 1.0.9's order (ascending first row): ``first``, the first
    member's row, and ``count``, its number of members; ``merged``, the indices of
    clusters of two or more boxes, with their ``values`` ((n_merged, 9): float32
    sums of s*x1, s*y1, s*x2, s*y2, the float64 sum of scores s, the fused x1,
    y1, x2, y2) and ``wsum`` (their members' weights summed in member order, in
    float64); ``row_cluster``, the cluster of every row. All numpy arrays.
    """

    __slots__ = ("first", "count", "merged", "values", "wsum", "row_cluster")

    def __init__(self, first, count, merged, values, wsum, row_cluster):
        self.first, self.count, self.merged = first, count, merged
        self.values, self.wsum, self.row_cluster = values, wsum, row_cluster


def reach_factor(iou_thr):
    """k of the centre window |cx_c - cx_b| < k * w_b that IoU > iou_thr needs (iou_thr > 0)."""
    t = iou_thr * (1 - 1e-9)
    return (1 - t) * max(1.0, 1 / (2 * t))


def cluster_rows(rows, groups, iou_thr, f32_divisor):
    """Cluster the rows of each label (row ranges ``groups``, rows sorted as 1.0.9 sorts them).

    ``f32_divisor``: the fused box is float32 sums / float32(sum of scores), as
    numpy < 2 divides a float32 array by a float64 scalar; else the division is in float64.
    With edge.native the grid loop runs in C (same loop, same values); labels
    with 1.0.9's oddities (see ``cluster_plain``) always take the Python loop.
    """
    seeds, merged = [], {}  # seed rows of looped clusters; seed row -> (members, values)
    fast = np.zeros(len(rows), dtype=bool)  # rows of labels the grid loop may take
    fast_groups = []
    for start, end in groups:
        label = rows[start, 0]
        exact = float(np.float32(label)) == label
        if iou_thr <= 0 or not exact or rows[end - 1, 1] == 0.0:
            cluster_plain(rows[start:end].tolist(), start, iou_thr, exact, f32_divisor, seeds, merged)
        else:
            fast[start:end] = True
            fast_groups += [start, end]
    if not fast_groups:
        return _ordered(rows, seeds, merged)
    kernels = native.active()
    if kernels is None:
        _cluster_fast(rows, groups, fast, iou_thr, f32_divisor, seeds, merged)
        return _ordered(rows, seeds, merged)
    found = kernels.wbf_cluster(rows, fast_groups, iou_thr, f32_divisor)
    if not seeds:
        return _from_native(*found)
    _native_to_python(fast, found, seeds, merged)  # rare: some label went the Python way
    return _ordered(rows, seeds, merged)


def _from_native(row_cluster, first, count, wsum, values):
    merged = np.flatnonzero(count > 1)
    return Clusters(first, count, merged, values[merged], wsum[merged], row_cluster)


def _native_to_python(fast, found, seeds, merged):
    """Add the native clusters to ``seeds`` and ``merged`` as the Python loops leave theirs."""
    row_cluster, first, count, _, values = found
    rows = np.flatnonzero(fast)
    by_cluster = rows[np.argsort(row_cluster[rows], kind="stable")].tolist()
    bounds = np.concatenate([[0], np.cumsum(count)]).tolist()
    seeds.extend(first.tolist())
    for ci in np.flatnonzero(count > 1).tolist():
        merged[int(first[ci])] = (by_cluster[bounds[ci]:bounds[ci + 1]], tuple(values[ci].tolist()))


def _ordered(rows, seeds, merged):
    """Clusters from the Python loops' seed rows and {seed row: (member rows, values)}."""
    first = np.sort(np.array(seeds, dtype=np.int64))
    keys = sorted(merged)
    where = np.searchsorted(first, keys).astype(np.int64) if keys else np.zeros(0, dtype=np.int64)
    count = np.ones(len(first), dtype=np.int64)
    row_cluster = np.empty(len(rows), dtype=np.int64)
    row_cluster[first] = np.arange(len(first))
    row_weight = rows[:, 2].tolist()
    wsum = np.empty(len(keys))
    for i, (ci, key) in enumerate(zip(where.tolist(), keys)):
        members = merged[key][0]
        count[ci] = len(members)
        row_cluster[members] = ci
        w = 0.0
        for j in members:  # in member order, as 1.0.9 sums them
            w += row_weight[j]
        wsum[i] = w
    values = np.array([merged[k][1] for k in keys], dtype=np.float64).reshape(-1, 9)
    return Clusters(first, count, where, values, wsum, row_cluster)


def _features(rows, iou_thr):
    """Per row as float64 arrays: centre, size and the centre window half-widths."""
    x1, y1, x2, y2 = rows[:, 4:].T
    w, h = x2 - x1, y2 - y1
    k = reach_factor(iou_thr)
    return (x1 + x2) * 0.5, (y1 + y2) * 0.5, w, h, k * w + 1e-9, k * h + 1e-9


def _cluster_fast(rows, groups, fast, iou_thr, f32_divisor, seeds, merged):
    """Rows that no other row of their label can ever share a cluster with are
    clusters of one; the grid loop clusters the rest. See ``_alone``.
    """
    feats = _features(rows, iou_thr)
    group = np.repeat(np.arange(len(groups)), [e - s for s, e in groups])
    looped = ~fast | ~_alone(group, feats, iou_thr, fast)
    while True:
        run = fast & looped
        seeds_run, merged_run = list(seeds), dict(merged)
        _run_grid(rows, groups, run, feats, iou_thr, f32_divisor, seeds_run, merged_run)
        late = _reached(group, feats, iou_thr, fast & ~looped, merged_run)
        if not late.any():
            break
        looped |= late  # rare: a merged cluster drifted near a lone row; redo with it in the loop
    seeds[:] = seeds_run + np.flatnonzero(fast & ~looped).tolist()
    merged.clear()
    merged.update(merged_run)


def _alone(group, feats, iou_thr, rows_mask):
    """Rows (of ``rows_mask``) with no row j of their label such that j's box, as a
    cluster of one, is in i's window (centre within k * size, IoU-size bounds) or i's in j's.

    Such a row i never joins a cluster of one box; ``_reached`` checks that no
    merged cluster reached it either. Pairs are enumerated from both rows with
    the union of both windows: a j in i's window or i in j's has its centre within
    K * w_i of i's, K = k / t, since sizes differ by less than 1 / t.
    Rows whose window spans more than two strips of height ``strip`` skip the
    enumeration and count as not alone; any partner finds them from its side.
    """
    cx, cy, w, h, rx, ry = feats
    t = iou_thr * (1 - 1e-9)
    margin = 1e-7
    kx, ky = rx / t + margin, ry / t + margin
    n = len(cx)
    alone = rows_mask.copy()
    idx = np.flatnonzero(rows_mask)
    if len(idx) < 2:
        return alone
    strip = min(max(2.0 * float(np.median(ky[idx])), 1e-3), 1.0)
    n_strips = int(1.0 / strip) + 1
    s_row = np.minimum((cy / strip).astype(np.int64), n_strips - 1)
    key = (group * n_strips + s_row) * 4.0 + cx
    s_lo = np.floor((cy - ky) / strip).astype(np.int64)
    s_hi = np.floor((cy + ky) / strip).astype(np.int64)
    wide = (s_hi - s_lo > 1) | (kx >= 1.0)
    query = idx[~wide[idx]]
    alone[idx[wide[idx]]] = False
    order = idx[np.argsort(key[idx], kind="stable")]
    sorted_key = key[order]
    lows, highs, owners = [], [], []
    for s in (s_lo[query], s_lo[query] + 1):
        ok = (s >= 0) & (s < n_strips) & (s <= s_hi[query])
        q = query[ok]
        base = (group[q] * n_strips + s[ok]) * 4.0 + cx[q]
        lows.append(np.searchsorted(sorted_key, base - kx[q], "left"))
        highs.append(np.searchsorted(sorted_key, base + kx[q], "right"))
        owners.append(q)
    low, count, owner = np.concatenate(lows), np.concatenate(highs), np.concatenate(owners)
    count -= low
    # A row with many rows in reach is hardly ever alone: count it as not alone
    # rather than pay for its pairs (its partners still test it from their side).
    crowded = count > _MAX_PAIRS
    alone[owner[crowded]] = False
    low, count, owner = low[~crowded], count[~crowded], owner[~crowded]
    total = int(count.sum())
    if total == 0:
        return alone
    i, j = _range_pairs(owner, low, count, order, total)
    near = _related(i, j, feats, t) & (i != j)
    alone[i[near]] = False
    alone[j[near]] = False
    return alone


def _range_pairs(owner, low, count, order, total):
    """(owner, candidate) pairs: owner[k] with order[low[k]:low[k] + count[k]], `total` = count.sum()."""
    start = np.cumsum(count) - count
    return np.repeat(owner, count), order[np.arange(total) - np.repeat(start - low, count)]


def _related(i, j, feats, t):
    """Whether j's point is in i's window or i's in j's, a little widened (so, conservative)."""
    cx, cy, w, h, rx, ry = feats
    lo, hi = t * (1 - 1e-9), 1 / (t * (1 - 1e-9))
    wi, wj, hi_, hj = w[i], w[j], h[i], h[j]
    return ((np.abs(cx[j] - cx[i]) < np.maximum(rx[i], rx[j])) & (np.abs(cy[j] - cy[i]) < np.maximum(ry[i], ry[j]))
            & (wj > lo * wi - 1e-9) & (wj < hi * wi + 1e-9) & (hj > lo * hi_ - 1e-9) & (hj < hi * hi_ + 1e-9))


def _reached(group, feats, iou_thr, lone, merged):
    """Lone rows whose window a merged cluster's fused box may have entered at some time.

    A fused box is the score-weighted mean of its members so far, so its
    centre and size lie within the members' (final) ranges, up to float32
    rounding: the sums carry a relative error below n * 2^-24 for n members,
    and the division and storing add two more roundings; we widen by 16 times that.
    """
    out = np.zeros(len(lone), dtype=bool)
    if not merged or not lone.any():
        return out
    cx, cy, w, h, rx, ry = feats
    members = list(merged.values())
    sizes = np.array([len(m) for m, _ in members])
    flat = np.concatenate([m for m, _ in members])
    starts = np.cumsum(sizes) - sizes
    delta = (sizes + 4) * 2.0 ** -20
    lo = [np.minimum.reduceat(v[flat], starts) - delta for v in (cx, cy, w, h)]
    hi = [np.maximum.reduceat(v[flat], starts) + delta for v in (cx, cy, w, h)]
    cgroup = group[flat[starts]]
    t = iou_thr * (1 - 1e-9)
    key = cgroup * 4.0 + lo[0]
    order = np.argsort(key)
    sorted_key = key[order]
    spread = float(np.max(hi[0] - lo[0]))
    b = np.flatnonzero(lone)
    base = group[b] * 4.0 + cx[b]
    low = np.searchsorted(sorted_key, base - rx[b] - spread - 1e-9, "left")
    count = np.searchsorted(sorted_key, base + rx[b] + 1e-9, "right") - low
    total = int(count.sum())
    if total == 0:
        return out
    i, c = _range_pairs(b, low, count, order, total)
    hit = ((lo[0][c] < cx[i] + rx[i]) & (hi[0][c] > cx[i] - rx[i]) & (lo[1][c] < cy[i] + ry[i])
           & (hi[1][c] > cy[i] - ry[i]) & (hi[2][c] > t * w[i] - 1e-9) & (lo[2][c] < w[i] / t + 1e-9)
           & (hi[3][c] > t * h[i] - 1e-9) & (lo[3][c] < h[i] / t + 1e-9) & (cgroup[c] == group[i]))
    out[i[hit]] = True
    return out


def _run_grid(rows, groups, run, feats, iou_thr, f32_divisor, seeds, merged):
    """The grid loop over the ``run`` rows of each label."""
    idx = np.flatnonzero(run)
    if len(idx) == 0:
        return
    cx, cy, w, h, rx, ry = (v[idx] for v in feats)
    # A cell about as wide as most windows: a window then spans at most 2 x 2 cells.
    n_cells = int(min(max(1.0 / max(2.0 * float(np.percentile(np.maximum(rx, ry), 75)), 1e-6), 1.0), _MAX_CELLS))
    top = n_cells - 1
    lox, hix, loy, hiy = cx - rx, cx + rx, cy - ry, cy + ry
    gx0, gx1 = np.clip((lox * n_cells).astype(np.int64), 0, top), np.clip((hix * n_cells).astype(np.int64), 0, top)
    gy0, gy1 = np.clip((loy * n_cells).astype(np.int64), 0, top), np.clip((hiy * n_cells).astype(np.int64), 0, top)
    nx, ny = gx1 - gx0 + 1, gy1 - gy0 + 1
    k0 = gx0 * n_cells + gy0
    never = n_cells * n_cells  # a cell that stays empty
    small = (nx <= 2) & (ny <= 2)
    q0 = np.where(small, k0, -1)
    q1 = np.where(ny == 2, k0 + 1, never)
    q2 = np.where(nx == 2, k0 + n_cells, never)
    q3 = np.where((nx == 2) & (ny == 2), k0 + n_cells + 1, never)
    own = np.minimum((cx * n_cells).astype(np.int64), top) * n_cells + np.minimum((cy * n_cells).astype(np.int64), top)
    floats = np.column_stack([rows[idx, 4:], w * h, cx, cy, lox, hix, loy, hiy, rows[idx, 1]]).tolist()
    ints = np.column_stack([idx, own, q0, q1, q2, q3, k0, nx, ny]).tolist()
    bounds = np.searchsorted(idx, [s for s, _ in groups] + [len(rows)]).tolist()
    for g in range(len(groups)):
        a, b = bounds[g], bounds[g + 1]
        if a < b:
            _cluster_grid(floats[a:b], ints[a:b], iou_thr, n_cells, f32_divisor, seeds, merged)


def _cluster_grid(floats, ints, iou_thr, n_cells, f32_divisor, seeds, merged):
    """1.0.9's loop over one label's rows, looking only at clusters whose centre can be in the window."""
    pack, unpack, pack1, unpack1 = _F32X4.pack, _F32X4.unpack, _F32X1.pack, _F32X1.unpack
    match, sums, first = [], [], []  # per cluster: match entry, float32 sums (None while alone), seed
    members = {}
    grid = [None] * (n_cells * n_cells + 1)
    top = n_cells - 1
    for (bx1, by1, bx2, by2, barea, bcx, bcy, lox, hix, loy, hiy, s), (row, own, q0, q1, q2, q3, k0, nx, ny) \
            in zip(floats, ints):
        best, idx = iou_thr, -1
        if q0 >= 0:
            c0, c1, c2, c3 = grid[q0], grid[q1], grid[q2], grid[q3]
            cells = (c0, c1, c2, c3) if (c0 or c1 or c2 or c3) else ()
        elif nx * ny > len(match):  # visiting the cells would cost more than all clusters
            cells = (range(len(match)),)
        else:
            cells = [grid[key] for kx in range(k0, k0 + nx * n_cells, n_cells) for key in range(kx, kx + ny)]
        for cell in cells:
            if not cell:
                continue
            for ci in cell:
                c = match[ci]
                if c[5] <= lox or c[5] >= hix or c[6] <= loy or c[6] >= hiy:
                    continue
                iw = (c[2] if c[2] < bx2 else bx2) - (c[0] if c[0] > bx1 else bx1)
                ih = (c[3] if c[3] < by2 else by2) - (c[1] if c[1] > by1 else by1)
                if iw <= 0 or ih <= 0:
                    continue
                inter = iw * ih
                iou = inter / (c[4] + barea - inter)
                # Cells come in any order; argmax keeps the lowest index on a tie.
                if iou > best or (iou == best and idx > ci):
                    best, idx = iou, ci
        if idx < 0:
            ci = len(match)
            match.append((bx1, by1, bx2, by2, barea, bcx, bcy, own, s))
            sums.append(None)
            first.append(row)
            cell = grid[own]
            if cell is None:
                grid[own] = [ci]
            else:
                cell.append(ci)
            continue
        st = sums[idx]
        c = match[idx]
        if st is None:  # a cluster's float32 sums start when it grows
            members[idx] = [first[idx], row]
            conf = c[8]
            a0, a1, a2, a3 = unpack(pack(conf * c[0], conf * c[1], conf * c[2], conf * c[3]))
        else:
            members[idx].append(row)
            a0, a1, a2, a3, conf = st
        a0, a1, a2, a3 = unpack(pack(a0 + s * bx1, a1 + s * by1, a2 + s * bx2, a3 + s * by2))
        conf += s
        sums[idx] = (a0, a1, a2, a3, conf)
        d = unpack1(pack1(conf))[0] if f32_divisor else conf
        f0, f1, f2, f3 = unpack(pack(a0 / d, a1 / d, a2 / d, a3 / d))
        cx, cy = (f0 + f2) * 0.5, (f1 + f3) * 0.5
        key = (int(cx * n_cells) if cx < 1 else top) * n_cells + (int(cy * n_cells) if cy < 1 else top)
        match[idx] = (f0, f1, f2, f3, (f2 - f0) * (f3 - f1), cx, cy, key)
        if key != c[7]:
            grid[c[7]].remove(idx)
            cell = grid[key]
            if cell is None:
                grid[key] = [idx]
            else:
                cell.append(idx)
    seeds.extend(first)
    for ci, m in members.items():
        merged[first[ci]] = (m, sums[ci] + match[ci][:4])


def cluster_plain(rows, offset, iou_thr, label_exact, f32_divisor, seeds, merged):
    """1.0.9's loop over one label against every cluster, with its two oddities.

    A zero-score cluster's 0/0 fused box is NaN, and numpy's argmax returns
    the first NaN before any IoU, so every later box joins it (until a
    positive score makes it finite again); a merged cluster of a label
    float32 cannot hold has another label and never matches again.
    """
    pack, unpack, pack1, unpack1 = _F32X4.pack, _F32X4.unpack, _F32X1.pack, _F32X1.unpack
    match, sums, members, nan_ids = [], [], [], []
    for j, (_, s, _, _, bx1, by1, bx2, by2) in enumerate(rows):
        barea = (bx2 - bx1) * (by2 - by1)
        best, idx = iou_thr, -1
        if nan_ids:
            idx = nan_ids[0]
        else:
            for ci, c in enumerate(match):
                iw = (c[2] if c[2] < bx2 else bx2) - (c[0] if c[0] > bx1 else bx1)
                ih = (c[3] if c[3] < by2 else by2) - (c[1] if c[1] > by1 else by1)
                if iw <= 0 or ih <= 0:
                    continue
                inter = iw * ih
                iou = inter / (c[4] + barea - inter)
                if iou > best:
                    best, idx = iou, ci
        if idx < 0:
            match.append((bx1, by1, bx2, by2, barea))
            sums.append(None)
            members.append([j + offset])
            continue
        m = members[idx]
        m.append(j + offset)
        st = sums[idx]
        if st is None:
            s0, c = rows[m[0] - offset][1], match[idx]
            a0, a1, a2, a3 = unpack(pack(s0 * c[0], s0 * c[1], s0 * c[2], s0 * c[3]))
            conf = s0
        else:
            a0, a1, a2, a3, conf = st
        a0, a1, a2, a3 = unpack(pack(a0 + s * bx1, a1 + s * by1, a2 + s * bx2, a3 + s * by2))
        conf += s
        sums[idx] = (a0, a1, a2, a3, conf)
        if nan_ids and idx == nan_ids[0]:
            nan_ids.pop(0)
        if conf == 0.0 or not label_exact:
            if conf == 0.0 and label_exact and idx not in nan_ids:
                nan_ids.append(idx)
                nan_ids.sort()
            match[idx] = _NEVER_MATCHED
            continue
        d = unpack1(pack1(conf))[0] if f32_divisor else conf
        f0, f1, f2, f3 = unpack(pack(a0 / d, a1 / d, a2 / d, a3 / d))
        match[idx] = (f0, f1, f2, f3, (f2 - f0) * (f3 - f1))
    for m, st in zip(members, sums):
        seeds.append(m[0])
        if st is not None:
            merged[m[0]] = (m, st + _fused_or_nan(st, f32_divisor))


def _fused_or_nan(st, f32_divisor):
    """The fused box of sums ``st`` as 1.0.9 stores it: NaN where the scores sum to zero."""
    a0, a1, a2, a3, conf = st
    if conf == 0.0:
        nan = float("nan")
        return tuple(nan if a == 0.0 else np.inf * a for a in (a0, a1, a2, a3))
    d = _F32X1.unpack(_F32X1.pack(conf))[0] if f32_divisor else conf
    return _F32X4.unpack(_F32X4.pack(a0 / d, a1 / d, a2 / d, a3 / d))
