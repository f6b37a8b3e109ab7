/* Typed body of the convolution-head kernels; included by patch_kernels.c once per
 * storage type T (float, double, or bfloat16 held as uint16_t) with its accumulation
 * type ACC, the LOAD (T -> ACC) / STORE (ACC -> T) conversions, the ZERO of T and the
 * POSITIVE(v) test (on the raw bits for bfloat16).
 *
 * Layout ("channels last"): an image stack x is (n, H, W) with strides (sn, sh, 1); its
 * patch matrix has one row per output position p = (img * Ho + i) * Wo + j and leading
 * dimension ld >= k * k: cols[p, a * k + b] = x[img, i + a, j + b], then (if ld > k * k)
 * a column of ones (the GEMM bias column) and zeros.  Feature maps are (n, L, C) with
 * L = Ho * Wo; per-image channel masks (n, C) are bytes (0 = dropped).
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

/* z <- relu(z) where keep[img, c] (a 0/1 byte mask; NULL keeps all), else 0, in place.
 * POSITIVE is "not <= 0" so that NaN stays NaN, as torch.relu. */
void FN(relu_mask)(T *z, const uint8_t *keep, int64_t n, int64_t L, int64_t C,
                   int nthreads) {
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t img = 0; img < n; ++img) {
        const uint8_t *k = keep ? keep + img * C : NULL;
        for (int64_t l = 0; l < L; ++l) {
            T *zr = z + (img * L + l) * C;
            if (k) {
#pragma omp simd
                for (int64_t c = 0; c < C; ++c) zr[c] = (k[c] && POSITIVE(zr[c])) ? zr[c] : ZERO;
            } else {
#pragma omp simd
                for (int64_t c = 0; c < C; ++c) zr[c] = POSITIVE(zr[c]) ? zr[c] : ZERO;
            }
        }
    }
}

/* da <- da where a > 0, else 0, in place: the gradient through a = relu(z) * keep (a is
 * the output of relu_mask, so a > 0 iff z > 0 and the channel is kept). */
void FN(relu_mask_backward)(const T *a, T *da, int64_t size, int nthreads) {
#pragma omp parallel for simd schedule(static) num_threads(nthreads)
    for (int64_t i = 0; i < size; ++i) da[i] = POSITIVE(a[i]) ? da[i] : ZERO;
}

#undef FN
#undef CAT
#undef CAT_
#undef T
#undef ACC
#undef LOAD
#undef STORE
#undef ZERO
#undef POSITIVE
#undef SUFFIX
