// Write new tokens' K and V into the paged cache: slot s = block * block_size + offset,
// so the cache viewed as [num_blocks * block_size, Hkv, D] is indexed by s directly.
// k and v may be strided views (e.g. slices of a fused qkv projection).
#include "common.cuh"

namespace lmd {

template <typename T>
__device__ __forceinline__ void store_kv_token(T* __restrict__ k_cache, T* __restrict__ v_cache,
                                               const T* __restrict__ k, const T* __restrict__ v,
                                               const int64_t* __restrict__ slot_mapping,
                                               int num_kv_heads, int head_dim, int64_t k_stride_t,
                                               int64_t k_stride_h, int64_t v_stride_t,
                                               int64_t v_stride_h) {
  // k, v: [T, Hkv, D] (strided, last dim contiguous); caches: [num_blocks * block_size, Hkv, D]
  const int t = blockIdx.x;
  const int64_t slot = slot_mapping[t];
  if (slot < 0) return;  // padding token (e.g. a CUDA-graph batch slot with no sequence)
  const int vecs_per_head = head_dim / 8;
  const int total = num_kv_heads * vecs_per_head;
  const int64_t dst_base = slot * num_kv_heads * head_dim;
  for (int j = threadIdx.x; j < total; j += blockDim.x) {
    const int h = j / vecs_per_head, c = j % vecs_per_head;
    const int64_t dst = dst_base + static_cast<int64_t>(h) * head_dim + c * 8;
    *reinterpret_cast<uint4*>(k_cache + dst) =
        *reinterpret_cast<const uint4*>(k + t * k_stride_t + h * k_stride_h + c * 8);
    *reinterpret_cast<uint4*>(v_cache + dst) =
        *reinterpret_cast<const uint4*>(v + t * v_stride_t + h * v_stride_h + c * 8);
  }
}

}  // namespace lmd

// head_dim % 8 == 0 and every row 16-byte aligned; one CTA per token.
#define LMD_STORE_KV_KERNEL(T, SUFFIX)                                                         \
  extern "C" __global__ void __launch_bounds__(128)                                            \
      store_kv_##SUFFIX(T* k_cache, T* v_cache, const T* k, const T* v,                        \
                        const int64_t* slot_mapping, int num_kv_heads, int head_dim,           \
                        int64_t k_stride_t, int64_t k_stride_h, int64_t v_stride_t,            \
                        int64_t v_stride_h) {                                                  \
    lmd::pdl_enter();                                                                           \
    lmd::store_kv_token<T>(k_cache, v_cache, k, v, slot_mapping, num_kv_heads, head_dim,       \
                           k_stride_t, k_stride_h, v_stride_t, v_stride_h);                   \
  }

LMD_STORE_KV_KERNEL(__half, f16)
LMD_STORE_KV_KERNEL(__nv_bfloat16, bf16)
