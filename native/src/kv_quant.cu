// The int8/int4 KV cache's write and read-back (lmdeploy_sdk/quant/kv_cache.py defines the
// format: per (token, kv head) row, codes q = round((x - zero) / scale) with float16
// (scale, zero) = ((max - min) / levels, min); int4 byte j holds elements j and j + D/2).
//
// rope_store_kv_quant: one CTA per token, one warp per head: q heads get rope and are
// written out, k heads get rope and are quantized, v heads are quantized (rope off: k and v
// only, which is store_kv). q, k and v rows are all multiplied by the Hadamard matrix (q is
// written in the basis the cache stores keys in, as attention over it takes q). Lane l
// holds elements l*E/2 .. of each half of the head (E = D/32), so a rotary pair (i, i + D/2)
// and an int4 byte's two nibbles are in one lane: rope and packing need no shuffles; the
// Hadamard butterflies and the row's min/max do. Rope as torch's (the rotated
// k is rounded to T before it is quantized); the Hadamard sums round in another order than
// the reference's matmul, so a code may differ from the reference's by one.
//
// dequant_kv_blocks: whole blocks back to T [block_size, Hkv, D] for the prefill
// attention kernels (prefill is compute-bound; decode dequantizes in registers instead,
// paged_attention_decode_quant.cu).
#include "common.cuh"

