// Decode attention (one new token per sequence) over a paged KV cache, on tensor cores.
//
// Grid (Hq / G, B, S): one CTA per (the G <= 16 query heads of one kv head, sequence,
// split of the context). The G heads are the rows of an m16 tile (rows past G are zeros),
// so Q.K^T and P.V run on mma.sync m16n8k16 as in prefill, and each kv row is read once
// per CTA whatever the group size. Heads vary fastest in launch order, so the CTAs of
// one sequence run side by side and read neighbouring bytes (a cache row holds every kv
// head of its token); in a head-major order they would launch B CTAs apart.
//
// K/V tiles of kDecodeTile keys stream through a STAGES-deep cp.async ring: while one
// tile is computed the next STAGES - 1 are in flight (a decode step is a pure KV read;
// bytes in flight per SM are what set its speed). STAGES is 3 where two such CTAs fit an
// SM (H100/H200), else 2 (the host picks: the 3-stage ring at D = 128 exceeds a
// 4090-class GPU's smem per CTA).
//
// The ring's first tiles are requested before pdl_wait, while the qkv projection that
// precedes us still runs: every row but the new token's, which that projection (or
// rope_store_kv) writes, so only Q and that one row wait for it.
//
// Each of the 4 warps owns 16 keys of every tile and keeps its own online softmax (no CTA
// barrier inside a tile); the warps' partial results merge through smem at the end. With
// S > 1 each CTA writes its normalised partial output and (max, sum) in fp32 and
// paged_decode_reduce merges the splits; with S == 1 it writes `out` directly. Scores
// stay unscaled; the scale (times log2 e) folds into the exp2 argument, and max values
// are kept in log2 units of the scaled scores.
#include "decode_split.cuh"
#include "mma.cuh"
#include "paged_cache.cuh"

