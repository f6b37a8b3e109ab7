/* Element-wise part of one tile of the chunked mixture BCE (see
 * disenkg/ops/mixture_bce/chunked.py, whose `tile` is the PyTorch reference), fused into
 * one pass over the (K, R, C) logits of the tile instead of ~20 PyTorch kernels.
 *
 * Per element and component k (a_k the attention, t the smoothed target):
 *   l_k = log a_k + log sigma(x_k),  m_k = l_k - x_k = log a_k + log sigma(-x_k)
 *   L1 = LSE_k l_k = log p,  L0 = LSE_k m_k = log(1 - p),  loss = -(t L1 + (1 - t) L0)
 *   pl_k = exp(l_k - L1),  pm_k = exp(m_k - L0)
 * and with scalar weights w1 = -t w, w0 = (1 - t) w, d_k = w0 pm_k - w1 pl_k:
 *   d loss / d x_k = w1 pl_k + d_k sigma(x_k),  d loss / d log a_k = -d_k.
 *
 * exp and log are short polynomial versions (below, a few ulp in float32) so the loops
 * vectorise without -ffast-math (-fno-trapping-math lets them if-convert); NaN inputs
 * propagate to the outputs.
 * Compiled together with the other kernels (see disenkg/ops/native/__init__.py). */
#include <math.h>
#include <omp.h>
#include <stdint.h>

/* columns per block and the largest K held in the per-thread block buffers */
#define MIX_BLOCK 64
#define MIX_KMAX 16

/* exp(x): x = n ln2 + r with |r| <= ln2 / 2, exp(r) by its degree-7 Taylor polynomial
 * (truncation < 6e-9 relative), times 2^n built from its bits. Clamped to the normal
 * range, so exp(-inf) gives ~1e-38 rather than 0; NaN stays NaN. */
static inline float mix_exp(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float n = floorf(x * 1.44269504088896341f + 0.5f);
    float r = fmaf(n, -0.693145751953125f, x);
    r = fmaf(n, -1.42860682030941723e-6f, r);
    float p = 1.0f / 5040.0f;
    p = fmaf(p, r, 1.0f / 720.0f);
    p = fmaf(p, r, 1.0f / 120.0f);
    p = fmaf(p, r, 1.0f / 24.0f);
    p = fmaf(p, r, 1.0f / 6.0f);
    p = fmaf(p, r, 0.5f);
    p = fmaf(p, r, 1.0f);
    p = fmaf(p, r, 1.0f);
    int32_t ni = (int32_t)(n == n ? n : 0.0f);
    union { uint32_t u; float f; } scale = {.u = (uint32_t)(ni + 127) << 23};
    return p * scale.f;
}

/* log(u) for positive normal u: u = 2^k m with m in [sqrt(1/2), sqrt(2)), and
 * log m = 2 atanh(s), s = (m - 1) / (m + 1), by its odd series up to s^9 (|s| < 0.172:
 * truncation < 3e-9). NaN stays NaN. */
static inline float mix_log(float u) {
    union { float f; uint32_t u; } in = {.f = u};
    uint32_t b = in.u;
    uint32_t ix = b - 0x3f3504f3u;
    int32_t k = (int32_t)ix >> 23;
    uint32_t mb = b - ((uint32_t)k << 23);
    union { uint32_t u; float f; } mu = {.u = mb};
    float m = mu.f;
    float f = m - 1.0f;
    float s = f / (2.0f + f);
    float z = s * s;
    float q = fmaf(z, 2.0f / 9.0f, 2.0f / 7.0f);
    q = fmaf(q, z, 2.0f / 5.0f);
    q = fmaf(q, z, 2.0f / 3.0f);
    float lm = fmaf(s * z, q, 2.0f * s);
    float kf = (float)k;
    float out = fmaf(kf, 0.693145751953125f, fmaf(kf, 1.42860682030941723e-6f, lm));
    return u == u ? out : u;
}

/* log(1 + e) for e in [0, 1]: log of the rounded u = 1 + e plus the rounding error
 * (e - (u - 1)) / u, so tiny e keep their relative accuracy. */
static inline float mix_log1p(float e) {
    float u = 1.0f + e;
    return mix_log(u) + (e - (u - 1.0f)) / u;
}

/* x: (K, R, C) logits without the bias, overwritten by d loss / d x when want_grad;
 * bias: (C,) per-column bias added to every logit (NULL for none); loga: (K, R) log
 * attention (NULL for K = 1); row_loss: (R,) sums of the loss over the C columns;
 * gl: (K, R) d loss / d log a, added to (when want_grad and loga). t, w: scalar target
 * and gradient weight. Needs K <= MIX_KMAX. */
