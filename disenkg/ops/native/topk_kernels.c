/* Completing a KG (disenkg/runs/complete.py): a running top-k of score rows across column
 * tiles, and the TSV lines of the answers. The PyTorch / NumPy references are
 * disenkg.ops.running_topk.RunningTopK (impl "eager") and disenkg.runs.complete._TSV.
 * Compiled together with the other kernels (see disenkg/ops/native/__init__.py). */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* columns whose maximum is compared with the k-th value at once */
#define TOPK_BLOCK 32

/* One row: vals / ids (k) hold the best entries so far, ordered by (value descending,
 * column ascending), -inf / -1 where empty. Tiles arrive in ascending column order, so an
 * element enters only when strictly greater than the current k-th value (an equal value has
 * a larger column and ranks after it); -inf and NaN never enter. A block of columns is
 * scanned only when one of them beats the k-th value (a vectorised test). */
static void topk_row(const float *s, int64_t T, int64_t col0, int64_t k, float *v,
                     int64_t *id) {
    float worst = v[k - 1];
    for (int64_t j = 0; j < T; j += TOPK_BLOCK) {
        int64_t n = T - j < TOPK_BLOCK ? T - j : TOPK_BLOCK;
        const float *b = s + j;
        int any = 0;
        if (n == TOPK_BLOCK) {
#pragma omp simd reduction(| : any)
            for (int64_t c = 0; c < TOPK_BLOCK; ++c) any |= b[c] > worst;
        } else {
            for (int64_t c = 0; c < n; ++c) any |= b[c] > worst;
        }
        if (!any) continue;
        for (int64_t c = 0; c < n; ++c) {
            float x = b[c];
            if (!(x > worst)) continue;
            int64_t p = k - 1;
            while (p > 0 && v[p - 1] < x) {
                v[p] = v[p - 1];
                id[p] = id[p - 1];
                --p;
            }
            v[p] = x;
            id[p] = col0 + j + c;
            worst = v[k - 1];
        }
    }
}

/* scores: (B, T) with row stride ld, the columns col0 .. col0 + T - 1 of each row;
 * vals (B, k) float, ids (B, k) int64: the running state, updated in place. */
void topk_update_f32(const float *scores, int64_t B, int64_t T, int64_t ld, int64_t col0,
                     int64_t k, float *vals, int64_t *ids, int nthreads) {
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t b = 0; b < B; ++b)
        topk_row(scores + b * ld, T, col0, k, vals + b * k, ids + b * k);
}

/* The TSV lines "head\trelation\ttail\tdirection\trank\tscore\n" of n answers: names[off[i]
 * .. off[i + 1]) is entity i's UTF-8 name; rel / dir the relation's and direction's; the
 * score printed as printf's %.6g of the float widened to double (as Python's "%.6g" % x).
 * Writes at most cap bytes into out; returns the bytes written, or -1 when cap is too small
 * (nothing then counts as written). */
int64_t format_tsv_rows(const int64_t *head, const int64_t *tail, const int32_t *rank,
                        const float *score, int64_t n, const char *names, const int64_t *off,
                        const char *rel, int64_t rel_len, const char *dir, int64_t dir_len,
                        char *out, int64_t cap) {
    int64_t w = 0;
    char num[64];
    for (int64_t i = 0; i < n; ++i) {
        int64_t h = head[i], t = tail[i];
        int64_t hl = off[h + 1] - off[h], tl = off[t + 1] - off[t];
        int rl = snprintf(num, 24, "%d\t", rank[i]);
        int sl = snprintf(num + 24, 40, "%.6g\n", (double)score[i]);
        if (rl < 0 || sl < 0 || rl >= 24 || sl >= 40) return -1;
        int64_t need = hl + rel_len + tl + dir_len + 4 + rl + sl;
        if (w + need > cap) return -1;
        char *o = out + w;
        memcpy(o, names + off[h], (size_t)hl), o += hl, *o++ = '\t';
        memcpy(o, rel, (size_t)rel_len), o += rel_len, *o++ = '\t';
        memcpy(o, names + off[t], (size_t)tl), o += tl, *o++ = '\t';
        memcpy(o, dir, (size_t)dir_len), o += dir_len, *o++ = '\t';
        memcpy(o, num, (size_t)rl), o += rl;
        memcpy(o, num + 24, (size_t)sl);
        w += need;
    }
    return w;
}
