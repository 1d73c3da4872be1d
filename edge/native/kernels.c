/* ReefWatch native kernels: weighted-box-fusion clustering, greedy NMS, head decoding, view batching.
 *
 * Plain C99, no dependencies, loaded with ctypes by edge/native/__init__.py.
 * Build: cc -std=c99 -O2 -fPIC -shared -ffp-contract=off (edge/native/build.py).
 * Results must be bit-identical to the Python reference on every machine, so
 * no -ffast-math and no FMA contraction: every a * b + c below is rounded twice,
 * as Python and numpy round it.
 */
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define RW_ERR_NOMEM (-1)
#define RW_ERR_ARG (-2)

/* ------------------------------------------------------------------------ */
/* Weighted boxes fusion: 1.0.9's clustering loop of one label.             */
/* ------------------------------------------------------------------------ */

/* Row layout of edge.fusion's table: [label, score, weight, list, x1, y1, x2, y2]. */
#define ROW_W 8
#define WBF_MAX_CELLS 48

typedef struct {
    double f[4];      /* fused box (float32 values), or the seed's box while alone */
    double area;      /* (f2 - f0) * (f3 - f1) */
    double cx, cy;    /* centre */
    double a[4];      /* float32 sums of s * x1, s * y1, s * x2, s * y2 (valid once merged) */
    double conf;      /* float64 sum of scores */
    double wsum;      /* float64 sum of weights, in member order */
    int64_t count;
    int64_t first;    /* the first member's row */
    int64_t cell;
    int64_t next, prev; /* links in the cell's list */
} wbf_cluster;

/* k of the centre window |cx_c - cx_b| < k * w_b that IoU > iou_thr needs; as
 * edge.fusion_cluster.reach_factor (see its module docstring for the proof). */
static double reach_factor(double iou_thr)
{
    double t = iou_thr * (1 - 1e-9);
    double m = 1 / (2 * t);
    return (1 - t) * (m > 1.0 ? m : 1.0);
}

static int64_t cell_of(double v, int64_t n_cells)
{
    int64_t k;
    if (!(v > 0)) return 0;
    if (v >= 1) return n_cells - 1;
    k = (int64_t)(v * (double)n_cells);
    return k < n_cells ? k : n_cells - 1;
}

static void cell_remove(int64_t *head, wbf_cluster *c, int64_t i)
{
    wbf_cluster *ci = &c[i];
    if (ci->prev >= 0) c[ci->prev].next = ci->next; else head[ci->cell] = ci->next;
    if (ci->next >= 0) c[ci->next].prev = ci->prev;
}

static void cell_insert(int64_t *head, wbf_cluster *c, int64_t i, int64_t cell)
{
    wbf_cluster *ci = &c[i];
    ci->cell = cell;
    ci->prev = -1;
    ci->next = head[cell];
    if (head[cell] >= 0) c[head[cell]].prev = i;
    head[cell] = i;
}

/* The k-th smallest of a[0, n) (0-based; the array is reordered), the value a sort would put at k:
 * a selection instead of qsort, whose comparison callbacks cost more than the clustering of small labels. */
static double kth_smallest(double *a, int64_t n, int64_t k)
{
    int64_t lo = 0, hi = n - 1;
    while (hi > lo) {
        double pivot = a[lo + (hi - lo) / 2], t;
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] < pivot) i++;
            while (a[j] > pivot) j--;
            if (i <= j) {
                t = a[i]; a[i] = a[j]; a[j] = t;
                i++;
                j--;
            }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else break; /* a[j + 1, i) all equal the pivot */
    }
    return a[k];
}

/* Cells per axis for one label: a cell about as wide as most centre windows,
 * so that a window spans at most 2 x 2 cells (as fusion_cluster._run_grid). */
static int64_t grid_size(const double *rows, int64_t n, double k, double *scratch)
{
    int64_t i, g;
    double p;
    for (i = 0; i < n; i++) {
        const double *r = rows + i * ROW_W;
        double rx = k * (r[6] - r[4]) + 1e-9, ry = k * (r[7] - r[5]) + 1e-9;
        scratch[i] = rx > ry ? rx : ry;
    }
    p = kth_smallest(scratch, n, (n * 3) / 4);
    p = 2.0 * p;
    if (p < 1e-6) p = 1e-6;
    g = (int64_t)(1.0 / p);
    if (g < 1) g = 1;
    if (g > WBF_MAX_CELLS) g = WBF_MAX_CELLS;
    return g;
}

/* Index of the cluster a box joins (-1 for none): highest IoU > iou_thr, the
 * lowest index on ties, as numpy's argmax; only clusters whose centre lies in
 * the box's centre window can pass, and only their cells are visited. */
static int64_t best_cluster(const wbf_cluster *c, int64_t n_clusters, const int64_t *head,
                            int64_t n_cells, const double *r, double k, double iou_thr)
{
    double bx1 = r[4], by1 = r[5], bx2 = r[6], by2 = r[7];
    double barea = (bx2 - bx1) * (by2 - by1);
    double bcx = (bx1 + bx2) * 0.5, bcy = (by1 + by2) * 0.5;
    double rx = k * (bx2 - bx1) + 1e-9, ry = k * (by2 - by1) + 1e-9;
    double lox = bcx - rx, hix = bcx + rx, loy = bcy - ry, hiy = bcy + ry;
    int64_t gx0 = cell_of(lox, n_cells), gx1 = cell_of(hix, n_cells);
    int64_t gy0 = cell_of(loy, n_cells), gy1 = cell_of(hiy, n_cells);
    int64_t scan_all = (gx1 - gx0 + 1) * (gy1 - gy0 + 1) > n_clusters;
    int64_t gx, gy, ci, idx = -1;
    double best = iou_thr;
    for (gx = scan_all ? 0 : gx0; gx <= (scan_all ? 0 : gx1); gx++) {
        for (gy = scan_all ? 0 : gy0; gy <= (scan_all ? 0 : gy1); gy++) {
            ci = scan_all ? (n_clusters ? 0 : -1) : head[gx * n_cells + gy];
            while (ci >= 0) {
                const wbf_cluster *cc = &c[ci];
                if (!(cc->cx <= lox || cc->cx >= hix || cc->cy <= loy || cc->cy >= hiy)) {
                    double iw = (cc->f[2] < bx2 ? cc->f[2] : bx2) - (cc->f[0] > bx1 ? cc->f[0] : bx1);
                    double ih = (cc->f[3] < by2 ? cc->f[3] : by2) - (cc->f[1] > by1 ? cc->f[1] : by1);
                    if (iw > 0 && ih > 0) {
                        double inter = iw * ih;
                        double iou = inter / (cc->area + barea - inter);
                        if (iou > best || (iou == best && idx > ci)) {
                            best = iou;
                            idx = ci;
                        }
                    }
                }
                if (scan_all) {
                    ci = ci + 1 < n_clusters ? ci + 1 : -1;
                } else {
                    ci = cc->next;
                }
            }
        }
    }
    return idx;
}

/* Box r (score s = r[1]) joins cluster cc: 1.0.9's get_weighted_box on the grown
 * cluster, with a running sum in place of its re-summing (same additions, same
 * order). Its box is a float32 array: box[4:] += s * x computes in float64 and
 * rounds to float32; box[4:] /= conf divides by float32(conf) under numpy < 2
 * (f32_divisor), in float64 under numpy >= 2, and rounds to float32. */
