// Rotary embedding, GPT-NeoX rotate-half layout, for q and k in one launch; and the
// same fused with the paged KV-cache write (rotated k and v go straight to their slot).
// One CTA per token. Products are rounded separately (no FMA contraction) to match
// torch's fp32 math, so both kernels give the reference's bits.
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

// Rotate pairs (i .. i+7, half+i .. half+i+7) of one head: two 16-byte loads and stores.
template <typename T>
__device__ __forceinline__ void rope_vec8(T* __restrict__ dst, const T* __restrict__ src,
                                          const float* __restrict__ cs, int half, int i) {
  float x1[8], x2[8], c[8], s[8], o1[8], o2[8];
  unpack8<T>(*reinterpret_cast<const uint4*>(src + i), x1);
  unpack8<T>(*reinterpret_cast<const uint4*>(src + half + i), x2);
#pragma unroll
  for (int e = 0; e < 8; e += 4) {
    *reinterpret_cast<float4*>(c + e) = *reinterpret_cast<const float4*>(cs + i + e);
    *reinterpret_cast<float4*>(s + e) = *reinterpret_cast<const float4*>(cs + half + i + e);
  }
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    o1[e] = __fsub_rn(__fmul_rn(x1[e], c[e]), __fmul_rn(x2[e], s[e]));
    o2[e] = __fadd_rn(__fmul_rn(x2[e], c[e]), __fmul_rn(x1[e], s[e]));
  }
  *reinterpret_cast<uint4*>(dst + i) = pack8<T>(o1);
  *reinterpret_cast<uint4*>(dst + half + i) = pack8<T>(o2);
}

template <typename T>
__device__ __forceinline__ void rope_store_kv_token(
    T* __restrict__ q_out, T* __restrict__ k_cache, T* __restrict__ v_cache,
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
    const int64_t* __restrict__ positions, const int64_t* __restrict__ slot_mapping,
    const float* __restrict__ cos_sin, int num_q_heads, int num_kv_heads, int head_dim,
    int64_t q_stride_t, int64_t q_stride_h, int64_t k_stride_t, int64_t k_stride_h,
    int64_t v_stride_t, int64_t v_stride_h) {
  // q: [T, Hq, D], k, v: [T, Hkv, D] (strided, rows 16-byte aligned); q_out: [T, Hq, D];
  // caches: [num_blocks * block_size, Hkv, D]; D % 16 == 0.
  // Work items: 8-pair vectors of every q and k head, then 8-element vectors of v.
  const int t = blockIdx.x;
  const int half = head_dim / 2, vecs = half / 8;
  const float* cs = cos_sin + positions[t] * head_dim;
  const int64_t slot = slot_mapping[t];  // < 0: a padding row; q is rotated, nothing stored
  const int64_t cache_base = slot * num_kv_heads * head_dim;
  const int q_items = num_q_heads * vecs;
  const int rope_items = slot >= 0 ? (num_q_heads + num_kv_heads) * vecs : q_items;
  const int total = rope_items + (slot >= 0 ? num_kv_heads * (head_dim / 8) : 0);
  for (int j = threadIdx.x; j < total; j += blockDim.x) {
    if (j < q_items) {
      const int h = j / vecs;
      rope_vec8<T>(q_out + (static_cast<int64_t>(t) * num_q_heads + h) * head_dim,
                   q + t * q_stride_t + h * q_stride_h, cs, half, (j % vecs) * 8);
    } else if (j < rope_items) {
      const int h = (j - q_items) / vecs;
      rope_vec8<T>(k_cache + cache_base + static_cast<int64_t>(h) * head_dim,
                   k + t * k_stride_t + h * k_stride_h, cs, half, ((j - q_items) % vecs) * 8);
    } else {
      const int h = (j - rope_items) / (head_dim / 8), c = (j - rope_items) % (head_dim / 8);
      *reinterpret_cast<uint4*>(v_cache + cache_base + static_cast<int64_t>(h) * head_dim + c * 8) =
          *reinterpret_cast<const uint4*>(v + t * v_stride_t + h * v_stride_h + c * 8);
    }
  }
}

}  // namespace lmd

#define LMD_ROPE_STORE_KV_KERNEL(T, SUFFIX)                                                      \
  extern "C" __global__ void __launch_bounds__(512) rope_store_kv_##SUFFIX(                      \
      T* q_out, T* k_cache, T* v_cache, const T* q, const T* k, const T* v,                      \
      const int64_t* positions, const int64_t* slot_mapping, const float* cos_sin,               \
      int num_q_heads, int num_kv_heads, int head_dim, int64_t q_stride_t, int64_t q_stride_h,   \
      int64_t k_stride_t, int64_t k_stride_h, int64_t v_stride_t, int64_t v_stride_h) {          \
    lmd::pdl_enter();                                                                           \
    lmd::rope_store_kv_token<T>(q_out, k_cache, v_cache, q, k, v, positions, slot_mapping,      \
                                cos_sin, num_q_heads, num_kv_heads, head_dim, q_stride_t,        \
                                q_stride_h, k_stride_t, k_stride_h, v_stride_t, v_stride_h);     \
  }

LMD_ROPE_STORE_KV_KERNEL(__half, f16)
LMD_ROPE_STORE_KV_KERNEL(__nv_bfloat16, bf16)

#define LMD_ROPE_KERNEL(T, SUFFIX)                                                              \
  extern "C" __global__ void __launch_bounds__(256)                                             \
      apply_rope_##SUFFIX(T* q_out, T* k_out, const T* q, const T* k, const int64_t* positions, \
                          const float* cos_sin, int num_q_heads, int num_kv_heads,              \
                          int head_dim, int64_t q_stride_t, int64_t q_stride_h,                 \
                          int64_t k_stride_t, int64_t k_stride_h) {                             \
    lmd::pdl_enter();                                                                           \
    lmd::rope_token<T>(q_out, k_out, q, k, positions, cos_sin, num_q_heads, num_kv_heads,       \
                       head_dim, q_stride_t, q_stride_h, k_stride_t, k_stride_h);              \
  }

LMD_ROPE_KERNEL(__half, f16)
LMD_ROPE_KERNEL(__nv_bfloat16, bf16)
