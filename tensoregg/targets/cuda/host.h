// The CUDA C of a module compiled for the CPU, to check it (targets/cuda/host.py): what the device
// has and C++ lacks.
#include <math.h>
#include <string.h>
#include <stdint.h>
struct te_index { long long x; };
static te_index blockIdx, threadIdx;
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)
static inline float __uint_as_float(unsigned int u) { float f; memcpy(&f, &u, 4); return f; }
static inline float __int_as_float(int u) { float f; memcpy(&f, &u, 4); return f; }
static inline double __longlong_as_double(long long u) { double f; memcpy(&f, &u, 8); return f; }
static inline float te_h2f(unsigned short h) { _Float16 f; memcpy(&f, &h, 2); return (float)f; }
static inline unsigned short te_f2h(float x) { _Float16 f = (_Float16)x; unsigned short h; memcpy(&h, &f, 2); return h; }
static inline unsigned short te_d2h(double x) { _Float16 f = (_Float16)x; unsigned short h; memcpy(&h, &f, 2); return h; }
static inline unsigned short te_f2b(float x) {
  unsigned int u; memcpy(&u, &x, 4);
  if (x != x) return (unsigned short)((u >> 16) | 0x40);
  return (unsigned short)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}
static inline unsigned short te_d2b(double x) {  /* float rounded to odd keeps one rounding */
  float f = (float)x;
  if (x == x && (double)f != x && isfinite(f)) {
    if (fabs((double)f) > fabs(x)) f = nextafterf(f, 0.0f);
    unsigned int u; memcpy(&u, &f, 4); u |= 1; memcpy(&f, &u, 4);
  }
  return te_f2b(f);
}
