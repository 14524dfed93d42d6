// Prefill attention (any q_len per sequence, causal, over a cached prefix) on a paged
// KV cache, flash-attention style with tensor cores (mma.sync m16n8k16, fp32 accumulate).
//
// Grid (max q tiles, Hq, B): one CTA per (query tile, query head, sequence), in
// FlashAttention-2's forward layout: 4 warps of 32 query rows (two m16 tiles each), so
// 128-row tiles, and kTileN keys per smem tile (64 at D = 128, 128 at D = 64). Dynamic
// smem holds the Q tile, one K tile and one V tile, rows padded by 16 bytes so ldmatrix
// and cp.async are bank-conflict free with plain base + offset addressing. Q is re-read
// with ldmatrix every key tile (32 rows of Q fragments don't fit beside the O and S
// accumulators); each K/V fragment read from smem feeds both m16 tiles, half the smem
// traffic per FLOP of 16-row warps. The CTA walks the key tiles some row of its tile
// can see (a warp skips those none of its rows can see), gathering rows through the
// block table with cp.async: V_j loads during Q.K^T_j, K_{j+1} during softmax and P.V_j.
// Softmax is online (running max and sum per row, log2 domain); the causal mask is
// applied only on tiles crossing a warp's diagonal. O leaves through the warp's own Q
// rows in smem as row-contiguous 16-byte stores.
// Query row i of a sequence sits at position kv_len - q_len + i and sees keys 0..that.
#include "paged_cache.cuh"

namespace lmd {

// A global load / special register read the compiler must issue where it stands (not
// merged with an earlier one). At two CTAs per SM every register counts (O and S alone
// take 192): the K/V copies, the causal mask and the epilogue recompute their indices
// from these instead of holding them in registers through the main loop.
__device__ __forceinline__ int reload(const int* p) {
  int v;
  asm volatile("ld.global.u32 %0, [%1];\n" : "=r"(v) : "l"(p));
  return v;
}
#define LMD_SREG(NAME, REG)                             \
  __device__ __forceinline__ int NAME() {               \
    int v;                                              \
    asm volatile("mov.u32 %0, %%" REG ";\n" : "=r"(v)); \
    return v;                                           \
  }
LMD_SREG(reread_tid, "tid.x")
LMD_SREG(reread_ctaid_x, "ctaid.x")
LMD_SREG(reread_ctaid_y, "ctaid.y")
LMD_SREG(reread_ctaid_z, "ctaid.z")
LMD_SREG(reread_nctaid_x, "nctaid.x")
#undef LMD_SREG

// WARPS warps of M_TILES x 16 query rows: a CTA serves kTileM = 16 * M_TILES * WARPS
// rows; TILE_N keys per K/V smem tile.
// Dynamic smem: (kTileM + 2 * TILE_N) * (D + 8) * sizeof(T) bytes.
template <typename T, int D, int WARPS, int M_TILES, int TILE_N>
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
  constexpr int kWarpRows = 16 * M_TILES;
  constexpr int kTileM = kWarpRows * WARPS;
  constexpr int kTileN = TILE_N;
  // smem row: D plus 16 bytes of padding, so the 8 rows an ldmatrix (or a cp.async pass)
  // touches at one column start in 8 different 16-byte bank groups
  constexpr int kStride = D + 8;
  constexpr int kRowStep = kThreads / kChunks;  // rows one pass of the CTA copies
  static_assert(sizeof(T) == 2 && D % 16 == 0 && kTileN % 16 == 0, "m16n8k16 tiles");
  static_assert(kThreads % kChunks == 0 && kTileM % kRowStep == 0 && kTileN % kRowStep == 0,
                "tiles copy in whole passes");
  static_assert(32 % kChunks == 0 && kWarpRows % (32 / kChunks) == 0, "O store passes");
  extern __shared__ __align__(128) unsigned char smem[];
  T* s_q = reinterpret_cast<T*>(smem);  // [kTileM, kStride]
  T* s_k = s_q + kTileM * kStride;      // [kTileN, kStride]
  T* s_v = s_k + kTileN * kStride;      // [kTileN, kStride]

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
  const int kv_head = h / (num_q_heads / num_kv_heads);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const uint32_t cache_row_bytes = num_kv_heads * D * sizeof(T);  // all kv heads of a token

