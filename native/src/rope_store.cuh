// The rope + KV-cache write epilogue of the decode GEMVs (gemv.cu, int4_gemm.cu): a warp
// that computed rows i and i + D/2 of one head of a [q | k | v] projection rotates them
// (q and k) and stores them where attention reads them.
#pragma once

#include "common.cuh"

namespace lmd {

// Inputs of the kRope epilogue (unused otherwise).
template <typename T>
struct RopeArgs {
  T* k_cache;                // [num_blocks * block_size, Hkv, D]
  T* v_cache;                // same
  const int64_t* positions;  // [M]
  const int64_t* slots;      // [M]: cache row of each token; < 0: store nothing (padding)
  const float* cos_sin;      // [max_pos, D] fp32: cos in [:D/2], sin in [D/2:]
  int num_q_heads;
  int num_kv_heads;
  int half_dim;  // D / 2
};

// Token m's pair (x1, x2) = rows (i, i + D/2) of head h = item / (D/2) of the qkv
// projection, each already rounded to T: q and k heads are rotated with rope_vec8's
// arithmetic (products rounded separately, as torch's fp32 math); q goes to
// q_out [M, Hq, D], k and v to the token's cache slot.
template <typename T>
__device__ __forceinline__ void rope_store_pair(T* __restrict__ q_out, const RopeArgs<T>& r, int m,
                                                int item, float x1, float x2) {
  const int h = item / r.half_dim, i = item % r.half_dim, d = 2 * r.half_dim;
  const int hq = r.num_q_heads, hkv = r.num_kv_heads;
  float o1 = x1, o2 = x2;
  if (h < hq + hkv) {
    const float* cs = r.cos_sin + r.positions[m] * d;
    const float c = cs[i], sn = cs[r.half_dim + i];
    o1 = __fsub_rn(__fmul_rn(x1, c), __fmul_rn(x2, sn));
    o2 = __fadd_rn(__fmul_rn(x2, c), __fmul_rn(x1, sn));
  }
  T* dst;
  if (h < hq) {
    dst = q_out + (static_cast<int64_t>(m) * hq + h) * d;
  } else {
    const int64_t slot = r.slots[m];
    if (slot < 0) return;
    dst = h < hq + hkv ? r.k_cache + (slot * hkv + (h - hq)) * d
                       : r.v_cache + (slot * hkv + (h - hq - hkv)) * d;
  }
  dst[i] = from_float<T>(o1);
  dst[i + r.half_dim] = from_float<T>(o2);
}

}  // namespace lmd