namespace lmd {

constexpr int kDecodeWarps = 4;
constexpr int kDecodeTile = 16 * kDecodeWarps;  // keys per smem tile, 16 per warp
// Dynamic smem: the Q tile [16, D + 8] then STAGES x {K, V} [kDecodeTile, D + 8]
// (rows padded by 16 bytes: ldmatrix and cp.async are bank-conflict free); after the
// main loop the ring is reused for the warps' fp32 O [warps, 16, D + 8] and (max, sum).
template <typename T, int D, int STAGES>
__device__ __forceinline__ void paged_decode(T* __restrict__ out, float* __restrict__ part_o,
                                             float* __restrict__ part_ml, const T* __restrict__ q,
                                             const T* __restrict__ k_cache,
                                             const T* __restrict__ v_cache,
                                             const int* __restrict__ kv_lens,
                                             const int* __restrict__ block_tables, int bt_stride,
                                             int64_t q_stride_t, int64_t q_stride_h, int num_q_heads,
                                             int num_kv_heads, int group_heads, int block_size,
                                             int block_shift, float scale_log2) {
  // q: [B, Hq, D] (strided); caches: [num_blocks, block_size, Hkv, D]; out: [B, Hq, D];
  // part_o: [B, Hq, S, D] fp32; part_ml: [B, Hq, S, 2] fp32 (max in log2 units, sum)
  constexpr int kThreads = kDecodeWarps * 32;
  constexpr int kTile = kDecodeTile;
  constexpr int kStages = STAGES;
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  constexpr int kStride = D + 8;  // padded smem row, elements
  constexpr int kRowStep = kThreads / kChunks;  // rows one pass of the CTA copies
  constexpr int kOStride = D + 8;               // padded fp32 row of the epilogue's O
  static_assert(sizeof(T) == 2 && D % 16 == 0, "m16n8k16 tiles");
  static_assert(kTile % kRowStep == 0 && 16 % kRowStep == 0, "tiles copy in whole passes");
  static_assert(kDecodeWarps * 16 * (kOStride + 2) * 4 <= kStages * 2 * kTile * kStride * 2,
                "the epilogue's scratch fits in the ring");
  extern __shared__ __align__(128) unsigned char smem[];
  T* s_q = reinterpret_cast<T*>(smem);  // [16, kStride]
  T* s_ring = s_q + 16 * kStride;       // [kStages][K | V][kTile, kStride]

  const int b = blockIdx.y, split = blockIdx.z, num_splits = gridDim.z;
  const int G = group_heads;
  const int h0 = blockIdx.x * G;
  const int kv_head = h0 / (num_q_heads / num_kv_heads);
  const int kv_len = kv_lens[b];
  const int split_len = decode_split_len(kv_len, num_splits);
  const int start = split * split_len;
  if (start >= kv_len) {  // idle split: the reduce kernel skips it
    pdl_wait();           // (no CTA leaves before its predecessor is done: see common.cuh)
    return;
  }
  const int end = min(kv_len, start + split_len);
  const int num_tiles = (end - start + kTile - 1) / kTile;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int* bt = block_tables + static_cast<int64_t>(b) * bt_stride;
  const uint32_t cache_row_bytes = num_kv_heads * D * sizeof(T);  // all kv heads of a token

  // Copies: thread tid moves 16-byte chunk tid % kChunks of rows tid / kChunks + i * kRowStep.
  const int ld_row = tid / kChunks, ld_chunk = tid % kChunks;
  const int ld_dst = ld_row * kStride + ld_chunk * 8;  // smem element offset in a tile
  // Byte offset of this thread's chunk inside a cache row (same for K and V).
  const uint32_t ld_src = (kv_head * D + ld_chunk * 8) * sizeof(T);
  // K and V of tile `tile` into its ring stage. Keys past the split's end are zero-filled
  // (their scores are masked; P.V must not meet NaN garbage). A split starts on a tile
  // boundary (decode_split_len), as cp_async_tile_rows's whole-tile path needs.
  // rows: which keys of the tile to copy (the new token's K/V is the one row this step's
  // earlier kernels write; every other row was written by earlier steps).
  enum Rows { kAll, kAllButNew, kOnlyNew };
  auto load_tile = [&](int tile, Rows rows) {
    T* dst_k = s_ring + (tile % kStages) * 2 * kTile * kStride + ld_dst;
    T* dst_v = dst_k + kTile * kStride;
    const int n0 = start + tile * kTile;
    const char* src_k = reinterpret_cast<const char*>(k_cache) + ld_src;
    const char* src_v = reinterpret_cast<const char*>(v_cache) + ld_src;
    for_tile_rows<kTile / kRowStep, kRowStep, kTile>(  // K and V rows from one lookup
        bt, n0, n0 + ld_row, end, block_size, block_shift, cache_row_bytes,
        [&](int i, uint64_t offset, int bytes) {
          const bool is_new = n0 + ld_row + i * kRowStep == kv_len - 1;
          if (rows == kAll || (rows == kOnlyNew) == is_new) {
            cp_async_16(dst_k + i * kRowStep * kStride, src_k + offset, bytes);
            cp_async_16(dst_v + i * kRowStep * kStride, src_v + offset, bytes);
          }
        });
  };
  // The ring's first tiles stream in while the predecessor (the qkv projection) finishes:
  // all their rows but the new token's, which waits for it like Q does.
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < num_tiles) load_tile(s, kAllButNew);
    cp_async_commit();  // one group per stage, empty past the end
  }
  pdl_wait();
  cp_async_rows<16 / kRowStep, kRowStep>(  // Q: the group's heads; rows past it are zeros
      s_q + ld_dst, kRowStep * kStride, q + b * q_stride_t + h0 * q_stride_h + ld_chunk * 8,
      q_stride_h, ld_row, G);
  const int new_tile = (kv_len - 1 - start) / kTile;  // the new token's tile, if this split's
  if (kv_len - 1 < end && new_tile < kStages - 1) load_tile(new_tile, kOnlyNew);
  cp_async_commit();  // Q and the new row: waited for with tile 0 (wait_group 0)

  // ldmatrix x4 addresses (as in prefill): lane l gives row l % 8 of 8x8 matrix l / 8 of
  // a 16x16 block (rows 0-7 / 8-15 x columns 0-7, then x columns 8-15). Q -> A fragment;
  // K (keys x D) -> r0 r2 = b0 b1 of keys 0-7, r1 r3 of keys 8-15; V (keys x D, .trans)
  // -> r0 r1 = b0 b1 of D columns dn..dn+7, r2 r3 of dn+8..dn+15.
  const int frag_off = ((lane % 8) + ((lane / 8) % 2) * 8) * kStride + (lane / 16) * 8;
  uint32_t qa[D / 16][4];  // Q as A fragments, loaded once
  float o[D / 8][4];       // C fragments of O [16 rows, D]