  // Copies: thread tid moves 16-byte chunk tid % kChunks of rows tid / kChunks + i * kRowStep.
  const int ld_row = tid / kChunks, ld_chunk = tid % kChunks;
  const int ld_dst = ld_row * kStride + ld_chunk * 8;  // smem element offset in a tile
  cp_async_rows<kTileM / kRowStep, kRowStep>(  // the Q tile; rows past the sequence are zeros
      s_q + ld_dst, kRowStep * kStride,
      q + static_cast<int64_t>(q_start + row0) * q_stride_t + h * q_stride_h + ld_chunk * 8,
      q_stride_t, ld_row, rows);
  // Byte offset of this thread's chunk inside a cache row (same for K and V).
  const uint32_t ld_src = (kv_head * D + ld_chunk * 8) * sizeof(T);
  // Keys past kv_end are zero-filled (cp_async_tile_rows). The thread's row and chunk and
  // the block table are re-derived from re-read indices each call rather than held in
  // registers through Q.K^T and softmax.
  auto load_kv_tile = [&](T* dst, const T* cache, int n0) {
    const int t = reread_tid();
    const int n = n0 + t / kChunks;  // this thread's first key
    dst += (t / kChunks) * kStride + (t % kChunks) * 8;
    const int* bt = block_tables + static_cast<int64_t>(reread_ctaid_z()) * bt_stride;
    cp_async_tile_rows<kTileN / kRowStep, kRowStep, kTileN>(
        dst, kRowStep * kStride * sizeof(T), cache, bt, n0, n, kv_end, block_size, block_shift,
        cache_row_bytes, ld_src);
  };
  load_kv_tile(s_k, k_cache, 0);
  cp_async_commit();  // group: Q and K_0

  float o[M_TILES][D / 8][4];  // C fragments: [m16 tile][8 columns of D][c0..c3]
#pragma unroll
  for (int mi = 0; mi < M_TILES; ++mi)
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[mi][dn][e] = 0.f;
  // This thread's rows: ri = 2 * mi + half is warp row mi * 16 + half * 8 + lane / 4.
  float row_max[2 * M_TILES], row_sum[2 * M_TILES];  // max of raw scores; per-lane partial sum
#pragma unroll
  for (int ri = 0; ri < 2 * M_TILES; ++ri) row_max[ri] = -INFINITY, row_sum[ri] = 0.f;
  const int warp_row0 = row0 + warp * kWarpRows;  // first query row of this warp
  const int diag = prefix + warp_row0;  // the warp's first row sees keys [0, diag]
  const bool warp_live = warp_row0 < q_len;
  // ldmatrix x4: lane l gives the address of row l % 8 of 8x8 matrix l / 8, here rows
  // 0-7 / 8-15 x columns 0-7, then rows 0-7 / 8-15 x columns 8-15 of a 16x16 block:
  // Q -> A fragment a0 a1 a2 a3; K (keys x D) -> r0 r2 = b0 b1 of n8 tile jn, r1 r3 =
  // b0 b1 of jn + 1; V (keys x D, .trans) -> r0 r1 = b0 b1 of D columns dn..dn+7, r2 r3
  // = b0 b1 of dn+8..dn+15.
  const int frag_off = ((lane % 8) + ((lane / 8) % 2) * 8) * kStride + (lane / 16) * 8;
  const uint32_t q_frag = smem_addr(s_q + warp * kWarpRows * kStride + frag_off);
  const uint32_t kv_frag = smem_addr(s_k + frag_off);  // V: + kTileN * kStride elements