void mixture_bce_tile_f32(float *x, const float *bias, const float *loga, int64_t K,
                          int64_t R, int64_t C, float t, float w, int want_grad,
                          double *row_loss, float *gl, int nthreads) {
    const float w1 = -t * w, w0 = (1.0f - t) * w;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t r = 0; r < R; ++r) {
        float el[MIX_KMAX * MIX_BLOCK], em[MIX_KMAX * MIX_BLOCK], sg[MIX_KMAX * MIX_BLOCK];
        float m1[MIX_BLOCK], m0[MIX_BLOCK], s1[MIX_BLOCK], s0[MIX_BLOCK];
        float gsum[MIX_KMAX];
        double loss = 0.0;
        for (int64_t k = 0; k < K; ++k) gsum[k] = 0.0f;
        for (int64_t c0 = 0; c0 < C; c0 += MIX_BLOCK) {
            const int nb = (int)(C - c0 < MIX_BLOCK ? C - c0 : MIX_BLOCK);
            /* x_k += bias; l_k (into el) and sigma(x_k) */
            for (int64_t k = 0; k < K; ++k) {
                float *xk = x + (k * R + r) * C + c0;
                const float la = loga ? loga[k * R + r] : 0.0f;
                float *lk = el + k * MIX_BLOCK, *sk = sg + k * MIX_BLOCK;
                if (bias) {
                    const float *bc = bias + c0;
#pragma omp simd
                    for (int j = 0; j < nb; ++j) xk[j] += bc[j];
                }
#pragma omp simd
                for (int j = 0; j < nb; ++j) {
                    const float xv = xk[j];
                    const float e = mix_exp(-fabsf(xv));
                    lk[j] = la + ((xv < 0.0f ? xv : 0.0f) - mix_log1p(e));
                    sk[j] = (xv >= 0.0f ? 1.0f : e) / (1.0f + e);
                }
            }
            /* the maxima over k of l_k and m_k = l_k - x_k */
#pragma omp simd
            for (int j = 0; j < nb; ++j) {
                m1[j] = el[j];
                m0[j] = el[j] - x[r * C + c0 + j];
            }
            for (int64_t k = 1; k < K; ++k) {
                const float *xk = x + (k * R + r) * C + c0;
                const float *lk = el + k * MIX_BLOCK;
#pragma omp simd
                for (int j = 0; j < nb; ++j) {
                    const float mk = lk[j] - xk[j];
                    m1[j] = lk[j] > m1[j] ? lk[j] : m1[j];
                    m0[j] = mk > m0[j] ? mk : m0[j];
                }
            }
            /* exp(l_k - M1), exp(m_k - M0) and their sums */
#pragma omp simd
            for (int j = 0; j < nb; ++j) {
                s1[j] = 0.0f;
                s0[j] = 0.0f;
            }
            for (int64_t k = 0; k < K; ++k) {
                const float *xk = x + (k * R + r) * C + c0;
                float *lk = el + k * MIX_BLOCK, *mk = em + k * MIX_BLOCK;
#pragma omp simd
                for (int j = 0; j < nb; ++j) {
                    const float a = mix_exp(lk[j] - m1[j]);
                    const float b = mix_exp(lk[j] - xk[j] - m0[j]);
                    lk[j] = a;
                    mk[j] = b;
                    s1[j] += a;
                    s0[j] += b;
                }
            }
            float block_loss = 0.0f;
#pragma omp simd reduction(+ : block_loss)
            for (int j = 0; j < nb; ++j) {
                const float L1 = mix_log(s1[j]) + m1[j];
                const float L0 = mix_log(s0[j]) + m0[j];
                block_loss -= t * L1 + (1.0f - t) * L0;
                s1[j] = 1.0f / s1[j];
                s0[j] = 1.0f / s0[j];
            }
            loss += (double)block_loss;
            if (!want_grad) continue;
            for (int64_t k = 0; k < K; ++k) {
                float *xk = x + (k * R + r) * C + c0;
                const float *lk = el + k * MIX_BLOCK, *mk = em + k * MIX_BLOCK;
                const float *sk = sg + k * MIX_BLOCK;
                float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
                for (int j = 0; j < nb; ++j) {
                    const float plw = w1 * (lk[j] * s1[j]);
                    const float d = w0 * (mk[j] * s0[j]) - plw;
                    acc += d;
                    xk[j] = fmaf(d, sk[j], plw);
                }
                gsum[k] += acc;
            }
        }
        row_loss[r] = loss;
        if (want_grad && gl)
            for (int64_t k = 0; k < K; ++k) gl[k * R + r] -= gsum[k];
    }
}
