/* ReefWatch native kernels: weighted-box-fusion clustering and greedy NMS.
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
    int64_t cell;
    int64_t next, prev; /* links in the cell's list */
} wbf_cluster;

static int cmp_double(const void *pa, const void *pb)
{
    double a = *(const double *)pa, b = *(const double *)pb;
    return (a > b) - (a < b);
}

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
    qsort(scratch, (size_t)n, sizeof(double), cmp_double);
    p = scratch[(n * 3) / 4];
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
        int64_t start = bounds[2 * g], end = bounds[2 * g + 1], n = 0, n_cells;
        if (start < 0 || end > n_rows || start >= end) continue;
        n_cells = grid_size(rows + start * ROW_W, end - start, k, scratch);
        for (i = 0; i < n_cells * n_cells; i++) head[i] = -1;
        for (i = start; i < end; i++) {
            const double *r = rows + i * ROW_W;
            int64_t idx = best_cluster(c, n, head, n_cells, r, k, iou_thr);
            if (idx < 0) {
                seed(&c[n], r);
                cell_insert(head, c, n, cell_of(c[n].cx, n_cells) * n_cells + cell_of(c[n].cy, n_cells));
                first[total + n] = i;
                row_cluster[i] = total + n;
                n++;
            } else {
                int64_t cell;
                join(&c[idx], r, f32_divisor);
                cell = cell_of(c[idx].cx, n_cells) * n_cells + cell_of(c[idx].cy, n_cells);
                if (cell != c[idx].cell) {
                    cell_remove(head, c, idx);
                    cell_insert(head, c, idx, cell);
                }
                row_cluster[i] = total + idx;
            }
        }
        for (i = 0; i < n; i++) {
            double *v = values + 9 * (total + i);
            for (j = 0; j < 4; j++) {
                v[j] = c[i].a[j];
                v[5 + j] = c[i].f[j];
            }
            v[4] = c[i].conf;
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
/* Greedy NMS, torchvision's nms_kernel to the bit.                         */
/* ------------------------------------------------------------------------ */

#define NMS_CHUNK 32

typedef struct {
    float x1;
    int64_t rank;
} x1_rank;

static int cmp_x1(const void *pa, const void *pb)
{
    const x1_rank *a = (const x1_rank *)pa, *b = (const x1_rank *)pb;
    if (a->x1 < b->x1) return -1;
    if (a->x1 > b->x1) return 1;
    return (a->rank > b->rank) - (a->rank < b->rank);
}

/* torchvision's test: float32 IoU of a kept box b and a later box o, compared with the threshold as a double. */
static int suppresses(const float *b, const float *o, float area_b, float area_o, double iou_thr)
{
    float w = (b[2] < o[2] ? b[2] : o[2]) - (b[0] > o[0] ? b[0] : o[0]);
    float h = (b[3] < o[3] ? b[3] : o[3]) - (b[1] > o[1] ? b[1] : o[1]);
    float inter;
    w = w > 0.0f ? w : 0.0f;
    h = h > 0.0f ? h : 0.0f;
    inter = w * h;
    return (double)(inter / (area_b + area_o - inter)) > iou_thr;
}

/* boxes: (n, 4) float32 xyxy, already in visiting order (descending score, ties
 * in index order) and shifted by class. A box is kept unless a kept box before
 * it has float32 IoU > iou_thr, compared as a double as torchvision does
 * (`ovr > iou_threshold`, float promoted to double). Boxes with x2 <= x1 or
 * y2 <= y1 (or NaN) overlap nothing: always kept, never suppressing.
 * Writes the kept ranks, ascending, to keep (n entries) and returns how many,
 * at most limit (the rest is never visited). Only boxes whose x-range overlaps
 * the kept box's are visited: they are sorted by x1 and grouped in chunks of
 * NMS_CHUNK with each chunk's largest x2, so one wide box slows only its chunk. */
int64_t rw_nms(const float *boxes, int64_t n, double iou_thr, int64_t limit, int64_t *keep)
{
    x1_rank *by_x;
    float *area, *sx2, *chunk_x2;
    unsigned char *dead;
    int64_t *pos, n_proper = 0, i, kept = 0;
    if (n < 0 || !(iou_thr >= 0)) return RW_ERR_ARG;
    if (n == 0 || limit <= 0) return 0;
    by_x = (x1_rank *)malloc((size_t)n * sizeof(x1_rank));
    area = (float *)malloc((size_t)n * sizeof(float));
    sx2 = (float *)malloc((size_t)n * sizeof(float));
    chunk_x2 = (float *)malloc(((size_t)n / NMS_CHUNK + 1) * sizeof(float));
    dead = (unsigned char *)calloc((size_t)n, 1);
    pos = (int64_t *)malloc((size_t)n * sizeof(int64_t));
    if (!by_x || !area || !sx2 || !chunk_x2 || !dead || !pos) {
        free(by_x); free(area); free(sx2); free(chunk_x2); free(dead); free(pos);
        return RW_ERR_NOMEM;
    }
    for (i = 0; i < n; i++) {
        const float *b = boxes + 4 * i;
        area[i] = (b[2] - b[0]) * (b[3] - b[1]);
        pos[i] = -1;
        if (b[2] > b[0] && b[3] > b[1]) {
            by_x[n_proper].x1 = b[0];
            by_x[n_proper].rank = i;
            n_proper++;
        }
    }
    qsort(by_x, (size_t)n_proper, sizeof(x1_rank), cmp_x1);
    for (i = 0; i < n_proper; i++) {
        float x2 = boxes[4 * by_x[i].rank + 2];
        pos[by_x[i].rank] = i;
        sx2[i] = x2;
        if (i % NMS_CHUNK == 0 || x2 > chunk_x2[i / NMS_CHUNK]) chunk_x2[i / NMS_CHUNK] = x2;
    }
    for (i = 0; i < n && kept < limit; i++) {
        const float *b = boxes + 4 * i;
        int64_t lo, hi, ch;
        if (dead[i]) continue;
        keep[kept++] = i;
        if (pos[i] < 0) continue; /* no area: suppresses nothing */
        /* Boxes overlapping in x start before b's x2: positions [0, hi). */
        lo = pos[i];
        hi = n_proper;
        while (lo < hi) {
            int64_t mid = lo + (hi - lo) / 2;
            if (by_x[mid].x1 < b[2]) lo = mid + 1; else hi = mid;
        }
        if (iou_thr > 0.0) {
            /* IoU <= IoU of the x-intervals = ox / (ox + |dx1| + |dx2|), so IoU > t needs
             * |x1_j - x1_b| < w_b (1 - t) / t: only x1 in that window can be suppressed.
             * The window is widened by 1% and a relative 1e-4 to cover float32 rounding. */
            double w = (double)b[2] - (double)b[0];
            double reach = w * (1.0 - iou_thr) / iou_thr * 1.01 + 1e-4 * (fabs((double)b[0]) + 1.0);
            double from = (double)b[0] - reach, to = (double)b[0] + reach;
            int64_t a = 0, z = pos[i], p;
            while (a < z) {
                int64_t mid = a + (z - a) / 2;
                if ((double)by_x[mid].x1 <= from) a = mid + 1; else z = mid;
            }
            for (p = a; p < hi && (double)by_x[p].x1 < to; p++) {
                int64_t j = by_x[p].rank;
                if (j <= i || dead[j]) continue;
                if (suppresses(b, boxes + 4 * j, area[i], area[j], iou_thr)) dead[j] = 1;
            }
            continue;
        }
        for (ch = 0; ch * NMS_CHUNK < hi; ch++) {
            int64_t p, p_end = (ch + 1) * NMS_CHUNK < hi ? (ch + 1) * NMS_CHUNK : hi;
            if (!(chunk_x2[ch] > b[0])) continue;
            for (p = ch * NMS_CHUNK; p < p_end; p++) {
                int64_t j = by_x[p].rank;
                if (j <= i || dead[j] || !(sx2[p] > b[0])) continue;
                if (suppresses(b, boxes + 4 * j, area[i], area[j], iou_thr)) dead[j] = 1;
            }
        }
    }
    free(by_x); free(area); free(sx2); free(chunk_x2); free(dead); free(pos);
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

/* Lets the loader check that it loaded the library it was written for. */
int32_t rw_abi_version(void)
{
    return 2;
}