static void join(wbf_cluster *cc, const double *r, int f32_divisor)
{
    double s = r[1], d;
    int j;
    if (cc->count == 1) {
        double s0 = cc->conf;
        for (j = 0; j < 4; j++) cc->a[j] = (double)(float)(s0 * cc->f[j]);
    }
    for (j = 0; j < 4; j++) cc->a[j] = (double)(float)(cc->a[j] + s * r[4 + j]);
    cc->conf += s;
    cc->wsum += r[2];
    cc->count += 1;
    d = f32_divisor ? (double)(float)cc->conf : cc->conf;
    for (j = 0; j < 4; j++) cc->f[j] = (double)(float)(cc->a[j] / d);
    cc->area = (cc->f[2] - cc->f[0]) * (cc->f[3] - cc->f[1]);
    cc->cx = (cc->f[0] + cc->f[2]) * 0.5;
    cc->cy = (cc->f[1] + cc->f[3]) * 0.5;
}

static void seed(wbf_cluster *cc, const double *r)
{
    int j;
    for (j = 0; j < 4; j++) {
        cc->f[j] = r[4 + j];
        cc->a[j] = 0.0;
    }
    cc->area = (r[6] - r[4]) * (r[7] - r[5]);
    cc->cx = (r[4] + r[6]) * 0.5;
    cc->cy = (r[5] + r[7]) * 0.5;
    cc->conf = r[1];
    cc->wsum = r[2];
    cc->count = 1;
}

/* Cluster the rows [start, end) of one group into c[0, n) (ascending first row) and return n;
 * row_cluster[i] gets the cluster index within the group. head and scratch are caller-provided
 * working memory (WBF_MAX_CELLS^2 and end - start entries). */
static int64_t cluster_group(const double *rows, int64_t start, int64_t end, double k, double iou_thr,
                             int32_t f32_divisor, wbf_cluster *c, int64_t *head, double *scratch,
                             int64_t *row_cluster)
{
    int64_t i, n = 0, n_cells = grid_size(rows + start * ROW_W, end - start, k, scratch);
    for (i = 0; i < n_cells * n_cells; i++) head[i] = -1;
    for (i = start; i < end; i++) {
        const double *r = rows + i * ROW_W;
        int64_t idx = best_cluster(c, n, head, n_cells, r, k, iou_thr);
        if (idx < 0) {
            seed(&c[n], r);
            c[n].first = i;
            cell_insert(head, c, n, cell_of(c[n].cx, n_cells) * n_cells + cell_of(c[n].cy, n_cells));
            row_cluster[i] = n;
            n++;
        } else {
            int64_t cell;
            join(&c[idx], r, f32_divisor);
            cell = cell_of(c[idx].cx, n_cells) * n_cells + cell_of(c[idx].cy, n_cells);
            if (cell != c[idx].cell) {
                cell_remove(head, c, idx);
                cell_insert(head, c, idx, cell);
            }
            row_cluster[i] = idx;
        }
    }
    return n;
}

/* Cluster the rows [start, end) of each group (one label's rows, sorted by
 * descending score; iou_thr > 0, scores > 0, labels float32 holds exactly:
 * edge.fusion_cluster sends the other labels through its Python loop).
 *
 * rows: (n_rows, 8) float64, C order; bounds: 2 * n_groups row indices.
 * Out: row_cluster[n_rows] (cluster of each row of these groups, clusters
 * numbered in creation order from 0, which is ascending order of their first
 * row); per cluster: first[] (first row), count[], wsum[] and values[9 * i]
 * = float32 sums of s*x1, s*y1, s*x2, s*y2, the float64 sum of scores and the
 * fused x1, y1, x2, y2 (sums are 0 for clusters of one). Each output holds at
 * least n_rows entries. Returns the number of clusters, or a negative error. */
int64_t rw_wbf_cluster(const double *rows, int64_t n_rows, const int64_t *bounds, int64_t n_groups,
                       double iou_thr, int32_t f32_divisor, int64_t *row_cluster, int64_t *first,
                       int64_t *count, double *wsum, double *values)
{
    wbf_cluster *c;
    double *scratch;
    int64_t head[WBF_MAX_CELLS * WBF_MAX_CELLS];
    double k;
    int64_t g, i, j, total = 0;
    if (!(iou_thr > 0) || n_rows < 0 || n_groups < 0) return RW_ERR_ARG;
    if (n_rows == 0) return 0;
    c = (wbf_cluster *)malloc((size_t)n_rows * sizeof(wbf_cluster));
    scratch = (double *)malloc((size_t)n_rows * sizeof(double));
    if (!c || !scratch) {
        free(c);
        free(scratch);
        return RW_ERR_NOMEM;
    }
    k = reach_factor(iou_thr);
    for (g = 0; g < n_groups; g++) {
        int64_t start = bounds[2 * g], end = bounds[2 * g + 1], n;
        if (start < 0 || end > n_rows || start >= end) continue;
        n = cluster_group(rows, start, end, k, iou_thr, f32_divisor, c, head, scratch, row_cluster);
        for (i = start; i < end; i++) row_cluster[i] += total;
        for (i = 0; i < n; i++) {
            double *v = values + 9 * (total + i);
            for (j = 0; j < 4; j++) {
                v[j] = c[i].a[j];
                v[5 + j] = c[i].f[j];
            }
            v[4] = c[i].conf;
            first[total + i] = c[i].first;
            count[total + i] = c[i].count;
            wsum[total + i] = c[i].wsum;
        }
        total += n;
    }
    free(c);
    free(scratch);
    return total;
}

/* ------------------------------------------------------------------------ */
/* Weighted boxes fusion in one call: all of 1.0.9's weighted_boxes_fusion. */
/* ------------------------------------------------------------------------ */

#define WBF_FALLBACK (-3)
#define WBF_TIED (-4) /* scores tie within a label and no order was given: out holds the groups' scores */
#define WBF_FIXED ((int64_t)1 << 40)    /* some boxes were swapped, clipped or skipped: counts follow the rows */
#define WBF_UNSORTED ((int64_t)1 << 41) /* final scores tie: rows are in cluster order, the caller sorts */
#define WBF_OUT_W 6
#define F32_EXACT 16777216.0

enum { CONF_AVG = 0, CONF_MAX = 1, CONF_BOX_AND_MODEL_AVG = 2, CONF_ABSENT_MODEL_AWARE_AVG = 3 };

typedef struct {
    uint64_t key;
    int64_t i;
} wbf_key;

typedef struct {
    int64_t label, group; /* group -1: empty slot */
} label_slot;

/* The key that sorts non-negative doubles (no NaN) by descending value. */
static uint64_t descending_key(double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof(u));
    return ~u;
}

/* Sorts a[0, n) by ascending key (insertion sort of runs of 16, then bottom-up merges, stable);
 * returns 1 when two keys are equal: numpy's argsort orders such ties its own way. */
