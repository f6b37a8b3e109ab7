/* Typed body of the edge kernels; included by edge_kernels.c once per REAL / SUFFIX.
 *
 * Notation (all arrays C-contiguous): node tensors A, B are (N, K, F); the relation table
 * T is (R, K, F) and may be NULL (all ones); edge weights w and edge outputs are (E, K).
 * A CSR "side" is a permutation order[] of the edges grouped by one endpoint, with
 * ptr[n]..ptr[n+1] delimiting node n, and, at the same positions p, the edge's opposite
 * endpoint other[p] and relation rel[p] (int32 copies in CSR order, so that the inner loops
 * read them in sequence; only the (E, K) arrays are reached through order[p]).
 */

#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SUFFIX)

/* out[e, k] = sum_f A[dst[e], k, f] * B[src[e], k, f] * T[rel[e], k, f], over the dst side
 * (ptr, order, other = src, rel) of the N_dst receivers: A's row stays in cache for all of
 * its edges and B's are the only rows gathered. */
void FN(edge_sddmm)(const REAL *A, const REAL *B, const REAL *T, const int64_t *ptr,
                    const int64_t *order, const int32_t *other, const int32_t *rel, int64_t N,
                    int64_t K, int64_t F, REAL *out, int nthreads) {
#pragma omp parallel for schedule(dynamic, 64) num_threads(nthreads)
    for (int64_t n = 0; n < N; ++n) {
        const REAL *a = A + n * K * F;
        for (int64_t p = ptr[n]; p < ptr[n + 1]; ++p) {
            const REAL *b = B + (int64_t)other[p] * K * F;
            const REAL *t = T ? T + (int64_t)rel[p] * K * F : NULL;
            REAL *o = out + order[p] * K;
            for (int64_t k = 0; k < K; ++k) {
                REAL s = 0;
                const REAL *ak = a + k * F, *bk = b + k * F;
                if (t) {
                    const REAL *tk = t + k * F;
#pragma omp simd reduction(+ : s)
                    for (int64_t f = 0; f < F; ++f) s += ak[f] * bk[f] * tk[f];
                } else {
#pragma omp simd reduction(+ : s)
                    for (int64_t f = 0; f < F; ++f) s += ak[f] * bk[f];
                }
                o[k] = s;
            }
        }
    }
}

/* For every node n of the CSR side (ptr, order):
 *   out[n, k, :] = sum_{e in side(n)} w[e, k] * B[other[e], k, :] * T[rel[e], k, :]
 * where other is the edge's opposite endpoint.  Each thread owns whole output rows, assigned
 * round-robin in blocks of 64 (static, so the relation sums below are reproducible).
 * With G (R, K, F) not NULL, the same pass also reduces per relation
 *   G[r, k, :] = sum_{e: rel[e] = r} w[e, k] * A[n(e), k, :] * B[other[e], k, :]
 * (n(e) the edge's endpoint on this side; per-thread accumulators summed at the end), the
 * table gradient of both edge products, so B's rows are gathered once for both.
 * With accumulate != 0 the rows are added to out's values instead of replacing them (a
 * gradient summed into another without a second node-sized buffer). */
void FN(edge_spmm)(const REAL *B, const REAL *T, const REAL *w, const int64_t *ptr,
                   const int64_t *order, const int32_t *other, const int32_t *rel, int64_t N,
                   int64_t K, int64_t F, REAL *out, const REAL *A, int64_t R, REAL *G,
                   int accumulate, int nthreads) {
    const int64_t size = R * K * F;
    REAL *buf = NULL;
    if (G) {
        buf = (REAL *)calloc((size_t)nthreads * (size_t)size, sizeof(REAL));
        if (!buf) { /* one shared accumulator, one thread */
            nthreads = 1;
            memset(G, 0, sizeof(REAL) * size);
        }
    }
#pragma omp parallel num_threads(nthreads)
    {
        REAL *acc = G ? (buf ? buf + (int64_t)omp_get_thread_num() * size : G) : NULL;
#pragma omp for schedule(static, 64)
        for (int64_t n = 0; n < N; ++n) {
            REAL *o = out + n * K * F;
            const REAL *a = A ? A + n * K * F : NULL;
            if (!accumulate) memset(o, 0, sizeof(REAL) * K * F);
            for (int64_t p = ptr[n]; p < ptr[n + 1]; ++p) {
                const int64_t e = order[p];
                const REAL *b = B + (int64_t)other[p] * K * F;
                const REAL *t = T ? T + (int64_t)rel[p] * K * F : NULL;
                REAL *g = acc ? acc + (int64_t)rel[p] * K * F : NULL;
                for (int64_t k = 0; k < K; ++k) {
                    const REAL c = w[e * K + k];
                    if (c == 0) continue;
                    REAL *ok = o + k * F;
                    const REAL *bk = b + k * F;
                    if (t) {
                        const REAL *tk = t + k * F;
#pragma omp simd
                        for (int64_t f = 0; f < F; ++f) ok[f] += c * bk[f] * tk[f];
                    } else {
#pragma omp simd
                        for (int64_t f = 0; f < F; ++f) ok[f] += c * bk[f];
                    }
                    if (g) {
                        REAL *gk = g + k * F;
                        const REAL *ak = a + k * F;
#pragma omp simd
                        for (int64_t f = 0; f < F; ++f) gk[f] += c * ak[f] * bk[f];
                    }
                }
            }
        }
    }
    if (buf) {
#pragma omp parallel for schedule(static) num_threads(nthreads)
        for (int64_t i = 0; i < size; ++i) {
            REAL s = 0;
            for (int th = 0; th < nthreads; ++th) s += buf[(int64_t)th * size + i];
            G[i] = s;
        }
        free(buf);
    }
}

#undef FN
#undef CAT
#undef CAT_