#pragma unroll
  for (int dn = 0; dn < D / 8; ++dn)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[dn][e] = 0.f;
  // This thread's rows: half h is row h * 8 + lane / 4. Raw-score max; per-lane partial sum.
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.f, 0.f};

  for (int tile = 0; tile < num_tiles; ++tile) {
    if (tile == 0)
      cp_async_wait<0>();  // Q, the new row and the prologue's tiles
    else
      cp_async_wait<kStages - 2>();  // this thread's copies of `tile` landed
    __syncthreads();               // everyone's did; every warp is done with tile - 1's stage
    if (tile == 0) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) ldmatrix_x4(qa[kk], s_q + frag_off + kk * 16);
    }
    if (tile + kStages - 1 < num_tiles) load_tile(tile + kStages - 1, kAll);  // into tile - 1's stage
    cp_async_commit();
    const int key0 = start + tile * kTile + warp * 16;  // this warp's first key
    if (key0 >= end) continue;                          // warp-uniform: only in the last tile
    const T* s_k = s_ring + (tile % kStages) * 2 * kTile * kStride + warp * 16 * kStride;
    const T* s_v = s_k + kTile * kStride;

    float s[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};  // S = Q K^T: [16 rows, 16 keys]
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t kb[4];
      ldmatrix_x4(kb, s_k + frag_off + kk * 16);
      mma_16816(s[0], qa[kk], kb[0], kb[2], T());
      mma_16816(s[1], qa[kk], kb[1], kb[3], T());
    }
    if (key0 + 16 > end) {  // key key0 + jn * 8 + (lane % 4) * 2 + (e & 1) past the end
      const int lim = end - key0 - (lane % 4) * 2;
#pragma unroll
      for (int jn = 0; jn < 2; ++jn)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (jn * 8 + (e & 1) >= lim) s[jn][e] = -INFINITY;
    }
    // Online softmax (a row lives in the 4 lanes of a quad).
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float mx = fmaxf(fmaxf(s[0][2 * half], s[0][2 * half + 1]), fmaxf(s[1][2 * half], s[1][2 * half + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float new_max = fmaxf(row_max[half], mx);  // finite: the warp's first key is valid
      const float base = new_max * scale_log2;
      const float alpha = exp2f(row_max[half] * scale_log2 - base);  // 0 on the warp's first tile
      row_max[half] = new_max;
      float sum = 0.f;
#pragma unroll
      for (int jn = 0; jn < 2; ++jn)
#pragma unroll
        for (int e = 2 * half; e < 2 * half + 2; ++e) {
          s[jn][e] = exp2f(fmaf(s[jn][e], scale_log2, -base));
          sum += s[jn][e];
        }
      row_sum[half] = row_sum[half] * alpha + sum;  // quad-reduced at the end
#pragma unroll
      for (int dn = 0; dn < D / 8; ++dn) {
        o[dn][2 * half] *= alpha;
        o[dn][2 * half + 1] *= alpha;
      }
    }
    // P's C fragments become the A fragment of the 16 keys (keys 0-7 -> a0 a1, 8-15 -> a2 a3).
    const uint32_t pa[4] = {pack2(s[0][0], s[0][1], T()), pack2(s[0][2], s[0][3], T()),
                            pack2(s[1][0], s[1][1], T()), pack2(s[1][2], s[1][3], T())};
#pragma unroll
    for (int dn = 0; dn < D / 8; dn += 2) {  // O += P V
      uint32_t vb[4];
      ldmatrix_x4_trans(vb, s_v + frag_off + dn * 8);
      mma_16816(o[dn], pa, vb[0], vb[1], T());
      mma_16816(o[dn + 1], pa, vb[2], vb[3], T());
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // the ring becomes the epilogue's scratch

  // Merge the warps: per row, M = max_w m_w; O = sum_w 2^(m_w - M) O_w; l likewise.
  float* s_o = reinterpret_cast<float*>(s_ring);     // [warps, 16, kOStride]
  float* s_m = s_o + kDecodeWarps * 16 * kOStride;   // [warps, 16] raw-score max
  float* s_l = s_m + kDecodeWarps * 16;              // [warps, 16] sum
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    float sum = row_sum[half];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    if (lane % 4 == 0) {
      s_m[warp * 16 + half * 8 + lane / 4] = row_max[half];
      s_l[warp * 16 + half * 8 + lane / 4] = sum;
    }
  }
  __syncthreads();
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = half * 8 + lane / 4;
    if (r >= G) continue;
    float m = -INFINITY;
#pragma unroll
    for (int w = 0; w < kDecodeWarps; ++w) m = fmaxf(m, s_m[w * 16 + r]);
    const float c = exp2f((row_max[half] - m) * scale_log2);  // 0 for a warp that saw no key
    float* dst = s_o + (warp * 16 + r) * kOStride + (lane % 4) * 2;
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn)
      *reinterpret_cast<float2*>(dst + dn * 8) = make_float2(o[dn][2 * half] * c, o[dn][2 * half + 1] * c);
  }
  __syncthreads();
  for (int idx = tid; idx < G * D; idx += kThreads) {
    const int r = idx / D, d = idx % D;
    float m = -INFINITY;
#pragma unroll
    for (int w = 0; w < kDecodeWarps; ++w) m = fmaxf(m, s_m[w * 16 + r]);
    float v = 0.f, l = 0.f;
#pragma unroll
    for (int w = 0; w < kDecodeWarps; ++w) {
      v += s_o[(w * 16 + r) * kOStride + d];
      l += s_l[w * 16 + r] * exp2f((s_m[w * 16 + r] - m) * scale_log2);
    }
    const int64_t bh = static_cast<int64_t>(b) * num_q_heads + h0 + r;
    if (num_splits == 1) {
      out[bh * D + d] = from_float<T>(v / l);
    } else {
      part_o[(bh * num_splits + split) * D + d] = v / l;
      if (d == 0) {
        part_ml[(bh * num_splits + split) * 2] = m * scale_log2;
        part_ml[(bh * num_splits + split) * 2 + 1] = l;
      }
    }
  }
}