  for (int n0 = 0; n0 < kv_end; n0 += kTileN) {
    cp_async_wait<0>();  // this thread's K_j (and Q) copies landed
    __syncthreads();     // everyone's did; every warp is done reading V_{j-1}
    load_kv_tile(s_v, v_cache, n0);
    cp_async_commit();  // group: V_j, lands during Q.K^T and softmax
    // The warp has rows in the sequence and its last row sees a key of this tile. (Rows
    // past the sequence run on zero-filled Q and are never stored; rows that see none of
    // the tile get p = 0.)
    const bool active = warp_live && n0 < diag + kWarpRows;
    // P as A fragments: [m16 tile][16 keys][a0..a3], packed to T once S is done with
    uint32_t pa[M_TILES][kTileN / 16][4];
    // FA2's order: K_{j+1} is issued right after Q.K^T_j (not after softmax), so it has
    // softmax + P.V to land (3% faster at L = 4-8k on an H100 than issuing it after
    // softmax, docs/performance.md). The barrier sits in both arms of this warp-uniform branch: one barrier
    // site after it kept S live across it and spilled. Hence cta_barrier (barrier.sync
    // without .aligned, which may be reached from different code sites).
    if (!active) {
      cp_async_wait<0>();
      cta_barrier();
      if (n0 + kTileN < kv_end) load_kv_tile(s_k, k_cache, n0 + kTileN);
      cp_async_commit();
    } else {
      float s[M_TILES][kTileN / 8][4];  // S = Q K^T: [32 rows, kTileN keys] per warp
#pragma unroll
      for (int mi = 0; mi < M_TILES; ++mi)
#pragma unroll
        for (int jn = 0; jn < kTileN / 8; ++jn)
#pragma unroll
          for (int e = 0; e < 4; ++e) s[mi][jn][e] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t qa[M_TILES][4];
#pragma unroll
        for (int mi = 0; mi < M_TILES; ++mi)
          ldmatrix_x4(qa[mi], q_frag + (mi * 16 * kStride + kk * 16) * 2);
#pragma unroll
        for (int jn = 0; jn < kTileN / 8; jn += 2) {
          uint32_t kb[4];
          ldmatrix_x4(kb, kv_frag + (jn * 8 * kStride + kk * 16) * 2);
#pragma unroll
          for (int mi = 0; mi < M_TILES; ++mi) {  // one K fragment, both m16 tiles
            mma_16816(s[mi][jn], qa[mi], kb[0], kb[2], T());
            mma_16816(s[mi][jn + 1], qa[mi], kb[1], kb[3], T());
          }
        }
      }
      // Causal mask, only where the tile's last key is past the warp's first row. Key
      // n0 + jn * 8 + (lane % 4) * 2 + (e & 1) is hidden from row warp_row0 + mi * 16 +
      // (e / 2) * 8 + lane / 4 when it exceeds prefix + that row, i.e. when
      // jn * 8 + (e & 1) > lim + mi * 16 + (e / 2) * 8 (keys past kv_end fall under it).
      if (n0 + kTileN - 1 > diag) {
        const int lane_r = reread_tid() % 32;  // not held through the loop
        const int lim = diag - n0 + lane_r / 4 - (lane_r % 4) * 2;
#pragma unroll
        for (int mi = 0; mi < M_TILES; ++mi)
#pragma unroll
          for (int jn = 0; jn < kTileN / 8; ++jn)
#pragma unroll
            for (int e = 0; e < 4; ++e)
              if (jn * 8 + (e & 1) > lim + mi * 16 + (e / 2) * 8) s[mi][jn][e] = -INFINITY;
      }

      cp_async_wait<0>();  // this thread's V_j copies landed
      cta_barrier();       // everyone's did; every warp is done reading K_j
      if (n0 + kTileN < kv_end) load_kv_tile(s_k, k_cache, n0 + kTileN);
      cp_async_commit();  // group: K_{j+1}, lands during softmax and P.V
      // Online softmax (online_softmax_row, mma.cuh). Each m16 tile is packed as soon as
      // it is done, so its S registers free early.
#pragma unroll
      for (int mi = 0; mi < M_TILES; ++mi) {
#pragma unroll
        for (int half = 0; half < 2; ++half)
          online_softmax_row(s[mi], o[mi], half, row_max[2 * mi + half], row_sum[2 * mi + half],
                             scale_log2);
        // P's C fragments become A fragments: keys 16t..16t+15 are n8 tiles 2t (c0 c1:
        // row g -> a0, c2 c3: row g + 8 -> a1) and 2t + 1 (-> a2, a3).
#pragma unroll
        for (int t = 0; t < kTileN / 16; ++t) {
          pa[mi][t][0] = pack2(s[mi][2 * t][0], s[mi][2 * t][1], T());
          pa[mi][t][1] = pack2(s[mi][2 * t][2], s[mi][2 * t][3], T());
          pa[mi][t][2] = pack2(s[mi][2 * t + 1][0], s[mi][2 * t + 1][1], T());
          pa[mi][t][3] = pack2(s[mi][2 * t + 1][2], s[mi][2 * t + 1][3], T());
        }
      }
    }
    if (!active) continue;

