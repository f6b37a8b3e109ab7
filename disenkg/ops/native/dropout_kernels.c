/* Counter-based dropout (see disenkg/ops/dropout.py, whose `keep_mask` is the PyTorch
 * reference): element i of a tensor is kept iff the top 32 bits of
 *   mix64(seed + (i + 1) * 0x9E3779B97F4A7C15)
 * (the SplitMix64 output function) are >= threshold, so the mask is a function of
 * (seed, i): the same for any thread count, rebuilt in backward instead of stored.
 * Compiled together with the other kernels (see disenkg/ops/native/__init__.py). */
#include <omp.h>
#include <stdint.h>

#define DROP_GOLDEN 0x9E3779B97F4A7C15ull

static inline uint32_t drop_bits(uint64_t seed, uint64_t i) {
    uint64_t z = seed + (i + 1) * DROP_GOLDEN;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (uint32_t)(z >> 32);
}

/* out[i] = x[i] * scale where element i is kept, else 0 (out may be x) */
#define DROPOUT(SUFFIX, REAL)                                                              \
    void dropout_##SUFFIX(const REAL *x, REAL *out, int64_t n, uint64_t seed,             \
                          uint32_t threshold, REAL scale, int nthreads) {                 \
        _Pragma("omp parallel for simd schedule(static) num_threads(nthreads)")            \
        for (int64_t i = 0; i < n; ++i)                                                     \
            out[i] = drop_bits(seed, (uint64_t)i) >= threshold ? x[i] * scale : (REAL)0;   \
    }

DROPOUT(f32, float)
DROPOUT(f64, double)
