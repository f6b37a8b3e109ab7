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

int disenkg_abi_version(void) { return 5; }