// Merge the S partial results of each (sequence, head): weights sum_s * 2^(max_s - max).
// The CTA reads the splits' (max, sum) together (thread i takes splits i, i + D, ...) and
// puts D splits' weights at a time in smem; each thread then sums its element over them
// with 8 loads in flight. (One thread walking all S splits waited on L2 about S / 2 times:
// 1-2 us of a batch-1 x 32768 step at ~60 splits, bench_kv_quant.) Sums run in split order.
template <int D, typename Op>
__device__ __forceinline__ float block_all_reduce(float x, float* scratch, Op op) {
#pragma unroll
  for (int m = 16; m > 0; m /= 2) x = op(x, __shfl_xor_sync(0xffffffffu, x, m));
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = x;
  __syncthreads();
  float r = scratch[0];
#pragma unroll
  for (int w = 1; w < D / 32; ++w) r = op(r, scratch[w]);
  __syncthreads();  // scratch is free again
  return r;
}

template <typename T, int D>
__device__ __forceinline__ void paged_decode_reduce(T* __restrict__ out,
                                                    const float* __restrict__ part_o,
                                                    const float* __restrict__ part_ml,
                                                    const int* __restrict__ kv_lens,
                                                    int num_q_heads, int num_splits) {
  // grid: B * Hq CTAs of D threads; out: [B, Hq, D]
  static_assert(D % 32 == 0, "whole warps");
  __shared__ float s_w[D];            // weights of the D splits being summed
  __shared__ float s_part[D / 32];    // the warps' partial maxima
  const int64_t bh = blockIdx.x;
  const int b = blockIdx.x / num_q_heads, tid = threadIdx.x;
  const int kv_len = kv_lens[b];
  const int split_len = decode_split_len(kv_len, num_splits);
  const int active = (kv_len + split_len - 1) / split_len;
  const float* ml = part_ml + bh * num_splits * 2;
  float m = -INFINITY;
  for (int s = tid; s < active; s += D) m = fmaxf(m, ml[2 * s]);
  const float global_max = block_all_reduce<D>(m, s_part, [](float x, float y) { return fmaxf(x, y); });
  const float* po = part_o + bh * num_splits * D + tid;
  float num = 0.f, den = 0.f;
  for (int s0 = 0; s0 < active; s0 += D) {
    if (s0 + tid < active) s_w[tid] = ml[2 * (s0 + tid) + 1] * exp2f(ml[2 * (s0 + tid)] - global_max);
    __syncthreads();
    const int n = min(D, active - s0);
#pragma unroll 8
    for (int i = 0; i < n; ++i) {
      const float w = s_w[i];
      num = fmaf(w, po[(s0 + i) * D], num);
      den += w;
    }
    __syncthreads();  // s_w is rewritten next chunk
  }
  out[bh * D + tid] = from_float<T>(num / den);
}

}  // namespace lmd