namespace lmd {

template <int BITS>
struct KvLevels {
  static constexpr float value = static_cast<float>((1 << BITS) - 1);
};

// Quantize one row held as this lane's x1[E/2] (first half) and x2[E/2] (second half)
// into values (Dq bytes) and params (scale, zero).
template <int D, int BITS>
__device__ __forceinline__ void quantize_row(uint8_t* __restrict__ values, __half* __restrict__ params,
                                             const float (&x1)[D / 64], const float (&x2)[D / 64],
                                             int lane) {
  constexpr int kHalfE = D / 64;
  float lo = x1[0], hi = x1[0];
#pragma unroll
  for (int e = 0; e < kHalfE; ++e) {
    lo = fminf(lo, fminf(x1[e], x2[e]));
    hi = fmaxf(hi, fmaxf(x1[e], x2[e]));
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    lo = fminf(lo, __shfl_xor_sync(0xffffffffu, lo, off));
    hi = fmaxf(hi, __shfl_xor_sync(0xffffffffu, hi, off));
  }
  const float levels = KvLevels<BITS>::value;
  const __half scale_h = __float2half_rn(fminf(__fdiv_rn(__fsub_rn(hi, lo), levels), 65504.f));
  const __half zero_h = __float2half_rn(fminf(fmaxf(lo, -65504.f), 65504.f));
  const float s = __half2float(scale_h), z = __half2float(zero_h);
  auto code = [&](float x) -> uint32_t {
    if (!(s > 0.f)) return 0u;
    const float c = fminf(fmaxf(rintf(__fdiv_rn(__fsub_rn(x, z), s)), 0.f), levels);
    return static_cast<uint32_t>(c);
  };
  const int j0 = lane * kHalfE;  // this lane's first element of each half
  if constexpr (BITS == 8) {
#pragma unroll
    for (int e = 0; e < kHalfE; ++e) {
      values[j0 + e] = static_cast<uint8_t>(code(x1[e]));
      values[D / 2 + j0 + e] = static_cast<uint8_t>(code(x2[e]));
    }
  } else {
#pragma unroll
    for (int e = 0; e < kHalfE; ++e)
      values[j0 + e] = static_cast<uint8_t>(code(x1[e]) | (code(x2[e]) << 4));
  }
  if (lane == 0) {
    params[0] = scale_h;
    params[1] = zero_h;
  }
}

template <typename T, int D>
__device__ __forceinline__ void load_halves(const T* __restrict__ src, int lane, float (&x1)[D / 64],
                                            float (&x2)[D / 64]) {
  constexpr int kHalfE = D / 64;
#pragma unroll
  for (int e = 0; e < kHalfE; ++e) {
    x1[e] = to_float<T>(src[lane * kHalfE + e]);
    x2[e] = to_float<T>(src[D / 2 + lane * kHalfE + e]);
  }
}

// Rotate this lane's pairs (x1[e], x2[e]) = elements (i, i + D/2), i = lane*E/2 + e, and round to T.
template <typename T, int D>
__device__ __forceinline__ void rotate(float (&x1)[D / 64], float (&x2)[D / 64], const float* __restrict__ cs,
                                       int lane) {
  constexpr int kHalfE = D / 64;
#pragma unroll
  for (int e = 0; e < kHalfE; ++e) {
    const int i = lane * kHalfE + e;
    const float c = cs[i], sn = cs[D / 2 + i];
    const float o1 = __fsub_rn(__fmul_rn(x1[e], c), __fmul_rn(x2[e], sn));
    const float o2 = __fadd_rn(__fmul_rn(x2[e], c), __fmul_rn(x1[e], sn));
    x1[e] = round_to<T>(o1);
    x2[e] = round_to<T>(o2);
  }
}

// Multiply this lane's part of a row by the orthonormal Walsh-Hadamard matrix (quant/kv_cache.py's
// hadamard(D)): element d = h * D/2 + lane * E/2 + e sits in x<h+1>[e], so butterflies over
// e's bits are in-lane, over the lane's bits shuffles, and over the top bit x1 against x2.
template <int D>
__device__ __forceinline__ void hadamard_row(float (&x1)[D / 64], float (&x2)[D / 64], int lane) {
  constexpr int kHalfE = D / 64;
#pragma unroll
  for (int st = 1; st < kHalfE; st <<= 1)
#pragma unroll
    for (int e = 0; e < kHalfE; ++e)
      if ((e & st) == 0) {
        const float a1 = x1[e], b1 = x1[e + st], a2 = x2[e], b2 = x2[e + st];
        x1[e] = a1 + b1;
        x1[e + st] = a1 - b1;
        x2[e] = a2 + b2;
        x2[e + st] = a2 - b2;
      }
#pragma unroll
  for (int m = 1; m < 32; m <<= 1) {
    const bool upper = lane & m;
#pragma unroll
    for (int e = 0; e < kHalfE; ++e) {
      const float o1 = __shfl_xor_sync(0xffffffffu, x1[e], m), o2 = __shfl_xor_sync(0xffffffffu, x2[e], m);
      x1[e] = upper ? o1 - x1[e] : x1[e] + o1;
      x2[e] = upper ? o2 - x2[e] : x2[e] + o2;
    }
  }
  const float norm = rsqrtf(static_cast<float>(D));
#pragma unroll
  for (int e = 0; e < kHalfE; ++e) {
    const float a = x1[e], b = x2[e];
    x1[e] = (a + b) * norm;
    x2[e] = (a - b) * norm;
  }
}

template <typename T, int D, int BITS>
__device__ __forceinline__ void rope_store_kv_quant(
    T* __restrict__ q_out, uint8_t* __restrict__ k_values, __half* __restrict__ k_params,
    uint8_t* __restrict__ v_values, __half* __restrict__ v_params, const T* __restrict__ q,
    const T* __restrict__ k, const T* __restrict__ v, const int64_t* __restrict__ positions,
    const int64_t* __restrict__ slot_mapping, const float* __restrict__ cos_sin, int num_q_heads,
    int num_kv_heads, int64_t q_stride_t, int64_t q_stride_h, int64_t k_stride_t, int64_t k_stride_h,
    int64_t v_stride_t, int64_t v_stride_h) {
  // q: [T, Hq, D], k, v: [T, Hkv, D] (strided, last dim contiguous); q_out: [T, Hq, D];
  // values: [num_blocks * block_size, Hkv, D * BITS / 8] uint8; params: [..., Hkv, 2] fp16.
  // positions == nullptr: no rope (store only; q, q_out unused, num_q_heads 0).
  constexpr int kDq = D * BITS / 8;
  const int t = blockIdx.x, lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  const int64_t slot = slot_mapping[t];
  const float* cs = positions != nullptr ? cos_sin + positions[t] * D : nullptr;
  const int items = num_q_heads + 2 * num_kv_heads;
  for (int item = warp; item < items; item += warps) {
    float x1[D / 64], x2[D / 64];
    if (item < num_q_heads) {  // a query head: rope, into the cache rows' basis, write out
      load_halves<T, D>(q + t * q_stride_t + item * q_stride_h, lane, x1, x2);
      rotate<T, D>(x1, x2, cs, lane);
      hadamard_row<D>(x1, x2, lane);
      T* dst = q_out + (static_cast<int64_t>(t) * num_q_heads + item) * D;
#pragma unroll
      for (int e = 0; e < D / 64; ++e) {
        dst[lane * (D / 64) + e] = from_float<T>(x1[e]);
        dst[D / 2 + lane * (D / 64) + e] = from_float<T>(x2[e]);
      }
      continue;
    }
    if (slot < 0) continue;  // padding token (a CUDA-graph batch slot with no sequence)
    const bool is_k = item < num_q_heads + num_kv_heads;
    const int h = is_k ? item - num_q_heads : item - num_q_heads - num_kv_heads;
    if (is_k) {
      load_halves<T, D>(k + t * k_stride_t + h * k_stride_h, lane, x1, x2);
      if (cs != nullptr) rotate<T, D>(x1, x2, cs, lane);
    } else {
      load_halves<T, D>(v + t * v_stride_t + h * v_stride_h, lane, x1, x2);
    }
    hadamard_row<D>(x1, x2, lane);
    const int64_t row = slot * num_kv_heads + h;
    quantize_row<D, BITS>((is_k ? k_values : v_values) + row * kDq, (is_k ? k_params : v_params) + row * 2,
                          x1, x2, lane);
  }
}

// Block src_blocks[i] of a quantized cache -> block i of `out` [n, block_size, Hkv, D] in T:
// x = q * scale + zero (product and sum rounded separately, as the reference's float math).
template <typename T, int D, int BITS>
__device__ __forceinline__ void dequant_kv_blocks(T* __restrict__ out, const uint8_t* __restrict__ values,
                                                  const __half* __restrict__ params,
                                                  const int* __restrict__ src_blocks, int rows_per_block) {
  // grid: one CTA per output block; rows_per_block = block_size * Hkv
  constexpr int kDq = D * BITS / 8, kVecs = D / 8;
  const int64_t src = src_blocks[blockIdx.x];
  const uint8_t* vals = values + src * rows_per_block * kDq;
  const __half* par = params + src * rows_per_block * 2;
  T* dst = out + static_cast<int64_t>(blockIdx.x) * rows_per_block * D;
  for (int idx = threadIdx.x; idx < rows_per_block * kVecs; idx += blockDim.x) {
    const int row = idx / kVecs, c = idx % kVecs;  // elements 8c .. 8c+7 of the row
    const float s = __half2float(par[2 * row]), z = __half2float(par[2 * row + 1]);
    uint32_t codes[8];
    if constexpr (BITS == 8) {
      const uint2 raw = *reinterpret_cast<const uint2*>(vals + row * kDq + 8 * c);
#pragma unroll
      for (int e = 0; e < 8; ++e) codes[e] = ((e < 4 ? raw.x : raw.y) >> (8 * (e % 4))) & 0xFFu;
    } else {
      const bool high = 8 * c >= D / 2;
      const uint2 raw = *reinterpret_cast<const uint2*>(vals + row * kDq + (8 * c) % (D / 2));
#pragma unroll
      for (int e = 0; e < 8; ++e) codes[e] = ((e < 4 ? raw.x : raw.y) >> (8 * (e % 4) + (high ? 4 : 0))) & 0xFu;
    }
    float f[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) f[e] = __fadd_rn(__fmul_rn(static_cast<float>(codes[e]), s), z);
    *reinterpret_cast<uint4*>(dst + row * D + 8 * c) = pack8<T>(f);
  }
}

}  // namespace lmd