static int sort_keys(wbf_key *a, wbf_key *tmp, int64_t n)
{
    int64_t i, j, width;
    wbf_key *src = a, *dst = tmp, *swap;
    for (i = 0; i < n; i += 16) {
        int64_t e = i + 16 < n ? i + 16 : n;
        for (j = i + 1; j < e; j++) {
            wbf_key v = a[j];
            int64_t p = j;
            while (p > i && a[p - 1].key > v.key) {
                a[p] = a[p - 1];
                p--;
            }
            a[p] = v;
        }
    }
    for (width = 16; width < n; width *= 2) {
        for (i = 0; i < n; i += 2 * width) {
            int64_t mid = i + width < n ? i + width : n, hi = i + 2 * width < n ? i + 2 * width : n;
            int64_t p = i, q = mid, o = i;
            while (p < mid && q < hi) dst[o++] = src[q].key < src[p].key ? src[q++] : src[p++];
            while (p < mid) dst[o++] = src[p++];
            while (q < hi) dst[o++] = src[q++];
        }
        swap = src; src = dst; dst = swap;
    }
    if (src != a) memcpy(a, src, (size_t)n * sizeof(wbf_key));
    for (i = 1; i < n; i++)
        if (a[i].key == a[i - 1].key) return 1;
    return 0;
}

/* The group of a label, numbered in order of first appearance (mask + 1 slots, a power of two). */
static int64_t label_group(label_slot *slots, int64_t mask, int64_t label, int64_t *n_groups)
{
    int64_t i = (int64_t)((((uint64_t)label * 0x9E3779B97F4A7C15ull) >> 29) & (uint64_t)mask);
    while (slots[i].group >= 0) {
        if (slots[i].label == label) return slots[i].group;
        i = (i + 1) & mask;
    }
    slots[i].label = label;
    slots[i].group = (*n_groups)++;
    return slots[i].group;
}

static double read_value(const void *p, int32_t f32, int64_t i)
{
    return f32 ? (double)((const float *)p)[i] : ((const double *)p)[i];
}

/* Labels: kind 0 int64, 1 int32, 2 float64, 3 float32. */
static double read_label(const void *p, int32_t kind, int64_t i)
{
    switch (kind) {
    case 0: return (double)((const int64_t *)p)[i];
    case 1: return (double)((const int32_t *)p)[i];
    case 2: return ((const double *)p)[i];
    default: return (double)((const float *)p)[i];
    }
}

/* Summed weights of the lists a cluster has boxes from (present) and of the others (absent), as
 * 1.0.9 sums them with numpy: over ascending list indices, which for fewer than 8 lists is a plain
 * left-to-right sum; with exact_sums (whole-number weights, exact partial sums) any order gives it. */
static void list_weight_sums(const double *rows, const int64_t *members, int64_t n_members, const double *weights,
                             int32_t unit_weights, int64_t n_lists, int32_t exact_sums, double total,
                             unsigned char *seen, double *present, double *absent)
{
    int64_t m, t;
    double p = 0.0, a = 0.0;
    for (m = 0; m < n_members; m++) seen[(int64_t)rows[members[m] * ROW_W + 3]] = 1;
    if (exact_sums) {
        for (m = 0; m < n_members; m++) {
            t = (int64_t)rows[members[m] * ROW_W + 3];
            if (seen[t] == 1) {
                p += unit_weights ? 1.0 : weights[t];
                seen[t] = 2;
            }
        }
        for (m = 0; m < n_members; m++) seen[(int64_t)rows[members[m] * ROW_W + 3]] = 0;
        a = total - p;
    } else {
        for (t = 0; t < n_lists; t++) {
            if (seen[t]) p += weights[t]; else a += weights[t];
            seen[t] = 0;
        }
    }
    *present = p;
    *absent = a;
}

/* The whole of ensemble_boxes 1.0.9's weighted_boxes_fusion, bit for bit, on clean-typed input.
 *
 * boxes (n, 4), scores (n,), labels (n,): the lists' arrays one list after the other, boxes and
 * scores float64 or float32, labels as read_label. params (doubles, so that the call takes five
 * arguments: ctypes converts each one at a cost): WBF_P_* below, then n_lists box counts (whole
 * numbers), then, unless unit weights, n_lists weights (finite, >= 0). total = weights.sum(),
 * wmax = weights.max() as numpy computes them; exact sums: whole-number weights whose sums are
 * exact (else n_lists < 8, where numpy sums left to right). Boxes with score < cut are skipped
 * (the caller rounds cut as numpy compares). conf_type as CONF_*.
 *
 * out: (n + 1) x 6 doubles: per fused box x1, y1, x2, y2, score, label, sorted by descending score
 * (or in cluster order with WBF_UNSORTED), then the counts of boxes with x2 < x1, y2 < y1, a
 * coordinate < 0, a coordinate > 1, and of zero-area boxes skipped (set with WBF_FIXED).
 * Returns the number of fused boxes | flags, WBF_FALLBACK for input the caller's general path
 * must take (NaN or non-finite values, kept scores <= 0 or > 1e30, labels float32 cannot hold),
 * or a negative error.
 *
 * Tied scores within a label: 1.0.9 orders each label's rows by numpy's argsort, whose order of
 * ties is numpy's own. Without `order` (NULL) the call returns WBF_TIED, out holding n_groups, the
 * n_groups + 1 row offsets of the label groups (first appearance order) and each group's weighted
 * scores in row order: the arrays 1.0.9 argsorts. With `order`, each group's rows are visited in
 * that order instead of sorted: order[offset + r] is the index within the group of its r-th row
 * (the caller's argsort()[::-1] of that group's scores). */
/* For WBF_TIED: n_groups, the groups' row offsets, then each group's weighted scores in row order. */
static void tied_scores(const double *raw, const int64_t *group, int64_t kept, const int64_t *offset,
                        int64_t n_groups, int64_t *at, double *out)
{
    int64_t g, i;
    double *scores = out + n_groups + 2;
    out[0] = (double)n_groups;
    for (g = 0; g <= n_groups; g++) {
        out[1 + g] = (double)offset[g];
        at[g] = offset[g];
    }
    for (i = 0; i < kept; i++) scores[at[group[i]]++] = raw[i * ROW_W + 1];
}

/* A whole number in [0, hi] passed as a double, or -1. */
static int64_t param_index(double v, double hi)
{
    return v >= 0 && v <= hi && v == floor(v) ? (int64_t)v : -1;
}

enum { WBF_P_LISTS, WBF_P_BOXES_F32, WBF_P_SCORES_F32, WBF_P_LABEL_KIND, WBF_P_UNIT_WEIGHTS, WBF_P_TOTAL,
       WBF_P_WMAX, WBF_P_EXACT_SUMS, WBF_P_CUT, WBF_P_IOU_THR, WBF_P_CONF_TYPE, WBF_P_ALLOWS_OVERFLOW,
       WBF_P_F32_DIVISOR, WBF_P_HEADER };

