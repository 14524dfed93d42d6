// Thin wrappers over the sm_80 PTX the attention kernels are built from: cp.async into
// shared memory, ldmatrix, and mma.sync m16n8k16 with fp32 accumulators.
#pragma once

#include "common.cuh"

namespace lmd {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared; src_bytes == 0 writes zeros (rows past the end).
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(src_bytes));
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

// cp.async of this thread's 16-byte chunk of ROWS rows (row + i * STEP, i < ROWS) of a
// global matrix whose rows are `stride` elements apart, from `first` (row 0, this chunk),
// into dst + i * dst_step (in dst's units: elements, or bytes for a swizzled byte layout);
// rows at or past `valid_rows` are zero-filled. The attention kernels load Q tiles so.
template <int ROWS, int STEP, typename Dst, typename T>
__device__ __forceinline__ void cp_async_rows(Dst* dst, int dst_step, const T* first, int64_t stride,
                                              int row, int valid_rows) {
#pragma unroll
  for (int i = 0; i < ROWS; ++i) {
    const int r = row + i * STEP;
    const bool valid = r < valid_rows;
    cp_async_16(dst + i * dst_step, first + (valid ? r : 0) * stride, valid ? 16 : 0);
  }
}

// Wait until at most N committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_addr(p)));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// The same at a shared-space byte address (for addresses built with XOR-swizzle arithmetic).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// 2^x on the SFU, flushing denormal results to zero (exp2f without fast-math adds
// denormal scaling around MUFU.EX2); ex2(-inf) = 0, which masked scores rely on.
__device__ __forceinline__ float exp2_ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// One key tile's online-softmax step for row `half` (0: lane / 4, 1: lane / 4 + 8) of a
// 16-row C-fragment tile, whose scores live in the 4 lanes of a quad: s[jn][2 half ..
// 2 half + 1] are this lane's raw scores of that row (overwritten with their exp2 weights),
// o[dn][2 half ..] its O accumulators (rescaled). Scores stay unscaled: the scale folds
// into one FFMA, exp2(s * scale_log2 - max * scale_log2) (scale > 0); row_max is the
// running max of raw scores, row_sum this lane's partial sum (quad-reduced at the end).
template <int NB, int ND>
__device__ __forceinline__ void online_softmax_row(float (&s)[NB][4], float (&o)[ND][4], int half,
                                                   float& row_max, float& row_sum,
                                                   float scale_log2) {
  float mx = -INFINITY;
#pragma unroll
  for (int jn = 0; jn < NB; ++jn) mx = fmaxf(mx, fmaxf(s[jn][2 * half], s[jn][2 * half + 1]));
  mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
  mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
  const float new_max = fmaxf(row_max, mx);
  const float base = new_max == -INFINITY ? 0.f : new_max * scale_log2;  // masked so far
  const float alpha = exp2_ftz(row_max * scale_log2 - base);             // 0 on the first tile
  row_max = new_max;
  float sum = 0.f;
#pragma unroll
  for (int jn = 0; jn < NB; ++jn)
#pragma unroll
    for (int e = 2 * half; e < 2 * half + 2; ++e) {
      s[jn][e] = exp2_ftz(fmaf(s[jn][e], scale_log2, -base));
      sum += s[jn][e];
    }
  row_sum = row_sum * alpha + sum;
#pragma unroll
  for (int dn = 0; dn < ND; ++dn) {
    o[dn][2 * half] *= alpha;
    o[dn][2 * half + 1] *= alpha;
  }
}

// __syncthreads for barriers reached from different code sites (each warp at exactly one
// of them, e.g. both arms of a warp-uniform branch): PTX's non-.aligned barrier allows
// that; __syncthreads (bar.sync, .aligned) requires every thread at the same instruction.
__device__ __forceinline__ void cta_barrier() { asm volatile("barrier.sync 0;\n" ::: "memory"); }

// c[16x8 fp32] += a[16x16] * b[16x8]; fragments as in the PTX ISA m16n8k16 layout.
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1, __nv_bfloat16) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1, __half) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Element offset of 16-byte chunk `chunk` of row `row` in a [rows, D] smem tile whose
// chunks are XOR-swizzled by row % 8, so ldmatrix's 8 rows hit 8 different bank groups.
template <int D>
__device__ __forceinline__ int swizzle(int row, int chunk) {
  return row * D + ((chunk ^ (row & 7)) << 3);
}

}  // namespace lmd
