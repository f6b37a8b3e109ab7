/* Typed body of the convolution-head kernels; included by patch_kernels.c once per
 * storage type T (float, double, or bfloat16 held as uint16_t) with its accumulation
 * type ACC and the LOAD (T -> ACC) / STORE (ACC -> T) conversions.
 *
 * Layout ("channels last"): an image stack x is (n, H, W) with strides (sn, sh, 1); its
 * patch matrix has one row per output position p = (img * Ho + i) * Wo + j and leading
 * dimension ld >= k * k: cols[p, a * k + b] = x[img, i + a, j + b], then (if ld > k * k)
 * a column of ones (the GEMM bias column) and zeros.  Feature maps are (n, L, C) with
 * L = Ho * Wo, and per-image channel masks (n, C) are ACC.
 */

#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SUFFIX)

void FN(im2col_cl)(const T *x, int64_t n, int64_t sn, int64_t sh, int64_t H, int64_t W,
                   int64_t k, int64_t ld, T *out, int nthreads) {
    const int64_t Ho = H - k + 1, Wo = W - k + 1, kk = k * k;
    const T one = STORE((ACC)1), zero = STORE((ACC)0);
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t img = 0; img < n; ++img) {
        const T *xi = x + img * sn;
        T *o = out + img * Ho * Wo * ld;
        for (int64_t i = 0; i < Ho; ++i) {
            for (int64_t j = 0; j < Wo; ++j) {
                T *row = o + (i * Wo + j) * ld;
                for (int64_t a = 0; a < k; ++a) {
                    const T *src = xi + (i + a) * sh + j;
                    for (int64_t b = 0; b < k; ++b) row[a * k + b] = src[b];
                }
                for (int64_t c = kk; c < ld; ++c) row[c] = c == kk ? one : zero;
            }
        }
    }
}

/* Adjoint of im2col_cl (first k * k columns): out (n, H, W) contiguous, overwritten. */
void FN(col2im_cl)(const T *cols, int64_t n, int64_t H, int64_t W, int64_t k, int64_t ld,
                   ACC *out, int nthreads) {
    const int64_t Ho = H - k + 1, Wo = W - k + 1;
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t img = 0; img < n; ++img) {
        ACC *o = out + img * H * W;
        const T *c = cols + img * Ho * Wo * ld;
        memset(o, 0, sizeof(ACC) * H * W);
        for (int64_t i = 0; i < Ho; ++i) {
            for (int64_t j = 0; j < Wo; ++j) {
                const T *row = c + (i * Wo + j) * ld;
                for (int64_t a = 0; a < k; ++a) {
                    ACC *dst = o + (i + a) * W + j;
                    for (int64_t b = 0; b < k; ++b) dst[b] += LOAD(row[a * k + b]);
                }
            }
        }
    }
}

/* z <- relu(z) * mask[img, c] in place (mask may be NULL). */
void FN(relu_mask)(T *z, const ACC *mask, int64_t n, int64_t L, int64_t C, int nthreads) {
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t img = 0; img < n; ++img) {
        const ACC *m = mask ? mask + img * C : NULL;
        for (int64_t l = 0; l < L; ++l) {
            T *zr = z + (img * L + l) * C;
            for (int64_t c = 0; c < C; ++c) {
                const ACC v = LOAD(zr[c]);
                zr[c] = v <= 0 ? STORE((ACC)0) : (m ? STORE(v * m[c]) : zr[c]);  /* NaN stays */
            }
        }
    }
}

/* da <- da * mask[img, c] where a > 0, else 0, in place (the gradient through
 * a = relu(z) * mask; mask may be NULL). */
void FN(relu_mask_backward)(const T *a, T *da, const ACC *mask, int64_t n, int64_t L,
                            int64_t C, int nthreads) {
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t img = 0; img < n; ++img) {
        const ACC *m = mask ? mask + img * C : NULL;
        for (int64_t l = 0; l < L; ++l) {
            const T *ar = a + (img * L + l) * C;
            T *dr = da + (img * L + l) * C;
            for (int64_t c = 0; c < C; ++c) {
                const int on = LOAD(ar[c]) > 0;
                dr[c] = on ? (m ? STORE(LOAD(dr[c]) * m[c]) : dr[c]) : STORE((ACC)0);
            }
        }
    }
}

#undef FN
#undef CAT
#undef CAT_