    // O += P V
#pragma unroll
    for (int t = 0; t < kTileN / 16; ++t)
#pragma unroll
      for (int dn = 0; dn < D / 8; dn += 2) {
        uint32_t vb[4];
        ldmatrix_x4_trans(vb, kv_frag + ((kTileN + t * 16) * kStride + dn * 8) * 2);
#pragma unroll
        for (int mi = 0; mi < M_TILES; ++mi) {  // one V fragment, both m16 tiles
          mma_16816(o[mi][dn], pa[mi][t], vb[0], vb[1], T());
          mma_16816(o[mi][dn + 1], pa[mi][t], vb[2], vb[3], T());
        }
      }
  }
  cp_async_wait<0>();

  // Epilogue: normalize, stage the warp's rows of O in its own Q rows (no other warp
  // reads them), then store whole 16-byte chunks, row-contiguous. Indices are re-read
  // (see reread_tid), hence the block scope shadowing the kernel's own.
  {
    const int tid = reread_tid(), warp = tid / 32, lane = tid % 32, b = reread_ctaid_z();
    const int row_w = (reread_nctaid_x() - 1 - reread_ctaid_x()) * kTileM + warp * kWarpRows;
    const int q_start = reload(cu_seqlens_q + b);
    const int out_rows = reload(cu_seqlens_q + b + 1) - q_start - row_w;  // may be <= 0
    T* out_w = out + (static_cast<int64_t>(q_start + row_w) * num_q_heads + reread_ctaid_y()) * D;
    T* s_o = s_q + warp * kWarpRows * kStride;  // [kWarpRows, kStride]
    __syncwarp();                               // every lane's last ldmatrix of Q is done
#pragma unroll
    for (int mi = 0; mi < M_TILES; ++mi)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int ri = 2 * mi + half;
        float sum = row_sum[ri];
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        const float inv = sum > 0.f ? 1.f / sum : 0.f;  // 0: a row past the sequence
        T* dst = s_o + (mi * 16 + half * 8 + lane / 4) * kStride + (lane % 4) * 2;
#pragma unroll
        for (int dn = 0; dn < D / 8; ++dn)
          *reinterpret_cast<uint32_t*>(dst + dn * 8) =
              pack2(o[mi][dn][2 * half] * inv, o[mi][dn][2 * half + 1] * inv, T());
      }
    __syncwarp();
    constexpr int kStoreRows = 32 / kChunks;  // rows per warp-wide pass of 16-byte stores
#pragma unroll
    for (int i = 0; i < kWarpRows / kStoreRows; ++i) {
      const int r = i * kStoreRows + lane / kChunks, c = lane % kChunks;
      if (r < out_rows)  // rows past the sequence are not stored
        *reinterpret_cast<uint4*>(out_w + static_cast<int64_t>(r) * num_q_heads * D + c * 8) =
            *reinterpret_cast<const uint4*>(s_o + r * kStride + c * 8);
    }
  }
}

}  // namespace lmd

// 4 warps x 32 rows, 2 CTAs (8 warps) per SM: up to 255 registers a thread.
#define LMD_PREFILL_KERNEL_X(T, SUFFIX, D, WARPS, M_TILES, TILE_N, NAME)                         \
  extern "C" __global__ void __launch_bounds__(WARPS * 32, 2)                                    \
      NAME(T* out, const T* q, const T* k_cache, const T* v_cache, const int* cu_seqlens_q,     \
           const int* kv_lens, const int* block_tables, int bt_stride, int64_t q_stride_t,      \
           int64_t q_stride_h, int num_q_heads, int num_kv_heads, int block_size,               \
           int block_shift, float scale_log2) {                                                 \
    lmd::pdl_enter();                                                                           \
    lmd::paged_prefill<T, D, WARPS, M_TILES, TILE_N>(                                           \
        out, q, k_cache, v_cache, cu_seqlens_q, kv_lens, block_tables, bt_stride, q_stride_t,   \
        q_stride_h, num_q_heads, num_kv_heads, block_size, block_shift, scale_log2);            \
  }

// Tiles follow FlashAttention-2's sm80 forward config (128 x 64 at D = 128, 128 x 128 at
// D = 64, 4 warps): on an H100 at 89-94% of SDPA's flash backend (docs/performance.md).
// Tried there at D = 64 and not adopted yet: double-buffered K/V with 64-key tiles and Q
// in registers was faster (one template more).
// Keep PREFILL_TILES in native/paged_attention.py in step (grid, block, dynamic smem).
#define LMD_PREFILL_KERNEL(T, SUFFIX, D) \
  LMD_PREFILL_KERNEL_X(T, SUFFIX, D, 4, 2, (D == 128 ? 64 : 128), paged_prefill_##SUFFIX##_d##D)

LMD_PREFILL_KERNEL(__half, f16, 64)
LMD_PREFILL_KERNEL(__half, f16, 128)
LMD_PREFILL_KERNEL(__nv_bfloat16, bf16, 64)
LMD_PREFILL_KERNEL(__nv_bfloat16, bf16, 128)