// 4 warps; 2 CTAs per SM on an H100 at D = 128 with 3 stages (106 KiB of smem a CTA).
#define LMD_DECODE_KERNEL(T, SUFFIX, D, STAGES)                                                 \
  extern "C" __global__ void __launch_bounds__(lmd::kDecodeWarps * 32, 2)                        \
      paged_decode_##SUFFIX##_d##D##_s##STAGES(                                                  \
          T* out, float* part_o, float* part_ml, const T* q, const T* k_cache, const T* v_cache, \
          const int* kv_lens, const int* block_tables, int bt_stride, int64_t q_stride_t,        \
          int64_t q_stride_h, int num_q_heads, int num_kv_heads, int group_heads,                \
          int block_size, int block_shift, float scale_log2) {                                  \
    lmd::pdl_trigger(); /* paged_decode waits once its old K/V rows are in flight */            \
    lmd::paged_decode<T, D, STAGES>(out, part_o, part_ml, q, k_cache, v_cache, kv_lens,         \
                                    block_tables, bt_stride, q_stride_t, q_stride_h,            \
                                    num_q_heads, num_kv_heads, group_heads, block_size,         \
                                    block_shift, scale_log2);                                   \
  }

#define LMD_DECODE_REDUCE_KERNEL(T, SUFFIX, D)                                                  \
  extern "C" __global__ void __launch_bounds__(D) paged_decode_reduce_##SUFFIX##_d##D(          \
      T* out, const float* part_o, const float* part_ml, const int* kv_lens, int num_q_heads,   \
      int num_splits) {                                                                         \
    lmd::pdl_enter();                                                                           \
    lmd::paged_decode_reduce<T, D>(out, part_o, part_ml, kv_lens, num_q_heads, num_splits);     \
  }

#define LMD_DECODE_ALL(T, SUFFIX, D) \
  LMD_DECODE_KERNEL(T, SUFFIX, D, 2)  \
  LMD_DECODE_KERNEL(T, SUFFIX, D, 3)  \
  LMD_DECODE_REDUCE_KERNEL(T, SUFFIX, D)

LMD_DECODE_ALL(__half, f16, 64)
LMD_DECODE_ALL(__half, f16, 128)
LMD_DECODE_ALL(__nv_bfloat16, bf16, 64)
LMD_DECODE_ALL(__nv_bfloat16, bf16, 128)
