// The CUDA C of a program compiled for the CPU (tensoregg/runtime/cuda.py, HostBackend): what the device
// has and C++ lacks.
#include <math.h>
#include <string.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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
static void te_yield(long long next) {  /* to fiber ``next`` of the block, until someone yields back */
  long long me = te_current;
  te_current = next;
  swapcontext(&te_fibers[me], &te_fibers[next]);
}
/* Aborts unless the block runs whole warps of fibers (what a warp-wide ``what`` needs). */
static void te_whole_warps(const char* what) {
  if (te_count == 0 || te_count % 32) {
    fprintf(stderr, "tensoregg: %s in a block of %lld threads (whole warps of fibers needed)\n", what, te_count);
    abort();
  }
}
/* Warp MMAs (mma.sync) on the registers the device would hold: each fiber of a warp deposits its
   fragments in the warp's stage and yields to the next; the last computes D (fragments placed by the
   PTX ISA's tables, written out here once more: "Matrix Fragments for mma.m16n8k16 / m16n8k8"; exact
   products summed in double, rounded once to float, as the interp emulation does) and yields to the
   warp's first, which reads its D and goes on to its next MMA or barrier, yielding to the next... */
enum { TE_F16, TE_BF16, TE_TF32 };
struct te_stage { double a[32][8], b[32][4], c[32][4]; float d[32][4]; int arrived; };
static te_stage te_stages[32];
static inline unsigned te_tf32(float x) {  /* cvt.rna.tf32.f32: 10 mantissa bits, ties away */
  unsigned u; memcpy(&u, &x, 4);
  return isfinite(x) ? (u + 0x1000u) & 0xFFFFE000u : u;
}
static inline double te_element(int ab, const unsigned* regs, int i) {
  if (ab == TE_TF32) { float f; memcpy(&f, &regs[i], 4); return f; }
  unsigned short h = (unsigned short)(regs[i >> 1] >> (16 * (i & 1)));  /* the lower element in the low half */
  if (ab == TE_F16) return te_h2f(h);
  unsigned u = (unsigned)h << 16; float f; memcpy(&f, &u, 4); return f;
}
static void te_mma(int ab, const unsigned* a, const unsigned* b, const float* c, float* d) {
  te_whole_warps("warp MMA");
  long long me = te_current;
  int lane = (int)(me % 32), k = ab == TE_TF32 ? 8 : 16;
  te_stage& s = te_stages[me / 32];
  for (int i = 0; i < k / 2; ++i) s.a[lane][i] = te_element(ab, a, i);
  for (int i = 0; i < k / 4; ++i) s.b[lane][i] = te_element(ab, b, i);
  for (int i = 0; i < 4; ++i) s.c[lane][i] = c[i];
  if (++s.arrived < 32) {
    te_yield(me + 1);
  } else {
    double A[16][16], B[16][8];
    for (int l = 0; l < 32; ++l) {
      int g = l >> 2, t = l & 3;
      for (int i = 0; i < k / 2; ++i) {
        if (k == 16) A[g + 8 * ((i >> 1) & 1)][2 * t + (i & 1) + 8 * (i >> 2)] = s.a[l][i];
        else A[g + 8 * (i & 1)][t + 4 * (i >> 1)] = s.a[l][i];
      }
      for (int i = 0; i < k / 4; ++i) {
        if (k == 16) B[2 * t + (i & 1) + 8 * (i >> 1)][g] = s.b[l][i];
        else B[t + 4 * i][g] = s.b[l][i];
      }
    }
    for (int l = 0; l < 32; ++l)
      for (int i = 0; i < 4; ++i) {
        int row = (l >> 2) + 8 * (i >> 1), col = 2 * (l & 3) + (i & 1);
        double sum = s.c[l][i];
        for (int r = 0; r < k; ++r) sum += A[row][r] * B[r][col];
        s.d[l][i] = (float)sum;
      }
    s.arrived = 0;
    te_yield(me - 31);
  }
  for (int i = 0; i < 4; ++i) d[i] = s.d[lane][i];
}
#define TE_HOST_MMA(ab, kind) \
  static void te_mma_regs_##ab(unsigned a0, unsigned a1, unsigned a2, unsigned a3, unsigned b0, unsigned b1, \
                               const float* c, float* d) { \
    const unsigned a[4] = {a0, a1, a2, a3}, b[2] = {b0, b1}; \
    te_mma(kind, a, b, c, d); \
  }
TE_HOST_MMA(f16, TE_F16)
TE_HOST_MMA(bf16, TE_BF16)
TE_HOST_MMA(tf32, TE_TF32)
/* Warp shuffles (shfl.sync.bfly) likewise: each fiber of a warp deposits its value and yields to the next;
   the last publishes the deposits and yields to the warp's first; each then reads its partner's. */
struct te_shuffle { float in[32], out[32]; int arrived; };
static te_shuffle te_shuffles[32];
static float te_shfl_xor(float x, int m) {
  te_whole_warps("warp shuffle");
  long long me = te_current;
  int lane = (int)(me % 32);
  te_shuffle& s = te_shuffles[me / 32];
  s.in[lane] = x;
  if (++s.arrived < 32) {
    te_yield(me + 1);
  } else {
    memcpy(s.out, s.in, sizeof s.out);
    s.arrived = 0;
    te_yield(me - 31);
  }
  return s.out[lane ^ m];
}
/* ldmatrix likewise: each fiber of a warp deposits the address of its row and yields to the next; the last
   copies the warp's 32 rows (8 elements each) and yields to the warp's first; each then takes its elements. */
struct te_rows { const unsigned short* at[32]; unsigned short rows[32][8]; int arrived; };
static te_rows te_row_stages[32];
template <int N, bool T> static void te_ldmatrix(unsigned short* d, const unsigned short* s) {
  te_whole_warps("ldmatrix");
  long long me = te_current;
  int lane = (int)(me % 32);
  te_rows& w = te_row_stages[me / 32];
  w.at[lane] = s;
  if (++w.arrived < 32) {
    te_yield(me + 1);
  } else {
    for (int l = 0; l < 8 * N; ++l) memcpy(w.rows[l], w.at[l], sizeof w.rows[l]);
    w.arrived = 0;
    te_yield(me - 31);
  }
  for (int j = 0; j < N; ++j)
    for (int e = 0; e < 2; ++e)
      d[2 * j + e] = T ? w.rows[8 * j + 2 * (lane % 4) + e][lane / 4] : w.rows[8 * j + lane / 4][2 * (lane % 4) + e];
}
static void te_ldmatrix_x2(unsigned short* d, const unsigned short* s) { te_ldmatrix<2, false>(d, s); }
static void te_ldmatrix_x2_trans(unsigned short* d, const unsigned short* s) { te_ldmatrix<2, true>(d, s); }
static void te_ldmatrix_x4(unsigned short* d, const unsigned short* s) { te_ldmatrix<4, false>(d, s); }
/* 16-byte accesses of global memory: copies. */
static inline void te_load16(void* r, const void* g) { memcpy(r, g, 16); }
static inline void te_store16(void* g, const void* r) { memcpy(g, r, 16); }
/* cp.async lands at once here: the copy, the rest zero-filled; committing and waiting do nothing. */
template <int N> static inline void te_cp_async(void* dst, const void* src, unsigned valid) {
  memcpy(dst, src, valid);
  memset((char*)dst + valid, 0, N - valid);
}
static inline void te_cp_async_commit() {}
template <int N> static inline void te_cp_async_wait() {}
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
