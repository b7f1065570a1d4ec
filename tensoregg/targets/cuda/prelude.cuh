// What every module tensoregg writes for the cuda target starts with (targets/cuda/codegen.py).
#ifdef __CUDA_ARCH__
__device__ __forceinline__ float te_h2f(unsigned short h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ unsigned short te_f2h(float f) { unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
__device__ __forceinline__ unsigned short te_d2h(double d) { unsigned short h; asm("cvt.rn.f16.f64 %0, %1;" : "=h"(h) : "d"(d)); return h; }
__device__ __forceinline__ unsigned short te_f2b(float f) { unsigned short b; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(b) : "f"(f)); return b; }
__device__ __forceinline__ unsigned short te_d2b(double d) { unsigned short b; asm("cvt.rn.bf16.f64 %0, %1;" : "=h"(b) : "d"(d)); return b; }
// mma.sync on a warp's registers: A in four .b32 registers, B in two (ptxas's; the CPU check has its own).
__device__ __forceinline__ unsigned te_tf32(float x) { unsigned r; asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x)); return r; }
#define TE_MMA(ab, shape) \
  __device__ __forceinline__ void te_mma_regs_##ab(unsigned a0, unsigned a1, unsigned a2, unsigned a3, unsigned b0, \
                                                   unsigned b1, const float* c, float* d) { \
    asm("mma.sync.aligned." #shape ".row.col.f32." #ab "." #ab ".f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, " \
        "{%10, %11, %12, %13};" : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3]) \
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3])); \
  }
TE_MMA(f16, m16n8k16)
TE_MMA(bf16, m16n8k16)
TE_MMA(tf32, m16n8k8)
// __shfl_xor_sync(0xffffffff, x, m) without CUDA's headers: the butterfly exchange within the whole warp.
__device__ __forceinline__ float te_shfl_xor(float x, int m) {
  float r; asm volatile("shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;" : "=f"(r) : "f"(x), "r"(m)); return r;
}
// One 16-byte access of global memory (a float4, eight halves) to or from a thread's registers.
struct alignas(16) te_v16 { unsigned x, y, z, w; };
__device__ __forceinline__ void te_load16(void* r, const void* g) { te_v16 v = *(const te_v16*)g; memcpy(r, &v, 16); }
__device__ __forceinline__ void te_store16(void* g, const void* r) { te_v16 v; memcpy(&v, r, 16); *(te_v16*)g = v; }
// ldmatrix.sync.aligned.m8n8.x{2,4}.shared.b16: lane 8 j + r gives the address of row r of 8 x 8 matrix j; each
// thread gets row lane / 4, columns 2 (lane % 4) and + 1 of each matrix j, here as elements 2 j and 2 j + 1
// (.trans: rows 2 (lane % 4) and + 1 of column lane / 4).
__device__ __forceinline__ void te_unpack(unsigned short* d, unsigned r) { d[0] = (unsigned short)r; d[1] = (unsigned short)(r >> 16); }
__device__ __forceinline__ void te_ldmatrix_x2(unsigned short* d, const unsigned short* s) {
  unsigned r0, r1;
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];" : "=r"(r0), "=r"(r1)
               : "r"((unsigned)__cvta_generic_to_shared(s)));
  te_unpack(d, r0); te_unpack(d + 2, r1);
}
__device__ __forceinline__ void te_ldmatrix_x2_trans(unsigned short* d, const unsigned short* s) {
  unsigned r0, r1;
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];" : "=r"(r0), "=r"(r1)
               : "r"((unsigned)__cvta_generic_to_shared(s)));
  te_unpack(d, r0); te_unpack(d + 2, r1);
}
__device__ __forceinline__ void te_ldmatrix_x4(unsigned short* d, const unsigned short* s) {
  unsigned r0, r1, r2, r3;
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];" : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"((unsigned)__cvta_generic_to_shared(s)));
  te_unpack(d, r0); te_unpack(d + 2, r1); te_unpack(d + 4, r2); te_unpack(d + 6, r3);
}
// cp.async (sm_80): N bytes from global into shared memory, the first `valid` read and the rest zero-filled,
// there for the thread once it waits for the group (cp.async.wait_group), for the block after a barrier that
// follows; before sm_80 a plain copy (the commit and the wait then do nothing).
template <int N> __device__ __forceinline__ void te_cp_async(void* dst, const void* src, unsigned valid) {
#if __CUDA_ARCH__ >= 800
  unsigned s = (unsigned)__cvta_generic_to_shared(dst);
  if (N == 16) asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(s), "l"(src), "r"(valid) : "memory");
  else asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;" :: "r"(s), "l"(src), "n"(N), "r"(valid) : "memory");
