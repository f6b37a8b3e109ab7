/* Kernels of the convolutional scorer head (see disenkg/ops/conv_head/):
 * channels-last im2col / col2im and the fused ReLU-dropout epilogue and its gradient.
 * Compiled together with edge_kernels.c (see disenkg/ops/native/__init__.py). */
#include <omp.h>
#include <stdint.h>
#include <string.h>

static inline float bf16_load(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* round to nearest even, as torch's float -> bfloat16 conversion (NaN stays NaN) */
static inline uint16_t bf16_store(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

#define IDENT(v) (v)
#define FLOAT_POSITIVE(v) (!((v) <= 0))
/* bfloat16 bits as a signed 16-bit integer: > 0 iff the value is > 0 (or a positive NaN) */
#define BF16_POSITIVE(v) ((int16_t)(v) > 0)

/* Each instantiation defines T, ACC, LOAD, STORE, ZERO, POSITIVE and SUFFIX;
 * patch_kernels.h undefines them at its end. */
#define T float
#define ACC float
#define LOAD IDENT
#define STORE IDENT
#define ZERO 0.0f
#define POSITIVE FLOAT_POSITIVE
#define SUFFIX f32
#include "patch_kernels.h"

#define T double
#define ACC double
#define LOAD IDENT
#define STORE IDENT
#define ZERO 0.0
#define POSITIVE FLOAT_POSITIVE
#define SUFFIX f64
#include "patch_kernels.h"

#define T uint16_t
#define ACC float
#define LOAD bf16_load
#define STORE bf16_store
#define ZERO 0
#define POSITIVE BF16_POSITIVE
#define SUFFIX bf16
#include "patch_kernels.h"

/* acc[i] += x[i] for a float32 accumulator and bfloat16 values (the per-chunk gradient
 * GEMMs of the bfloat16 head). */
void accumulate_bf16(float *acc, const uint16_t *x, int64_t n, int nthreads) {
#pragma omp parallel for simd schedule(static) num_threads(nthreads)
    for (int64_t i = 0; i < n; ++i) acc[i] += bf16_load(x[i]);
}
