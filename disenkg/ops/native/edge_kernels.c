/* Fused edge kernels of the DisenKGAT layer (see disenkg/ops/native/__init__.py).
 * Compiled on first use with the system C compiler and OpenMP; loaded with ctypes. */
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define REAL float
#define SUFFIX f32
#include "edge_kernels.h"
#undef REAL
#undef SUFFIX

#define REAL double
#define SUFFIX f64
#include "edge_kernels.h"
#undef REAL
#undef SUFFIX

/* DISENKG_ABI_VERSION comes from the build flags (disenkg/ops/native/__init__.py). */
int disenkg_abi_version(void) { return DISENKG_ABI_VERSION; }
