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
static int64_t nms_run(const float *boxes, int64_t n, double iou_thr, int64_t limit, int64_t *keep,
                       nms_scratch *s)
{
    nms_box *by_x = s->by_x;
    int64_t n_proper = 0, n_active, stale = 0, i, kept = 0;
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
 * tta.prepare_views' numpy path builds, bit for bit, in one pass without intermediate canvases. */
int64_t rw_views_to_batch(const int64_t *views, int64_t n_views, int64_t in_h, int64_t in_w, int32_t pad,
                          float *out)
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
            for (x = 0; x < from; x++) r[x] = g[x] = bl[x] = lut[pad];
            o = base + step_y * (y - top) + step_x * (from - left);
            for (x = from; x < to; x++, o += step_x) {
                const uint8_t *px = src + o;
                r[x] = lut[px[2]];
                g[x] = lut[px[1]];
                bl[x] = lut[px[0]];
            }
            for (x = to; x < in_w; x++) r[x] = g[x] = bl[x] = lut[pad];
        }
    }
    return n_views;
}

/* Lets the loader check that it loaded the library it was written for. */
int32_t rw_abi_version(void)
{
    return 3;
}