int64_t rw_wbf_fuse(const void *boxes, const void *scores, const void *labels, const double *params, double *out,
                    const int64_t *order)
{
    int64_t n_lists = param_index(params[WBF_P_LISTS], 1e9);
    int32_t boxes_f32 = params[WBF_P_BOXES_F32] != 0, scores_f32 = params[WBF_P_SCORES_F32] != 0;
    int32_t label_kind = (int32_t)param_index(params[WBF_P_LABEL_KIND], 3);
    int32_t unit_weights = params[WBF_P_UNIT_WEIGHTS] != 0;
    double total = params[WBF_P_TOTAL], wmax = params[WBF_P_WMAX], cut = params[WBF_P_CUT];
    double iou_thr = params[WBF_P_IOU_THR];
    int32_t exact_sums = params[WBF_P_EXACT_SUMS] != 0;
    int32_t conf_type = (int32_t)param_index(params[WBF_P_CONF_TYPE], CONF_ABSENT_MODEL_AWARE_AVG);
    int32_t allows_overflow = params[WBF_P_ALLOWS_OVERFLOW] != 0, f32_divisor = params[WBF_P_F32_DIVISOR] != 0;
    const double *lists = params + WBF_P_HEADER;
    const double *weights = lists + n_lists;
    int64_t n = 0, t, i, j, g, kept = 0, n_groups = 0, n_clusters = 0, mask = 15, result;
    double fixes[5] = {0.0, 0.0, 0.0, 0.0, 0.0}, sum = 0.0, k;
    char *block;
    double *raw, *rows, *scratch, *res;
    int64_t *group, *offset, *row_cluster, *members;
    wbf_key *keys, *ktmp;
    wbf_cluster *c;
    label_slot *slots;
    unsigned char *seen;
    int64_t head[WBF_MAX_CELLS * WBF_MAX_CELLS];

    if (!(iou_thr > 0) || n_lists < 0 || conf_type < 0 || label_kind < 0) return RW_ERR_ARG;
    for (t = 0; t < n_lists; t++) {
        double m = lists[t];
        if (!(m >= 0 && m < 4e18) || m != floor(m)) return RW_ERR_ARG;
        n += (int64_t)m;
    }
    while (mask + 1 < 2 * n) mask = 2 * mask + 1;
    {
        /* One block for all working memory: a dozen mallocs cost more than fusing a few boxes. */
        size_t m = (size_t)(n + 1), bytes = m * (2 * ROW_W + WBF_OUT_W + 1) * sizeof(double)
                   + (4 * m + 1) * sizeof(int64_t) + 2 * m * sizeof(wbf_key) + m * sizeof(wbf_cluster)
                   + (size_t)(mask + 1) * sizeof(label_slot) + (size_t)(n_lists + 1);
        char *at = block = (char *)malloc(bytes);
        if (!block) return RW_ERR_NOMEM;
        raw = (double *)at; at += m * ROW_W * sizeof(double);
        rows = (double *)at; at += m * ROW_W * sizeof(double);
        res = (double *)at; at += m * WBF_OUT_W * sizeof(double);
        scratch = (double *)at; at += m * sizeof(double);
        group = (int64_t *)at; at += m * sizeof(int64_t);
        offset = (int64_t *)at; at += (m + 1) * sizeof(int64_t);
        row_cluster = (int64_t *)at; at += m * sizeof(int64_t);
        members = (int64_t *)at; at += m * sizeof(int64_t);
        keys = (wbf_key *)at; at += m * sizeof(wbf_key);
        ktmp = (wbf_key *)at; at += m * sizeof(wbf_key);
        c = (wbf_cluster *)at; at += m * sizeof(wbf_cluster);
        slots = (label_slot *)at; at += (size_t)(mask + 1) * sizeof(label_slot);
        seen = (unsigned char *)at;
        memset(seen, 0, (size_t)(n_lists + 1));
    }
    for (i = 0; i <= mask; i++) slots[i].group = -1;

    /* 1.0.9's prefilter_boxes: skip, swap, clip, skip zero area; rows in (list, box) order. */
    i = 0;
    for (t = 0; t < n_lists; t++) {
        int64_t end = i + (int64_t)lists[t];
        double w = unit_weights ? 1.0 : weights[t];
        for (; i < end; i++) {
            double b[4], s = read_value(scores, scores_f32, i), label = read_label(labels, label_kind, i), sw, v;
            double *r;
            int low = 0, high = 0;
            for (j = 0; j < 4; j++) b[j] = read_value(boxes, boxes_f32, 4 * i + j);
            if (isnan(b[0]) || isnan(b[1]) || isnan(b[2]) || isnan(b[3]) || !isfinite(s) || !isfinite(label)) {
                result = WBF_FALLBACK; /* the general path names the bad list */
                goto done;
            }
            if (s < cut) continue;
            label = trunc(label); /* int(label) */
            sw = s * w;
            if (!(s > 0.0 && s <= 1e30 && sw > 0.0) || !(label >= -F32_EXACT && label <= F32_EXACT)) {
                result = WBF_FALLBACK;
                goto done;
            }
            if (b[2] < b[0]) { v = b[0]; b[0] = b[2]; b[2] = v; fixes[0] += 1; }
            if (b[3] < b[1]) { v = b[1]; b[1] = b[3]; b[3] = v; fixes[1] += 1; }
            for (j = 0; j < 4; j++) {
                if (b[j] < 0) { b[j] = 0.0; low = 1; }
                else if (b[j] > 1) { b[j] = 1.0; high = 1; }
            }
            fixes[2] += low;
            fixes[3] += high;
            if ((b[2] - b[0]) * (b[3] - b[1]) == 0.0) {
                fixes[4] += 1;
                continue;
            }
            sum += sw;
            group[kept] = label_group(slots, mask, (int64_t)label, &n_groups);
            r = raw + kept * ROW_W;
            r[0] = label; r[1] = sw; r[2] = w; r[3] = (double)t;
            for (j = 0; j < 4; j++) r[4 + j] = b[j];
            kept++;
        }
    }
    if (!(sum < 1e30)) {
        result = WBF_FALLBACK; /* the general path checks the float32 range */
        goto done;
    }

    /* Group by label (first appearance), each group by descending score. */
    for (g = 0; g <= n_groups; g++) offset[g] = 0;
    for (i = 0; i < kept; i++) offset[group[i] + 1]++;
    for (g = 0; g < n_groups; g++) offset[g + 1] += offset[g];
    for (i = 0; i < kept; i++) {
        int64_t p = offset[group[i]]++;
        keys[p].key = descending_key(raw[i * ROW_W + 1]);
        keys[p].i = i;
    }
    for (g = n_groups; g > 0; g--) offset[g] = offset[g - 1];
    offset[0] = 0;
    for (g = 0; g < n_groups; g++) {
        int64_t start = offset[g], size = offset[g + 1] - offset[g];
        if (order == NULL) {
            if (sort_keys(keys + start, ktmp, size)) {
                result = WBF_TIED;
                tied_scores(raw, group, kept, offset, n_groups, row_cluster, out);
                goto done;
            }
            continue;
        }
        for (i = 0; i < size; i++) {
            int64_t q = order[start + i];
            if (q < 0 || q >= size) {
                result = RW_ERR_ARG;
                goto done;
            }
            ktmp[i] = keys[start + q]; /* keys of a group are in row order until sorted */
        }
        memcpy(keys + start, ktmp, (size_t)size * sizeof(wbf_key));
    }
    for (i = 0; i < kept; i++) memcpy(rows + i * ROW_W, raw + keys[i].i * ROW_W, ROW_W * sizeof(double));

    /* 1.0.9's clustering, label by label. */
    k = reach_factor(iou_thr);
    for (g = 0; g < n_groups; g++) {
        int64_t start = offset[g], end = offset[g + 1];
        int64_t got = cluster_group(rows, start, end, k, iou_thr, f32_divisor, c + n_clusters, head, scratch,
                                    row_cluster);
        for (i = start; i < end; i++) row_cluster[i] += n_clusters;
        n_clusters += got;
    }
    if (conf_type == CONF_BOX_AND_MODEL_AVG || conf_type == CONF_ABSENT_MODEL_AWARE_AVG) {
        /* Members of each cluster, contiguous: offset[ci] onwards. */
        for (i = 0, j = 0; i < n_clusters; i++) {
            offset[i] = j;
            j += c[i].count;
        }
        for (i = 0; i < kept; i++) members[offset[row_cluster[i]]++] = i;
        for (i = 0; i < n_clusters; i++) offset[i] -= c[i].count;
    }

    /* The fused boxes and 1.0.9's rescale of their scores (float64, in its order of operations). */
    for (i = 0; i < n_clusters; i++) {
        const wbf_cluster *cc = &c[i];
        const double *r = rows + cc->first * ROW_W;
        double *o = res + i * WBF_OUT_W, sc, ws, nb = (double)cc->count, present = 0.0, absent = 0.0;
        if (cc->count == 1) {
            for (j = 0; j < 4; j++) o[j] = r[4 + j];
            sc = r[1];
            ws = r[2];
        } else {
            /* a merged cluster is 1.0.9's float32 box: score, weight sum, label rounded to float32 */
            for (j = 0; j < 4; j++) o[j] = cc->f[j];
            sc = (double)(float)(conf_type == CONF_MAX ? r[1] : cc->conf / nb);
            ws = (double)(float)cc->wsum;
        }
        if (conf_type == CONF_BOX_AND_MODEL_AVG || conf_type == CONF_ABSENT_MODEL_AWARE_AVG)
            list_weight_sums(rows, members + offset[i], cc->count, weights, unit_weights, n_lists, exact_sums,
                             total, seen, &present, &absent);
        if (conf_type == CONF_MAX) sc = sc / wmax;
        else if (conf_type == CONF_AVG) sc = sc * (allows_overflow || cc->count < n_lists ? nb : (double)n_lists) / total;
        else if (conf_type == CONF_BOX_AND_MODEL_AVG) sc = sc * nb / ws * present / total;
        else sc = sc * nb / (ws + absent);
        if (!(sc >= 0.0)) {
            result = WBF_FALLBACK;
            goto done;
        }
        o[4] = sc;
        o[5] = r[0];
        keys[i].key = descending_key(sc);
        keys[i].i = i;
    }

    /* 1.0.9's final sort by score; on ties the caller repeats its argsort. */
    result = n_clusters;
    if (sort_keys(keys, ktmp, n_clusters)) {
        result |= WBF_UNSORTED;
        memcpy(out, res, (size_t)n_clusters * WBF_OUT_W * sizeof(double));
    } else {
        for (i = 0; i < n_clusters; i++) memcpy(out + i * WBF_OUT_W, res + keys[i].i * WBF_OUT_W,
                                                WBF_OUT_W * sizeof(double));
    }
    if (fixes[0] + fixes[1] + fixes[2] + fixes[3] + fixes[4] > 0) {
        result |= WBF_FIXED;
        for (j = 0; j < 5; j++) out[n * WBF_OUT_W + j] = fixes[j];
    }
done:
    free(block);
    return result;
}

