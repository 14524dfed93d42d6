// Rotary embedding, GPT-NeoX rotate-half layout, for q and k in one launch.
// One CTA per token; threads walk the (head, i < D/2) pairs of q then k.
// Products are rounded separately (no FMA contraction) to match torch's fp32 math.
#include "common.cuh"

namespace lmd {

template <typename T>
__device__ __forceinline__ void rope_token(T* __restrict__ q_out, T* __restrict__ k_out,
                                           const T* __restrict__ q, const T* __restrict__ k,
                                           const int64_t* __restrict__ positions,
                                           const float* __restrict__ cos_sin, int num_q_heads,
                                           int num_kv_heads, int head_dim, int64_t q_stride_t,
                                           int64_t q_stride_h, int64_t k_stride_t,
                                           int64_t k_stride_h) {
  // q: [T, Hq, D] (strided), k: [T, Hkv, D] (strided); q_out, k_out contiguous;
  // cos_sin: [max_pos, D] fp32, cos in [:D/2], sin in [D/2:]
  const int t = blockIdx.x;
  const int half = head_dim / 2;
  const float* cs = cos_sin + positions[t] * head_dim;
  const int total = (num_q_heads + num_kv_heads) * half;
  for (int j = threadIdx.x; j < total; j += blockDim.x) {
    const int h = j / half, i = j % half;
    const T* src;
    T* dst;
    if (h < num_q_heads) {
      src = q + t * q_stride_t + h * q_stride_h;
      dst = q_out + (static_cast<int64_t>(t) * num_q_heads + h) * head_dim;
    } else {
      const int hk = h - num_q_heads;
      src = k + t * k_stride_t + hk * k_stride_h;
      dst = k_out + (static_cast<int64_t>(t) * num_kv_heads + hk) * head_dim;
    }
    const float x1 = to_float<T>(src[i]), x2 = to_float<T>(src[i + half]);
    const float c = cs[i], s = cs[half + i];
    dst[i] = from_float<T>(__fsub_rn(__fmul_rn(x1, c), __fmul_rn(x2, s)));
    dst[i + half] = from_float<T>(__fadd_rn(__fmul_rn(x2, c), __fmul_rn(x1, s)));
  }
}

}  // namespace lmd

#define LMD_ROPE_KERNEL(T, SUFFIX)                                                              \
  extern "C" __global__ void __launch_bounds__(256)                                             \
      apply_rope_##SUFFIX(T* q_out, T* k_out, const T* q, const T* k, const int64_t* positions, \
                          const float* cos_sin, int num_q_heads, int num_kv_heads,              \
                          int head_dim, int64_t q_stride_t, int64_t q_stride_h,                 \
                          int64_t k_stride_t, int64_t k_stride_h) {                             \
    lmd::rope_token<T>(q_out, k_out, q, k, positions, cos_sin, num_q_heads, num_kv_heads,       \
                       head_dim, q_stride_t, q_stride_h, k_stride_t, k_stride_h);              \
  }

LMD_ROPE_KERNEL(__half, f16)
LMD_ROPE_KERNEL(__nv_bfloat16, bf16)
