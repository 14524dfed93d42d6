// Prefill attention (any q_len per sequence, causal, over a cached prefix) on a paged
// KV cache, flash-attention style with tensor cores (mma.sync m16n8k16, fp32 accumulate).
//
// Grid (max q tiles, Hq, B): one CTA per (query tile, query head, sequence); each warp
// owns 16 query rows, whose Q fragments stay in registers (Q is staged through the K/V
// smem buffers once). The CTA walks 64-key tiles of the context (only those some row
// of the tile can see), gathering rows through the block table with cp.async into
// swizzled smem; the next K tile loads while P.V runs and the next V tile while Q.K^T
// runs. Softmax is online (running max and sum per row, log2 domain).
// Query row i of a sequence sits at position kv_len - q_len + i and sees keys 0..that.
#include "mma.cuh"
#include "paged_cache.cuh"

namespace lmd {

constexpr int kTileN = 64;  // keys per smem tile

// WARPS warps of 16 query rows each: a CTA serves kTileM = 16 * WARPS rows.
template <typename T, int D, int WARPS>
__device__ __forceinline__ void paged_prefill(T* __restrict__ out, const T* __restrict__ q,
                                              const T* __restrict__ k_cache,
                                              const T* __restrict__ v_cache,
                                              const int* __restrict__ cu_seqlens_q,
                                              const int* __restrict__ kv_lens,
                                              const int* __restrict__ block_tables, int bt_stride,
                                              int64_t q_stride_t, int64_t q_stride_h,
                                              int num_q_heads, int num_kv_heads, int block_size,
                                              int block_shift, float scale_log2) {
  // q: [T, Hq, D] (strided); caches: [num_blocks, block_size, Hkv, D]; out: [T, Hq, D]
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  constexpr int kThreads = WARPS * 32;
  constexpr int kTileM = 16 * WARPS;
  static_assert(kTileM <= 2 * kTileN, "the Q tile is staged in the K and V buffers");
  __shared__ __align__(128) T s_kv[2 * kTileN * D];  // K tile | V tile; first the Q tile
  T* s_k = s_kv;
  T* s_v = s_kv + kTileN * D;

  // Last tiles first: they see the most keys, so the short ones fill the tail of the grid.
  const int tile = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int q_start = cu_seqlens_q[b];
  const int q_len = cu_seqlens_q[b + 1] - q_start;
  const int row0 = tile * kTileM;
  if (row0 >= q_len) return;
  const int kv_len = kv_lens[b];
  const int prefix = kv_len - q_len;
  const int rows = min(kTileM, q_len - row0);
  const int kv_end = prefix + row0 + rows;  // keys [0, kv_end) are visible to some row
  const int num_kv_tiles = (kv_end + kTileN - 1) / kTileN;
  const int kv_head = h / (num_q_heads / num_kv_heads);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int* bt = block_tables + static_cast<int64_t>(b) * bt_stride;
  const int64_t row_elems = static_cast<int64_t>(num_kv_heads) * D;

  for (int idx = tid; idx < kTileM * kChunks; idx += kThreads) {
    const int r = idx / kChunks, c = idx % kChunks;
    const bool valid = r < rows;
    const T* src = q + static_cast<int64_t>(q_start + row0 + (valid ? r : 0)) * q_stride_t +
                   h * q_stride_h + c * 8;
    cp_async_16(s_kv + swizzle<D>(r, c), src, valid ? 16 : 0);
  }
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  uint32_t qa[D / 16][4];  // A fragments of this warp's 16 query rows, kept in registers
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk)
    ldmatrix_x4(qa[kk], s_kv + swizzle<D>(warp * 16 + (lane % 8) + ((lane / 8) % 2) * 8,
                                          kk * 2 + lane / 16));
  __syncthreads();  // every warp holds its Q before K and V overwrite the staging area

  // keys past kv_end are zero-filled: masked scores must not meet NaN garbage in P.V
  auto load_kv_tile = [&](T* dst, const T* cache, int n0) {
    for (int idx = tid; idx < kTileN * kChunks; idx += kThreads) {
      const int r = idx / kChunks, c = idx % kChunks;
      const int n = n0 + r;
      const bool valid = n < kv_end;
      const int64_t tok = valid ? token_row(bt, n, block_size, block_shift) : 0;
      cp_async_16(dst + swizzle<D>(r, c), cache + tok * row_elems + kv_head * D + c * 8,
                  valid ? 16 : 0);
    }
  };
  load_kv_tile(s_k, k_cache, 0);
  cp_async_commit();  // group: K0
  load_kv_tile(s_v, v_cache, 0);
  cp_async_commit();  // group: V0

  float o[D / 8][4];
#pragma unroll
  for (int dn = 0; dn < D / 8; ++dn)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[dn][e] = 0.f;
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.f, 0.f};
  const int qi0 = row0 + warp * 16 + lane / 4;  // this thread's rows: qi0 and qi0 + 8

  for (int j = 0; j < num_kv_tiles; ++j) {
    const int n0 = j * kTileN;
    cp_async_wait<1>();  // K_j landed
    __syncthreads();
    // S = Q K^T: [16 rows, 64 keys] per warp
    float s[kTileN / 8][4];
#pragma unroll
    for (int jn = 0; jn < kTileN / 8; ++jn) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s[jn][e] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 16; kk += 2) {
        uint32_t kb[4];
        ldmatrix_x4(kb, s_k + swizzle<D>(jn * 8 + (lane % 8), kk * 2 + lane / 8));
        mma_16816(s[jn], qa[kk], kb[0], kb[1], T());
        mma_16816(s[jn], qa[kk + 1], kb[2], kb[3], T());
      }
    }
    const bool need_mask = n0 + kTileN - 1 > prefix + row0;