/* ------------------------------------------------------------------------ */
/* Greedy NMS, torchvision's nms_kernel to the bit.                         */
/* ------------------------------------------------------------------------ */

#define NMS_CHUNK 32
/* Up to this many kept boxes, nms_run tests each box against the kept ones (nms_run_kept):
 * inserting into their sorted index costs O(kept) a box, cheap for max_det-sized limits. */
#define NMS_KEPT_MAX 1024
#define SORT_RUN 16

typedef struct {
    float x1, y1, x2, y2, area;
    int64_t rank;
} nms_box;

/* An unsigned key in the order of the float's value (NaN aside); -0.0 and 0.0 get one key, as they compare equal. */
static uint32_t float_key(float f)
{
    uint32_t u;
    f += 0.0f; /* -0.0 -> 0.0 */
    memcpy(&u, &f, sizeof(u));
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* Stable LSD radix sort of items by their upper 32 bits (the key; the lower 32 bits carry an
 * index): branch-free, where a comparison sort's mispredictions cost more than the rest of NMS. */
static void sort_by_key(uint64_t *a, uint64_t *tmp, int64_t n)
{
    static const int shift[3] = {32, 43, 54};
    int64_t count[2048], i, pass;
    uint64_t *src = a, *dst = tmp, *swap;
    for (pass = 0; pass < 3; pass++) {
        int64_t sum = 0, d;
        int sh = shift[pass];
        memset(count, 0, sizeof(count));
        for (i = 0; i < n; i++) count[(src[i] >> sh) & 2047]++;
        if (n == 0 || count[(src[0] >> sh) & 2047] == n) continue; /* one digit: nothing moves */
        for (d = 0; d < 2048; d++) {
            int64_t c = count[d];
            count[d] = sum;
            sum += c;
        }
        for (i = 0; i < n; i++) dst[count[(src[i] >> sh) & 2047]++] = src[i];
        swap = src; src = dst; dst = swap;
    }
    if (src != a) memcpy(a, src, (size_t)n * sizeof(uint64_t));
}

/* torchvision's test: float32 IoU of a kept box b and a later box o, compared with the threshold as a double. */
static int suppresses(const nms_box *b, const nms_box *o, double iou_thr)
{
    float w = (b->x2 < o->x2 ? b->x2 : o->x2) - (b->x1 > o->x1 ? b->x1 : o->x1);
    float h = (b->y2 < o->y2 ? b->y2 : o->y2) - (b->y1 > o->y1 ? b->y1 : o->y1);
    float inter;
    w = w > 0.0f ? w : 0.0f;
    h = h > 0.0f ? h : 0.0f;
    inter = w * h;
    return (double)(inter / (b->area + o->area - inter)) > iou_thr;
}

/* Half-width of the window of x1 (or y1) values a box of side `side` can suppress:
 * IoU <= the x-intervals' IoU = ox / (ox + |dx1| + |dx2|) (and the same in y), so
 * IoU > t needs |x1_j - x1_b| < w_b (1 - t) / t. Widened by 1% and a relative
 * 1e-4 to cover float32 rounding. */
static double nms_reach(float lo, float hi, double iou_thr)
{
    double side = (double)hi - (double)lo;
    return side * (1.0 - iou_thr) / iou_thr * 1.01 + 1e-4 * (fabs((double)lo) + 1.0);
}

/* Marks dead the boxes of by_x[0, n) after rank i that the kept box b suppresses; returns how many.
 * Only boxes whose x1 and y1 lie in b's windows (nms_reach) and whose x1 is below b's x2 can be. */
static int64_t suppress_window(const nms_box *by_x, int64_t n, const nms_box *b, int64_t i, double iou_thr,
                               unsigned char *dead)
{
    double rx = nms_reach(b->x1, b->x2, iou_thr), ry = nms_reach(b->y1, b->y2, iou_thr);
    double from = (double)b->x1 - rx, to = (double)b->x1 + rx;
    double from_y = (double)b->y1 - ry, to_y = (double)b->y1 + ry;
    int64_t a = 0, z = n, p, killed = 0;
    while (a < z) {
        int64_t mid = a + (z - a) / 2;
        if ((double)by_x[mid].x1 <= from) a = mid + 1; else z = mid;
    }
    if ((double)b->x2 < to) to = (double)b->x2; /* x1 < b's x2 as well */
    for (p = a; p < n && (double)by_x[p].x1 < to; p++) {
        const nms_box *o = &by_x[p];
        /* One branch for the four tests: they are hard to predict, and a misprediction costs more than them. */
        int open = (o->rank > i) & (dead[o->rank] == 0) & ((double)o->y1 > from_y) & ((double)o->y1 < to_y);
        if (open && suppresses(b, o, iou_thr)) {
            dead[o->rank] = 1;
            killed++;
        }
    }
    return killed;
}

typedef struct {
    nms_box *by_x;
    uint64_t *key, *tmp;
    float *chunk_x2;
    unsigned char *dead;
    int64_t *pos;
} nms_scratch;

static int nms_alloc(nms_scratch *s, int64_t n)
{
    size_t m = (size_t)(n > 0 ? n : 1);
    s->by_x = (nms_box *)malloc(m * sizeof(nms_box));
    s->key = (uint64_t *)malloc(m * sizeof(uint64_t));
    s->tmp = (uint64_t *)malloc(m * sizeof(uint64_t));
    s->chunk_x2 = (float *)malloc((m / NMS_CHUNK + 1) * sizeof(float));
    s->dead = (unsigned char *)malloc(m);
    s->pos = (int64_t *)malloc(m * sizeof(int64_t));
    return s->by_x && s->key && s->tmp && s->chunk_x2 && s->dead && s->pos;
}

static void nms_free(nms_scratch *s)
{
    free(s->by_x); free(s->key); free(s->tmp); free(s->chunk_x2); free(s->dead); free(s->pos);
}

/* boxes: (n, 4) float32 xyxy, already in visiting order (descending score, ties
 * in index order) and shifted by class. A box is kept unless a kept box before
 * it has float32 IoU > iou_thr, compared as a double as torchvision does
 * (`ovr > iou_threshold`, float promoted to double). Boxes with x2 <= x1 or
 * y2 <= y1 (or NaN) overlap nothing: always kept, never suppressing.
 * Writes the kept ranks, ascending, to keep and returns how many, at most limit
 * (the rest is never visited). Boxes are sorted by x1; a kept box visits only
 * those whose x1 and y1 lie in its windows (nms_reach) and whose x1 is below its
 * x2. With iou_thr 0 every overlap counts: the sorted boxes are grouped in
 * chunks of NMS_CHUNK with each chunk's largest x2, so one wide box slows only its chunk. */
/* nms_run for iou_thr > 0 and a small limit (NMS_KEPT_MAX): each visited box is tested against
 * the kept boxes, held sorted by x1, instead of each kept box marking the later boxes it
 * suppresses. The same pairs decide (suppresses is symmetric, and the x1 and y1 windows of
 * nms_reach bound |x1_b - x1_o| by either box's side), so the same boxes are kept; but when
 * a decoder's thousands of candidates crowd each object, the few hundred kept boxes are all
 * that is scanned, and only the visited boxes are ever touched. Uses s->by_x for the index. */
static int64_t nms_run_kept(const float *boxes, int64_t n, double iou_thr, int64_t limit, int64_t *keep,
                            nms_scratch *s)
{
    nms_box *index = s->by_x;
    int64_t i, kept = 0, n_index = 0;
    for (i = 0; i < n && kept < limit; i++) {
        const float *b = boxes + 4 * i;
        nms_box o;
        double rx, ry, from, to, from_y, to_y;
        int64_t a, z, at;
        if (!(b[2] > b[0] && b[3] > b[1])) {
            keep[kept++] = i; /* no area: always kept, suppresses nothing */
            continue;
        }
        o.x1 = b[0]; o.y1 = b[1]; o.x2 = b[2]; o.y2 = b[3];
        o.area = (b[2] - b[0]) * (b[3] - b[1]);
        o.rank = i;
        rx = nms_reach(o.x1, o.x2, iou_thr);
        ry = nms_reach(o.y1, o.y2, iou_thr);
        from = (double)o.x1 - rx;
        to = (double)o.x1 + rx;
        from_y = (double)o.y1 - ry;
        to_y = (double)o.y1 + ry;
        if ((double)o.x2 < to) to = (double)o.x2; /* a kept box starting past o's x2 misses it */
        /* the kept boxes of x1 nearest o's first, outwards: a suppressor usually sits close, and the
         * first one found settles o (whichever it is: the kept set is the same) */
        a = 0;
        z = n_index;
        while (a < z) {
            int64_t mid = a + (z - a) / 2;
            if (index[mid].x1 <= o.x1) a = mid + 1; else z = mid;
        }
        at = a; /* also where o goes: after the kept boxes of equal x1 */
        {
            int64_t right = at, left = at - 1, found = 0;
            while (!found) {
                int go_right = right < n_index && (double)index[right].x1 < to;
                int go_left = left >= 0 && (double)index[left].x1 > from;
                if (!go_right && !go_left) break;
                if (go_right) {
                    const nms_box *k = &index[right++];
                    found = ((double)k->y1 > from_y) & ((double)k->y1 < to_y) && suppresses(k, &o, iou_thr);
                }
                if (!found && go_left) {
                    const nms_box *k = &index[left--];
                    found = ((double)k->y1 > from_y) & ((double)k->y1 < to_y) && suppresses(k, &o, iou_thr);
                }
            }
            if (found) continue;
        }
        keep[kept++] = i;
        memmove(index + at + 1, index + at, (size_t)(n_index - at) * sizeof(nms_box));
        index[at] = o;
        n_index++;
    }
    return kept;
}

static int64_t nms_run(const float *boxes, int64_t n, double iou_thr, int64_t limit, int64_t *keep,
                       nms_scratch *s)
{
    nms_box *by_x = s->by_x;
    int64_t n_proper = 0, n_active, stale = 0, i, kept = 0;
    if (iou_thr > 0.0 && limit <= NMS_KEPT_MAX) return nms_run_kept(boxes, n, iou_thr, limit, keep, s);
    for (i = 0; i < n; i++) {
        const float *b = boxes + 4 * i;
        s->pos[i] = -1;
        s->dead[i] = 0;
        if (b[2] > b[0] && b[3] > b[1]) s->key[n_proper++] = ((uint64_t)float_key(b[0]) << 32) | (uint64_t)i;
    }
    sort_by_key(s->key, s->tmp, n_proper); /* by x1, ties by rank */
    for (i = 0; i < n_proper; i++) {
        int64_t r = (int64_t)(s->key[i] & 0xffffffffu);
        const float *b = boxes + 4 * r;
        nms_box *o = &by_x[i];
        o->x1 = b[0]; o->y1 = b[1]; o->x2 = b[2]; o->y2 = b[3];
        o->area = (b[2] - b[0]) * (b[3] - b[1]);
        o->rank = r;
    }
    n_active = n_proper;
    for (i = 0; i < n_proper; i++) {
        float x2 = by_x[i].x2;
        s->pos[by_x[i].rank] = i;
        if (i % NMS_CHUNK == 0 || x2 > s->chunk_x2[i / NMS_CHUNK]) s->chunk_x2[i / NMS_CHUNK] = x2;
    }
    for (i = 0; i < n && kept < limit; i++) {
        nms_box b;
        int64_t p;
        if (s->dead[i]) continue;
        keep[kept++] = i;
        if (s->pos[i] < 0) continue; /* no area: suppresses nothing */
        if (iou_thr > 0.0) {
            b = by_x[s->pos[i]];
            stale += suppress_window(by_x, n_active, &b, i, iou_thr, s->dead) + 1;
            if (stale * 2 > n_active && n_active > 64) {
                /* Drop visited and suppressed boxes, keeping the x1 order; positions are now stale. */
                int64_t w = 0;
                for (p = 0; p < n_active; p++)
                    if (by_x[p].rank > i && !s->dead[by_x[p].rank]) by_x[w++] = by_x[p];
                for (p = 0; p < w; p++) s->pos[by_x[p].rank] = p;
                n_active = w;
                stale = 0;
            }
            continue;
        }
        {
            /* Boxes overlapping in x start before b's x2: positions [0, hi). */
            int64_t lo = s->pos[i], hi = n_proper, ch;
            b = by_x[s->pos[i]];
            while (lo < hi) {
                int64_t mid = lo + (hi - lo) / 2;
                if (by_x[mid].x1 < b.x2) lo = mid + 1; else hi = mid;
            }
            for (ch = 0; ch * NMS_CHUNK < hi; ch++) {
                int64_t p_end = (ch + 1) * NMS_CHUNK < hi ? (ch + 1) * NMS_CHUNK : hi;
                if (!(s->chunk_x2[ch] > b.x1)) continue;
                for (p = ch * NMS_CHUNK; p < p_end; p++) {
                    const nms_box *o = &by_x[p];
                    if (o->rank <= i || s->dead[o->rank] || !(o->x2 > b.x1)) continue;
                    if (suppresses(&b, o, iou_thr)) s->dead[o->rank] = 1;
                }
            }
        }
    }
    return kept;
}

int64_t rw_nms(const float *boxes, int64_t n, double iou_thr, int64_t limit, int64_t *keep)
{
    nms_scratch s;
    int64_t kept;
    if (n < 0 || n > (int64_t)UINT32_MAX || !(iou_thr >= 0)) return RW_ERR_ARG;
    if (n == 0 || limit <= 0) return 0;
    if (!nms_alloc(&s, n)) {
        nms_free(&s);
        return RW_ERR_NOMEM;
    }
    kept = nms_run(boxes, n, iou_thr, limit, keep, &s);
    nms_free(&s);
    return kept;
}

/* rw_nms over consecutive segments of `boxes` (bounds: nseg + 1 offsets), each on its own: the views
 * of one batch in one call. keep receives each segment's kept ranks (absolute, ascending) one segment
 * after the other; counts[s] how many segment s kept. Returns the total, or a negative error. */
int64_t rw_nms_segments(const float *boxes, const int64_t *bounds, int64_t nseg, double iou_thr, int64_t limit,
                        int64_t *keep, int64_t *counts)
{
    int64_t s, total = 0;
    for (s = 0; s < nseg; s++) {
        int64_t start = bounds[s], n = bounds[s + 1] - bounds[s], k, got;
        if (start < 0 || n < 0) return RW_ERR_ARG;
        got = rw_nms(boxes + 4 * start, n, iou_thr, limit, keep + total);
        if (got < 0) return got;
        for (k = 0; k < got; k++) keep[total + k] += start;
        counts[s] = got;
        total += got;
    }
    return total;
}

/* ------------------------------------------------------------------------ */
/* A YOLO detect head (B, 4 + nc, A): threshold, top-k, class-aware NMS.    */
/* ------------------------------------------------------------------------ */

typedef struct {
    float score;
    int32_t anchor, cls;
} candidate;

/* Stable sort by descending score (ties keep candidate order), as numpy's stable argsort of -score. */
static void sort_candidates(candidate *a, candidate *out, uint64_t *key, uint64_t *tmp, int64_t n)
{
    int64_t i;
    for (i = 0; i < n; i++) key[i] = ((uint64_t)~float_key(a[i].score) << 32) | (uint64_t)i;
    sort_by_key(key, tmp, n);
    for (i = 0; i < n; i++) out[i] = a[key[i] & 0xffffffffu];
}

/* numpy compares a float32 score with the threshold in float32 or (a float64 threshold
 * under NEP 50, or one float32 cannot hold under value-based casting) in float64. */
static int above(float v, float thr32, double thr64, int32_t in_f32)
{
    return in_f32 ? v > thr32 : (double)v > thr64;
}

/* Per image of out (batch, rows = 4 + nc, anchors) float32: candidates are anchors whose
 * best class score (NaN if any is NaN, as numpy's max) is above thr, with that class (the
 * first best, as argmax), or with multi_label one candidate per class above thr, anchor-major;
 * the max_candidates best by a stable descending sort; boxes cx, cy, w, h -> xyxy in float32
 * (x -/+ w / 2), shifted by class * class_offset for NMS (nms_run, at most max_det kept).
 * edge.decode's numpy path does the same operations. Writes the kept boxes (unshifted),
 * scores, classes and anchors of each image one image after the other, counts[b] per image;
 * returns the total, or a negative error. Outputs hold batch * min(max_det, cap) entries,
 * cap = anchors (x nc with multi_label). */
int64_t rw_decode_head(const float *out, int64_t batch, int64_t rows, int64_t anchors, double thr,
                       int32_t thr_f32, int32_t multi_label, int64_t max_candidates, double iou_thr,
                       int64_t max_det, float class_offset, float *xyxy, float *score, int64_t *class_id,
                       int64_t *anchor, int64_t *counts)
{
    int64_t nc = rows - 4, cap, b, a, c, total = 0;
    float thr32 = (float)thr, *best, *boxes, *shifted;
    int32_t *arg;
    unsigned char *nan_score;
    candidate *cand, *ctmp;
    int64_t *keep;
    nms_scratch s;
    int ok;
    if (batch < 0 || nc < 1 || anchors < 0 || max_candidates < 0 || max_det < 0 || !(iou_thr >= 0)
            || anchors > INT32_MAX || anchors * nc > (int64_t)UINT32_MAX) return RW_ERR_ARG;
    cap = anchors * (multi_label ? nc : 1);
    if (batch == 0 || anchors == 0) {
        for (b = 0; b < batch; b++) counts[b] = 0;
        return 0;
    }
    best = (float *)malloc((size_t)anchors * sizeof(float));
    arg = (int32_t *)malloc((size_t)anchors * sizeof(int32_t));
    nan_score = (unsigned char *)malloc((size_t)anchors);
    cand = (candidate *)malloc((size_t)cap * sizeof(candidate));
    ctmp = (candidate *)malloc((size_t)cap * sizeof(candidate));
    boxes = (float *)malloc((size_t)cap * 4 * sizeof(float));
    shifted = (float *)malloc((size_t)cap * 4 * sizeof(float));
    keep = (int64_t *)malloc((size_t)cap * sizeof(int64_t));
    ok = nms_alloc(&s, cap);
    if (!ok || !best || !arg || !nan_score || !cand || !ctmp || !boxes || !shifted || !keep) {
        total = RW_ERR_NOMEM;
        goto done;
    }
    for (b = 0; b < batch; b++) {
        const float *img = out + b * rows * anchors;
        int64_t k = 0, r, got;
        for (a = 0; a < anchors; a++) {
            best[a] = img[4 * anchors + a];
            arg[a] = 0;
            nan_score[a] = best[a] != best[a];
        }
        for (c = 1; c < nc; c++) {
            const float *row = img + (4 + c) * anchors;
            for (a = 0; a < anchors; a++) {
                float v = row[a];
                if (v != v) nan_score[a] = 1;
                else if (v > best[a]) { best[a] = v; arg[a] = (int32_t)c; }
            }
        }
        for (a = 0; a < anchors; a++) {
            if (nan_score[a] || !above(best[a], thr32, thr, thr_f32)) continue;
            if (!multi_label) {
                ctmp[k].score = best[a]; ctmp[k].anchor = (int32_t)a; ctmp[k].cls = arg[a]; k++;
                continue;
            }
            for (c = 0; c < nc; c++) {
                float v = img[(4 + c) * anchors + a];
                if (above(v, thr32, thr, thr_f32)) {
                    ctmp[k].score = v; ctmp[k].anchor = (int32_t)a; ctmp[k].cls = (int32_t)c; k++;
                }
            }
        }
        sort_candidates(ctmp, cand, s.key, s.tmp, k); /* the NMS scratch is free until nms_run */
        if (k > max_candidates) k = max_candidates;
        for (r = 0; r < k; r++) {
            int64_t an = cand[r].anchor;
            float cx = img[an], cy = img[anchors + an], hw = img[2 * anchors + an] / 2.0f;
            float hh = img[3 * anchors + an] / 2.0f, shift = (float)cand[r].cls * class_offset;
            float *o = boxes + 4 * r, *sh = shifted + 4 * r;
            o[0] = cx - hw; o[1] = cy - hh; o[2] = cx + hw; o[3] = cy + hh;
            sh[0] = o[0] + shift; sh[1] = o[1] + shift; sh[2] = o[2] + shift; sh[3] = o[3] + shift;
        }
        got = k > 0 && max_det > 0 ? nms_run(shifted, k, iou_thr, max_det, keep, &s) : 0;
        for (r = 0; r < got; r++) {
            int64_t q = keep[r], t = total + r;
            memcpy(xyxy + 4 * t, boxes + 4 * q, 4 * sizeof(float));
            score[t] = cand[q].score;
            class_id[t] = cand[q].cls;
            anchor[t] = cand[q].anchor;
        }
        counts[b] = got;
        total += got;
    }
done:
    free(best); free(arg); free(nan_score); free(cand); free(ctmp); free(boxes); free(shifted); free(keep);
    nms_free(&s);
    return total;
}

/* ------------------------------------------------------------------------ */
/* Letterboxed test-time-augmentation views -> the network's input batch.   */
/* ------------------------------------------------------------------------ */

#define VIEW_W 7

/* views: n_views x VIEW_W int64: the address of a C-contiguous BGR uint8 image (the frame
 * resized for this view, not yet turned), its height and width, hflip, rot90 (k quarter
 * turns counter-clockwise after the flip, as cv2.flip then cv2.rotate) and the turned image's
 * left and top in the canvas (negative when a scale above 1 crops it). out: (n_views, 3,
 * in_h, in_w) float32 RGB, value / 255 in float32, `pad` grey outside the image: the batch
 * tta.prepare_views' numpy path builds, bit for bit, in one pass without intermediate canvases.
 * With pad_in_place, out already holds this layout's grey (the last frame's batch, same views and
 * frame size): only the images are written, a quarter or more less memory traffic. */
int64_t rw_views_to_batch(const int64_t *views, int64_t n_views, int64_t in_h, int64_t in_w, int32_t pad,
                          int32_t pad_in_place, float *out)
{
    float lut[256];
    int64_t v, i, plane = in_h * in_w;
    if (n_views < 0 || in_h < 1 || in_w < 1 || pad < 0 || pad > 255) return RW_ERR_ARG;
    for (i = 0; i < 256; i++) lut[i] = (float)i / 255.0f;
    for (v = 0; v < n_views; v++) {
        const int64_t *p = views + VIEW_W * v;
        const uint8_t *src = (const uint8_t *)(intptr_t)p[0];
        int64_t h = p[1], w = p[2], flip = p[3], k = p[4], left = p[5], top = p[6];
        int64_t oh = k % 2 ? w : h, ow = k % 2 ? h : w;
        /* source pixel of turned pixel (oy, ox): fy = fy0 + fy_y oy + fy_x ox, fx likewise */
        int64_t fy0 = 0, fy_y = 1, fy_x = 0, fx0 = 0, fx_y = 0, fx_x = 1, base, step_y, step_x;
        int64_t x0, x1, y0, y1, y, x;
        float *red = out + v * 3 * plane, *green = red + plane, *blue = green + plane;
        if (!src || h < 1 || w < 1 || k < 0 || k > 3) return RW_ERR_ARG;
        if (k == 1) { fy_y = 0; fy_x = 1; fx0 = w - 1; fx_y = -1; fx_x = 0; }
        if (k == 2) { fy0 = h - 1; fy_y = -1; fx0 = w - 1; fx_x = -1; }
        if (k == 3) { fy0 = h - 1; fy_y = 0; fy_x = -1; fx_y = 1; fx_x = 0; }
        if (flip) { fx0 = w - 1 - fx0; fx_y = -fx_y; fx_x = -fx_x; }
        base = 3 * (fy0 * w + fx0);
        step_y = 3 * (fy_y * w + fx_y);
        step_x = 3 * (fy_x * w + fx_x);
        x0 = left > 0 ? (left < in_w ? left : in_w) : 0;
        x1 = left + ow < in_w ? left + ow : in_w;
        if (x1 < x0) x1 = x0;
        y0 = top > 0 ? top : 0;
        y1 = top + oh < in_h ? top + oh : in_h;
        for (y = 0; y < in_h; y++) {
            float *r = red + y * in_w, *g = green + y * in_w, *bl = blue + y * in_w;
            int64_t from = x1, to = x1, o;
            if (y >= y0 && y < y1 && x0 < x1) from = x0;
            else if (pad_in_place) continue;
            if (!pad_in_place)
                for (x = 0; x < from; x++) r[x] = g[x] = bl[x] = lut[pad];
            o = base + step_y * (y - top) + step_x * (from - left);
            for (x = from; x < to; x++, o += step_x) {
                const uint8_t *px = src + o;
                r[x] = lut[px[2]];
                g[x] = lut[px[1]];
                bl[x] = lut[px[0]];
            }
            if (!pad_in_place)
                for (x = to; x < in_w; x++) r[x] = g[x] = bl[x] = lut[pad];
        }
    }
    return n_views;
}

/* Lets the loader check that it loaded the library it was written for. */
int32_t rw_abi_version(void)
{
    return 6;
}