#define LMD_KV_QUANT_KERNELS(T, SUFFIX, D, BITS)                                                       \
  extern "C" __global__ void __launch_bounds__(512) rope_store_kv_q##BITS##_##SUFFIX##_d##D(            \
      T* q_out, uint8_t* k_values, __half* k_params, uint8_t* v_values, __half* v_params, const T* q,   \
      const T* k, const T* v, const int64_t* positions, const int64_t* slot_mapping,                    \
      const float* cos_sin, int num_q_heads, int num_kv_heads, int64_t q_stride_t, int64_t q_stride_h,  \
      int64_t k_stride_t, int64_t k_stride_h, int64_t v_stride_t, int64_t v_stride_h) {                 \
    lmd::pdl_enter();                                                                                    \
    lmd::rope_store_kv_quant<T, D, BITS>(q_out, k_values, k_params, v_values, v_params, q, k, v,         \
                                         positions, slot_mapping, cos_sin, num_q_heads, num_kv_heads,    \
                                         q_stride_t, q_stride_h, k_stride_t, k_stride_h, v_stride_t,     \
                                         v_stride_h);                                                    \
  }                                                                                                      \
  extern "C" __global__ void __launch_bounds__(256) dequant_kv_blocks_q##BITS##_##SUFFIX##_d##D(         \
      T* out, const uint8_t* values, const __half* params, const int* src_blocks, int rows_per_block) {  \
    lmd::pdl_enter();                                                                                    \
    lmd::dequant_kv_blocks<T, D, BITS>(out, values, params, src_blocks, rows_per_block);                 \
  }

#define LMD_KV_QUANT_DTYPES(D, BITS)                   \
  LMD_KV_QUANT_KERNELS(__half, f16, D, BITS)           \
  LMD_KV_QUANT_KERNELS(__nv_bfloat16, bf16, D, BITS)

LMD_KV_QUANT_DTYPES(64, 8)
LMD_KV_QUANT_DTYPES(64, 4)
LMD_KV_QUANT_DTYPES(128, 8)
LMD_KV_QUANT_DTYPES(128, 4)
