// The CUDA C of a program compiled for the CPU (tensoregg/runtime/cuda.py, HostBackend): what the device
// has and C++ lacks.
#include <math.h>
#include <string.h>
#include <stdint.h>
#include <ucontext.h>
#include <functional>
#include <vector>
struct te_index { long long x; };
static te_index blockIdx, te_threads[1024];
static long long te_current, te_count;
#define threadIdx te_threads[te_current]
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static  /* one block runs at a time: its threads share the function's statics */
#define __syncthreads() te_barrier()
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
/* A kernel with barriers runs each block's threads as fibers: a thread runs until its barrier, then
   the next one does; the last one's barrier resumes the first. */
static std::vector<ucontext_t> te_fibers;
static ucontext_t te_main;
static std::function<void()> te_kernel;
static void te_barrier() {
  long long me = te_current;
  te_current = (me + 1) % te_count;
  swapcontext(&te_fibers[me], &te_fibers[te_current]);
}
static void te_entry() { te_kernel(); }
template <class F> static void te_launch(long long blocks, long long threads, bool fibers, F kernel) {
  for (long long t = 0; t < threads; ++t) te_threads[t].x = t;
  if (!fibers) {
    for (long long b = 0; b < blocks; ++b)
      for (te_current = 0; te_current < threads; ++te_current) { blockIdx.x = b; kernel(); }
    return;
  }
  const size_t stack = 1 << 16;
  std::vector<char> stacks(stack * threads);
  te_fibers.resize(threads);
  te_count = threads;
  te_kernel = kernel;
  for (long long b = 0; b < blocks; ++b) {
    blockIdx.x = b;
    for (long long t = 0; t < threads; ++t) {
      getcontext(&te_fibers[t]);
      te_fibers[t].uc_stack.ss_sp = &stacks[stack * t];
      te_fibers[t].uc_stack.ss_size = stack;
      te_fibers[t].uc_link = &te_main;
      makecontext(&te_fibers[t], te_entry, 0);
    }
    for (te_current = 0; te_current < threads; ++te_current)  /* after the last barrier: each to its end */
      swapcontext(&te_main, &te_fibers[te_current]);
  }
}