#else
  for (unsigned i = 0; i < N; ++i) ((unsigned char*)dst)[i] = i < valid ? ((const unsigned char*)src)[i] : 0;
#endif
}
__device__ __forceinline__ void te_cp_async_commit() {
#if __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
template <int N> __device__ __forceinline__ void te_cp_async_wait() {
#if __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;" :: "n"(N) : "memory");
#endif
}
#endif
__device__ __forceinline__ float te_b2f(unsigned short b) { return __uint_as_float((unsigned int)b << 16); }
__device__ __forceinline__ float te_rh(float x) { return te_h2f(te_f2h(x)); }
__device__ __forceinline__ float te_rb(float x) { return te_b2f(te_f2b(x)); }
template <class T> __device__ __forceinline__ T te_max(T a, T b) { return (a > b || a != a) ? a : b; }
template <class T> __device__ __forceinline__ T te_min(T a, T b) { return (a < b || a != a) ? a : b; }
template <class T> __device__ __forceinline__ T te_div(T a, T d) { return d == 0 ? (T)0 : d == (T)-1 ? (T)(0 - (unsigned long long)a) : (T)(a / d); }
template <class T> __device__ __forceinline__ T te_rem(T a, T d) { return (d == 0 || d == (T)-1) ? (T)0 : (T)(a % d); }
template <class T, class U> __device__ __forceinline__ T te_shl(T a, T s) { return (U)s >= 8 * sizeof(T) ? (T)0 : (T)((U)a << (U)s); }
template <class T, class U> __device__ __forceinline__ T te_shr(T a, T s) { return (U)s >= 8 * sizeof(T) ? (T)0 : (T)((U)a >> (U)s); }
__device__ __forceinline__ long long te_f2i(double x) {
  if (x != x) return 0;
  if (x >= 9223372036854775808.0) return 9223372036854775807LL;
  if (x <= -9223372036854775808.0) return (long long)0x8000000000000000ULL;
  return (long long)x;
}
__device__ __forceinline__ unsigned long long te_f2u(double x) {
  if (x >= 18446744073709551616.0) return 0xFFFFFFFFFFFFFFFFULL;
  if (x >= 9223372036854775808.0) return (unsigned long long)x;
  return (unsigned long long)te_f2i(x);
}
template <class D, class S> __device__ __forceinline__ D te_bits(S s) { D d; memcpy(&d, &s, sizeof d); return d; }
// Warp MMAs on per-thread fragments (PTX ISA "Matrix Fragments for mma.m16n8k16 / m16n8k8"): two 16-bit
// elements to a .b32 register, the lower-numbered one in the low half; tf32 elements rounded by cvt.rna.
__device__ __forceinline__ unsigned te_pair(const unsigned short* x) { return (unsigned)x[0] | ((unsigned)x[1] << 16); }
__device__ __forceinline__ void te_mma_f16(const unsigned short* a, const unsigned short* b, const float* c, float* d) {
  te_mma_regs_f16(te_pair(a), te_pair(a + 2), te_pair(a + 4), te_pair(a + 6), te_pair(b), te_pair(b + 2), c, d);
}
__device__ __forceinline__ void te_mma_bf16(const unsigned short* a, const unsigned short* b, const float* c, float* d) {
  te_mma_regs_bf16(te_pair(a), te_pair(a + 2), te_pair(a + 4), te_pair(a + 6), te_pair(b), te_pair(b + 2), c, d);
}
__device__ __forceinline__ void te_mma_tf32(const float* a, const float* b, const float* c, float* d) {
  te_mma_regs_tf32(te_tf32(a[0]), te_tf32(a[1]), te_tf32(a[2]), te_tf32(a[3]), te_tf32(b[0]), te_tf32(b[1]), c, d);
}
