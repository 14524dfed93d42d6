// Row-wise argmax of logits [S, V] (fp16/bf16) -> int64 [S], as torch.argmax(dim=-1):
// the first index of the largest value, a NaN counting as larger than any number.
// Greedy decoding ends every step with it. torch reduces a row in one CTA (at batch 1
// the GPU idles while one SM reads the whole vocabulary's logits), so a row is split
// over P CTAs here: argmax_partial writes each slice's (value, index), and argmax_final
// merges a row's P partials (with P == 1 argmax_partial writes the answer).
#include "common.cuh"

namespace lmd {

constexpr int kArgmaxThreads = 256;

// Whether (v, i) wins over (bv, bi): NaN first, then the larger value, then the lower
// index. A total order, so any reduction tree gives torch's answer.
__device__ __forceinline__ bool argmax_better(float v, int i, float bv, int bi) {
  const bool nan = v != v, bnan = bv != bv;
  if (nan != bnan) return nan;
  return (nan || v == bv) ? i < bi : v > bv;
}

__device__ __forceinline__ void argmax_take(float& bv, int& bi, float v, int i) {
  if (argmax_better(v, i, bv, bi)) {
    bv = v;
    bi = i;
  }
}

// The CTA's best (value, index) over its threads' candidates; valid in thread 0.
__device__ __forceinline__ void argmax_block(float& bv, int& bi) {
  __shared__ float s_v[kArgmaxThreads / 32];
  __shared__ int s_i[kArgmaxThreads / 32];
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    argmax_take(bv, bi, __shfl_xor_sync(0xffffffffu, bv, off), __shfl_xor_sync(0xffffffffu, bi, off));
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    s_v[warp] = bv;
    s_i[warp] = bi;
  }
  __syncthreads();
  if (warp == 0) {
    bv = lane < kArgmaxThreads / 32 ? s_v[lane] : -INFINITY;
    bi = lane < kArgmaxThreads / 32 ? s_i[lane] : INT_MAX;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
      argmax_take(bv, bi, __shfl_xor_sync(0xffffffffu, bv, off), __shfl_xor_sync(0xffffffffu, bi, off));
    }
  }
}

// CTA (p, s) scans elements [p * slice, min(V, (p + 1) * slice)) of row s. kVec: rows
// are 16-byte aligned and slice % 8 == 0, so 8 elements come per load.
template <typename T, bool kVec>
__device__ __forceinline__ void argmax_partial(float* __restrict__ part_v, int* __restrict__ part_i,
                                               int64_t* __restrict__ out, const T* __restrict__ x,
                                               int vocab, int64_t row_stride, int slice) {
  // x: [S, V] rows row_stride apart; part_v, part_i: [S, P]; out: [S] (P == 1 only)
  const int s = blockIdx.y, p = blockIdx.x;
  const T* row = x + s * row_stride;
  const int begin = p * slice, end = min(vocab, begin + slice);
  float bv = -INFINITY;
  int bi = INT_MAX;
  if constexpr (kVec) {
    for (int j = begin + threadIdx.x * 8; j < end; j += kArgmaxThreads * 8) {
      float f[8];
      unpack8<T>(*reinterpret_cast<const uint4*>(row + j), f);
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        if (j + e < end) argmax_take(bv, bi, f[e], j + e);
      }
    }
  } else {
    for (int j = begin + threadIdx.x; j < end; j += kArgmaxThreads) argmax_take(bv, bi, to_float<T>(row[j]), j);
  }
  argmax_block(bv, bi);
  if (threadIdx.x == 0) {
    if (gridDim.x == 1) {
      out[s] = bi;
    } else {
      part_v[s * gridDim.x + p] = bv;
      part_i[s * gridDim.x + p] = bi;
    }
  }
}

// One CTA per row: the best of its P partials.
__device__ __forceinline__ void argmax_final(int64_t* __restrict__ out, const float* __restrict__ part_v,
                                             const int* __restrict__ part_i, int num_parts) {
  const int s = blockIdx.x;
  float bv = -INFINITY;
  int bi = INT_MAX;
  for (int p = threadIdx.x; p < num_parts; p += kArgmaxThreads) {
    argmax_take(bv, bi, part_v[s * num_parts + p], part_i[s * num_parts + p]);
  }
  argmax_block(bv, bi);
  if (threadIdx.x == 0) out[s] = bi;
}

}  // namespace lmd

// 256 threads; grid (P, S); slice = ceil(V / P) rounded up to a multiple of 8 (vec: rows
// 16-byte aligned, row_stride % 8 == 0).
#define LMD_ARGMAX_KERNELS(T, SUFFIX)                                                            \
  extern "C" __global__ void __launch_bounds__(lmd::kArgmaxThreads) argmax_partial_##SUFFIX(   \
      float* part_v, int* part_i, int64_t* out, const T* x, int vocab, int64_t row_stride,      \
      int slice) {                                                                              \
    lmd::pdl_enter();                                                                           \
    lmd::argmax_partial<T, false>(part_v, part_i, out, x, vocab, row_stride, slice);            \
  }                                                                                             \
  extern "C" __global__ void __launch_bounds__(lmd::kArgmaxThreads) argmax_partial_vec_##SUFFIX( \
      float* part_v, int* part_i, int64_t* out, const T* x, int vocab, int64_t row_stride,      \
      int slice) {                                                                              \
    lmd::pdl_enter();                                                                           \
    lmd::argmax_partial<T, true>(part_v, part_i, out, x, vocab, row_stride, slice);             \
  }

LMD_ARGMAX_KERNELS(__half, f16)
LMD_ARGMAX_KERNELS(__nv_bfloat16, bf16)

// 256 threads; grid S.
extern "C" __global__ void __launch_bounds__(lmd::kArgmaxThreads)
    argmax_final(int64_t* out, const float* part_v, const int* part_i, int num_parts) {
  lmd::pdl_enter();
  lmd::argmax_final(out, part_v, part_i, num_parts);
}