#pragma unroll
    for (int jn = 0; jn < kTileN / 8; ++jn)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int n = n0 + jn * 8 + (lane % 4) * 2 + (e & 1);
        const int qi = qi0 + (e >= 2 ? 8 : 0);
        s[jn][e] = (need_mask && n > prefix + qi) ? -INFINITY : s[jn][e] * scale_log2;
      }
    // online softmax for this thread's two rows (a row lives in the 4 lanes of a quad)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = -INFINITY;
#pragma unroll
      for (int jn = 0; jn < kTileN / 8; ++jn) mx = fmaxf(mx, fmaxf(s[jn][2 * r], s[jn][2 * r + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float new_max = fmaxf(row_max[r], mx);
      const float base = new_max == -INFINITY ? 0.f : new_max;  // a row masked so far
      const float alpha = exp2f(row_max[r] - base);
      float sum = 0.f;
#pragma unroll
      for (int jn = 0; jn < kTileN / 8; ++jn) {
        s[jn][2 * r] = exp2f(s[jn][2 * r] - base);
        s[jn][2 * r + 1] = exp2f(s[jn][2 * r + 1] - base);
        sum += s[jn][2 * r] + s[jn][2 * r + 1];
      }
      row_sum[r] = row_sum[r] * alpha + sum;  // per-lane partial; quad-reduced at the end
      row_max[r] = new_max;
#pragma unroll
      for (int dn = 0; dn < D / 8; ++dn) {
        o[dn][2 * r] *= alpha;
        o[dn][2 * r + 1] *= alpha;
      }
    }
    __syncthreads();  // every warp is done with s_k
    if (j + 1 < num_kv_tiles) load_kv_tile(s_k, k_cache, n0 + kTileN);
    cp_async_commit();
    cp_async_wait<1>();  // V_j landed
    __syncthreads();

    // O += P V: P's accumulator fragments are reused as A fragments
#pragma unroll
    for (int t = 0; t < kTileN / 16; ++t) {
      uint32_t pa[4];
      pa[0] = pack2(s[2 * t][0], s[2 * t][1], T());
      pa[1] = pack2(s[2 * t][2], s[2 * t][3], T());
      pa[2] = pack2(s[2 * t + 1][0], s[2 * t + 1][1], T());
      pa[3] = pack2(s[2 * t + 1][2], s[2 * t + 1][3], T());
#pragma unroll
      for (int dn = 0; dn < D / 8; dn += 2) {
        uint32_t vb[4];
        ldmatrix_x4_trans(vb, s_v + swizzle<D>(t * 16 + (lane % 8) + ((lane / 8) % 2) * 8,
                                               dn + lane / 16));
        mma_16816(o[dn], pa, vb[0], vb[1], T());
        mma_16816(o[dn + 1], pa, vb[2], vb[3], T());
      }
    }
    __syncthreads();  // every warp is done with s_v
    if (j + 1 < num_kv_tiles) load_kv_tile(s_v, v_cache, n0 + kTileN);
    cp_async_commit();
  }
  cp_async_wait<0>();

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 1);
    row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 2);
    const int qi = qi0 + 8 * r;
    if (qi < q_len) {
      const float inv = 1.f / row_sum[r];
      T* dst = out + (static_cast<int64_t>(q_start + qi) * num_q_heads + h) * D + (lane % 4) * 2;
#pragma unroll
      for (int dn = 0; dn < D / 8; ++dn)
        *reinterpret_cast<uint32_t*>(dst + dn * 8) =
            pack2(o[dn][2 * r] * inv, o[dn][2 * r + 1] * inv, T());
    }
  }
}

}  // namespace lmd

#define LMD_PREFILL_KERNEL_X(T, SUFFIX, D, WARPS, NAME)                                         \
  extern "C" __global__ void __launch_bounds__(WARPS * 32)                                       \
      NAME(T* out, const T* q, const T* k_cache, const T* v_cache, const int* cu_seqlens_q,     \
           const int* kv_lens, const int* block_tables, int bt_stride, int64_t q_stride_t,      \
           int64_t q_stride_h, int num_q_heads, int num_kv_heads, int block_size,               \
           int block_shift, float scale_log2) {                                                 \
    lmd::paged_prefill<T, D, WARPS>(out, q, k_cache, v_cache, cu_seqlens_q, kv_lens,            \
                                    block_tables, bt_stride, q_stride_t, q_stride_h,            \
                                    num_q_heads, num_kv_heads, block_size, block_shift,         \
                                    scale_log2);                                                \
  }

// Measured on H100 (causal, L = 1k..8k): 8 warps (128-row tiles, each K/V tile shared by
// more rows) pay off at D = 128 (+15-20%), 4 warps are faster at D = 64.
#define LMD_PREFILL_KERNEL(T, SUFFIX, D) \
  LMD_PREFILL_KERNEL_X(T, SUFFIX, D, (D == 128 ? 8 : 4), paged_prefill_##SUFFIX##_d##D)

LMD_PREFILL_KERNEL(__half, f16, 64)
LMD_PREFILL_KERNEL(__half, f16, 128)
LMD_PREFILL_KERNEL(__nv_bfloat16, bf16, 64)
LMD_PREFILL_KERNEL(__nv_bfloat16, bf16, 128)

