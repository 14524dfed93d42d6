// Prefill attention on Hopper's warpgroup MMA (wgmma; sm_90a, so H100 / H200 only), with
// the semantics and the argument list of paged_prefill_* in paged_attention_prefill.cu:
// q [T, Hq, D] strided, paged caches [num_blocks, block_size, Hkv, D], causal over a
// cached prefix (query row i of a sequence sits at position kv_len - q_len + i), GQA, any
// block size; out [T, Hq, D] contiguous, rows past the sequence never stored.
//
// Grid (max q tiles, Hq, B), last query tiles first. A CTA is 2 warpgroups (256 threads),
// each owning 64 of the tile's 128 query rows (wgmma's m64). K/V tiles of kTileN keys are
// gathered through the block table with cp.async by all threads into a STAGES-deep ring
// (tile j + STAGES - 1 is issued when tile j is about to be used, into the stage tile j - 1
// left), one barrier per tile. Q, K and V live in smem in wgmma's 128-byte-swizzled
// canonical layouts (wgmma.cuh): Q and K K-major (D contiguous), V read as P.V's B
// operand MN-major (also D contiguous, the transpose bit set), so every tile is stored
// row by row exactly as it sits in memory, 16-byte chunks XOR-swizzled by row % 8.
// S = Q K^T runs with both operands from smem descriptors; the online softmax (log2
// domain, masking only tiles that cross a warp's diagonal) works on the accumulator
// registers; P is packed in registers straight into the A fragments of the P.V wgmma
// (same layout as mma.sync's, so no shuffles); O stays in fp32 registers. The epilogue
// normalises O, stages it in the Q tile and stores whole 16-byte chunks.
//
// Keep WGMMA_PREFILL_TILES in native/paged_attention.py in step with the instantiations
// at the bottom (threads, rows, keys per tile, stages -> dynamic smem bytes).
#include "paged_cache.cuh"
#include "wgmma.cuh"

namespace lmd {

// Byte offset of 16-byte chunk `chunk` (of D / 8) of row `row` in a [ROWS, D] tile of
// 16-bit elements stored as D / 64 column blocks, each [ROWS][64 elements] of 128-byte
// rows with chunks swizzled by row % 8 (the canonical 128-byte-swizzle layout, wgmma.cuh).
template <int ROWS>
__device__ __forceinline__ uint32_t sw128_offset(int row, int chunk) {
  return (chunk / 8) * (ROWS * 128) + row * 128 + (((chunk % 8) ^ (row % 8)) << 4);
}

// Dynamic smem: 1024 bytes of alignment slack + (kTileM + 2 * STAGES * TILE_N) * D * 2.
template <typename T, int D, int TILE_N, int STAGES>
__device__ __forceinline__ void paged_prefill_wgmma(T* __restrict__ out, const T* __restrict__ q,
                                                    const T* __restrict__ k_cache,
                                                    const T* __restrict__ v_cache,
                                                    const int* __restrict__ cu_seqlens_q,
                                                    const int* __restrict__ kv_lens,
                                                    const int* __restrict__ block_tables,
                                                    int bt_stride, int64_t q_stride_t,
                                                    int64_t q_stride_h, int num_q_heads,
                                                    int num_kv_heads, int block_size,
                                                    int block_shift, float scale_log2) {
  // q: [T, Hq, D] (strided); caches: [num_blocks, block_size, Hkv, D]; out: [T, Hq, D]
  constexpr int kThreads = 256;  // 2 warpgroups
  constexpr int kTileM = 128;    // 64 query rows per warpgroup
  constexpr int kTileN = TILE_N;
  constexpr int kChunks = D / 8;                // 16-byte chunks per row
  constexpr int kRowStep = kThreads / kChunks;  // rows one copy pass of the CTA moves
  constexpr uint32_t kQBytes = kTileM * D * sizeof(T);
  constexpr uint32_t kTileBytes = kTileN * D * sizeof(T);  // one K or one V tile
  constexpr uint32_t kStageBytes = 2 * kTileBytes;         // K then V
  static_assert(sizeof(T) == 2 && D % 64 == 0 && kTileN % 64 == 0, "whole 128-byte swizzle atoms");
  static_assert(kTileN <= 256 && D <= 256, "wgmma N <= 256");
  // A thread copies rows ld_row + i * kRowStep: all the same row % 8, so one swizzled
  // chunk position serves every pass.
  static_assert(kRowStep % 8 == 0 && kTileM % kRowStep == 0 && kTileN % kRowStep == 0,
                "tiles copy in whole passes");
  static_assert(STAGES >= 2, "a ring of at least two K/V stages");

  extern __shared__ __align__(1024) unsigned char smem_raw[];
  // Swizzle atoms must start 1024-byte aligned (descriptor base offset 0): round the base
  // up (the host adds 1 KiB of slack to the dynamic smem size).
  const uint32_t raw_addr = smem_addr(smem_raw);
  unsigned char* const s_q = smem_raw + (((raw_addr + 1023u) & ~1023u) - raw_addr);  // [D/64][kTileM][64]
  unsigned char* const s_kv = s_q + kQBytes;  // STAGES x (K [D/64][kTileN][64], V alike)

  // Last tiles first: they see the most keys, so the short ones fill the tail of the grid.
  const int tile = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int q_start = cu_seqlens_q[b];
  const int q_len = cu_seqlens_q[b + 1] - q_start;
  const int row0 = tile * kTileM;
  if (row0 >= q_len) return;  // CTA-uniform, before any barrier
  const int kv_len = kv_lens[b];
  const int prefix = kv_len - q_len;
  const int rows = min(kTileM, q_len - row0);
  const int kv_end = prefix + row0 + rows;  // keys [0, kv_end) are visible to some row
  const int num_tiles = (kv_end + kTileN - 1) / kTileN;
  const int kv_head = h / (num_q_heads / num_kv_heads);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int wg = warp / 4;  // warpgroup: rows 64 * wg .. 64 * wg + 63 of the tile
  const uint32_t cache_row_bytes = num_kv_heads * D * sizeof(T);  // all kv heads of a token

  // Copies: thread tid moves 16-byte chunk tid % kChunks of rows tid / kChunks + i * kRowStep.
  const int ld_row = tid / kChunks, ld_chunk = tid % kChunks;
  const uint32_t ld_dst_q = sw128_offset<kTileM>(ld_row, ld_chunk);   // + i * kRowStep * 128
  const uint32_t ld_dst_kv = sw128_offset<kTileN>(ld_row, ld_chunk);  // + i * kRowStep * 128
  cp_async_rows<kTileM / kRowStep, kRowStep>(  // the Q tile; rows past the sequence are zeros
      s_q + ld_dst_q, kRowStep * 128,
      q + static_cast<int64_t>(q_start + row0) * q_stride_t + h * q_stride_h + ld_chunk * 8,
      q_stride_t, ld_row, rows);
  // Byte offset of this thread's chunk inside a cache row (same for K and V).
  const uint32_t ld_src = (kv_head * D + ld_chunk * 8) * sizeof(T);
  const int* bt = block_tables + static_cast<int64_t>(b) * bt_stride;
  // One K or V tile of keys n0 .. n0 + kTileN - 1 into dst (a [kTileN, D] swizzled tile);
  // keys past kv_end are zero-filled (cp_async_tile_rows).
  auto load_kv_tile = [&](unsigned char* dst, const T* cache, int n0) {
    const int n = n0 + ld_row;  // this thread's first key
    dst += ld_dst_kv;
    cp_async_tile_rows<kTileN / kRowStep, kRowStep, kTileN>(dst, kRowStep * 128, cache, bt, n0, n,
                                                            kv_end, block_size, block_shift,
                                                            cache_row_bytes, ld_src);
  };
  // Prologue: tiles 0 .. STAGES - 2 in stages 0 .. STAGES - 2, one cp.async group each
  // (Q joins tile 0's); groups are committed even when empty so counts stay uniform.
#pragma unroll
  for (int p = 0; p < STAGES - 1; ++p) {
    if (p < num_tiles) {
      load_kv_tile(s_kv + p * kStageBytes, k_cache, p * kTileN);
      load_kv_tile(s_kv + p * kStageBytes + kTileBytes, v_cache, p * kTileN);
    }
    cp_async_commit();
  }

  // O: accumulator of m64nD, o[4 * dn + e] = row 16 * (warp % 4) + lane / 4 + 8 * (e / 2)
  // of the warpgroup, column 8 * dn + 2 * (lane % 4) + (e & 1).
  float o[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
  // This thread's two rows: half 0 is lane / 4, half 1 is lane / 4 + 8 (of its warp's 16).
  float row_max[2] = {-INFINITY, -INFINITY};  // max of raw scores
  float row_sum[2] = {0.f, 0.f};              // this lane's partial sum, quad-reduced at the end
  const int wg_row0 = row0 + 64 * wg;         // the warpgroup's first query row
  const bool wg_live = wg_row0 < q_len;
  const int wg_diag = prefix + wg_row0;                // its first row sees keys [0, wg_diag]
  const int warp_diag = wg_diag + 16 * (warp % 4);     // the warp's first row's last key
  const uint64_t q_desc = smem_desc_sw128(smem_addr(s_q) + wg * 64 * 128, 16, 1024);

  int stage = 0;  // of tile j
  for (int j = 0; j < num_tiles; ++j) {
    const int n0 = j * kTileN;
    cp_async_wait<STAGES - 2>();  // this thread's copies of tile j (and Q) landed
    fence_proxy_async_smem();     // ... and are visible to wgmma (the async proxy)
    __syncthreads();              // everyone's; everyone is done with tile j - 1's stage
    {
      const int jn = j + STAGES - 1;  // into the stage tile j - 1 left
      const int st = stage == 0 ? STAGES - 1 : stage - 1;
      if (jn < num_tiles) {
        load_kv_tile(s_kv + st * kStageBytes, k_cache, jn * kTileN);
        load_kv_tile(s_kv + st * kStageBytes + kTileBytes, v_cache, jn * kTileN);
      }
      cp_async_commit();
    }
    const uint32_t s_k = smem_addr(s_kv + stage * kStageBytes), s_v = s_k + kTileBytes;
    stage = stage == STAGES - 1 ? 0 : stage + 1;
    // The warpgroup has rows in the sequence and its last row sees a key of this tile
    // (warpgroup-uniform, as wgmma needs). Rows past the sequence run on zero-filled Q and
    // are never stored; rows that see none of the tile get p = 0.
    if (!wg_live || n0 >= wg_diag + 64) continue;

    // S = Q K^T: s[4 * jn + e] = score of row 16 * (warp % 4) + lane / 4 + 8 * (e / 2)
    // (of the warpgroup) with key n0 + 8 * jn + 2 * (lane % 4) + (e & 1).
    float s[kTileN / 2];
    const uint64_t k_desc = smem_desc_sw128(s_k, 16, 1024);
    wgmma_fence();  // s was last written by the previous tile's softmax
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)  // k16 step kk: column block kk / 4, 32 bytes per step in it
      wgmma_ss(s, desc_advance(q_desc, (kk / 4) * (kTileM * 128) + (kk % 4) * 32),
               desc_advance(k_desc, (kk / 4) * (kTileN * 128) + (kk % 4) * 32), kk > 0, T());
    wgmma_commit();
    wgmma_wait<0>();
    fence_operands(s);

    // Causal mask, only where the tile's last key is past the warp's first row. Key
    // n0 + 8 * jn + 2 * (lane % 4) + (e & 1) is hidden from row warp_diag + lane / 4 +
    // 8 * (e / 2) when it exceeds it, i.e. when 8 * jn + (e & 1) > lim + 8 * (e / 2)
    // (keys past kv_end fall under it for every row in the sequence).
    if (n0 + kTileN - 1 > warp_diag) {
      const int lim = warp_diag - n0 + lane / 4 - (lane % 4) * 2;
#pragma unroll
      for (int jn = 0; jn < kTileN / 8; ++jn)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (jn * 8 + (e & 1) > lim + (e / 2) * 8) s[4 * jn + e] = -INFINITY;
    }

    // Online softmax (mma.cuh), on the accumulators viewed as mma.sync's C fragments:
    // s[4 * jn + e] is s[jn][e] there, o[4 * dn + e] is o[dn][e].
#pragma unroll
    for (int half = 0; half < 2; ++half)
      online_softmax_row(reinterpret_cast<float(&)[kTileN / 8][4]>(s),
                         reinterpret_cast<float(&)[D / 8][4]>(o), half, row_max[half],
                         row_sum[half], scale_log2);
    // P as A fragments of the k16 steps over keys 16 * kt .. 16 * kt + 15: accumulator
    // blocks jn = 2 kt (keys 16 kt + 2t..) and 2 kt + 1 (keys 16 kt + 8 + 2t..) give
    // a[0] (row g) a[1] (row g + 8) and a[2] a[3] (wgmma.cuh's A layout).
    uint32_t pa[kTileN / 16][4];
#pragma unroll
    for (int kt = 0; kt < kTileN / 16; ++kt) {
      pa[kt][0] = pack2(s[8 * kt + 0], s[8 * kt + 1], T());
      pa[kt][1] = pack2(s[8 * kt + 2], s[8 * kt + 3], T());
      pa[kt][2] = pack2(s[8 * kt + 4], s[8 * kt + 5], T());
      pa[kt][3] = pack2(s[8 * kt + 6], s[8 * kt + 7], T());
#pragma unroll
      for (int i = 0; i < 4; ++i) fence_operand(pa[kt][i]);
    }

    // O += P V: V [kTileN keys, D] as B (K = keys, N = D), MN-major: 8-key groups 1024
    // bytes apart (SBO), 64-column blocks kTileN * 128 bytes apart (LBO); a k16 step is
    // 16 rows = 2048 bytes on.
    const uint64_t v_desc = smem_desc_sw128(s_v, kTileN * 128, 1024);
    fence_operands(o);  // the rescaled O is written before the fence
    wgmma_fence();
#pragma unroll
    for (int kt = 0; kt < kTileN / 16; ++kt)
      wgmma_rs_tb(o, pa[kt], desc_advance(v_desc, kt * 16 * 128), 1, T());
    wgmma_commit();
    wgmma_wait<0>();
    fence_operands(o);
  }
  cp_async_wait<0>();

  // Epilogue: normalise, stage O in the Q tile (same swizzled layout), store whole
  // 16-byte chunks of the rows in the sequence.
  __syncthreads();  // every warpgroup's wgmmas are done reading Q
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    float sum = row_sum[half];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    const float inv = sum > 0.f ? 1.f / sum : 0.f;  // 0: a row past the sequence
    const int r = 64 * wg + 16 * (warp % 4) + lane / 4 + 8 * half;  // row of the CTA tile
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn)
      *reinterpret_cast<uint32_t*>(s_q + sw128_offset<kTileM>(r, dn) + (lane % 4) * 4) =
          pack2(o[4 * dn + 2 * half] * inv, o[4 * dn + 2 * half + 1] * inv, T());
  }
  __syncthreads();
  T* out_t = out + (static_cast<int64_t>(q_start + row0) * num_q_heads + h) * D + ld_chunk * 8;
#pragma unroll
  for (int i = 0; i < kTileM / kRowStep; ++i) {
    const int r = ld_row + i * kRowStep;
    if (r < rows)  // rows past the sequence are not stored
      *reinterpret_cast<uint4*>(out_t + static_cast<int64_t>(r) * num_q_heads * D) =
          *reinterpret_cast<const uint4*>(s_q + ld_dst_q + i * kRowStep * 128);
  }
}

}  // namespace lmd

// MIN_CTAS CTAs of 256 threads per SM (1: up to 255 registers a thread; 2: 128).
#define LMD_PREFILL_WGMMA_KERNEL(T, SUFFIX, D, TILE_N, STAGES, MIN_CTAS)                        \
  extern "C" __global__ void __launch_bounds__(256, MIN_CTAS) paged_prefill_wgmma_##SUFFIX##_d##D( \
      T* out, const T* q, const T* k_cache, const T* v_cache, const int* cu_seqlens_q,          \
      const int* kv_lens, const int* block_tables, int bt_stride, int64_t q_stride_t,           \
      int64_t q_stride_h, int num_q_heads, int num_kv_heads, int block_size, int block_shift,  \
      float scale_log2) {                                                                       \
    lmd::pdl_enter();                                                                           \
    lmd::paged_prefill_wgmma<T, D, TILE_N, STAGES>(                                             \
        out, q, k_cache, v_cache, cu_seqlens_q, kv_lens, block_tables, bt_stride, q_stride_t,   \
        q_stride_h, num_q_heads, num_kv_heads, block_size, block_shift, scale_log2);            \
  }

// D = 128: 128 x 128 tiles, 3 stages: 32 KiB of Q + 3 x 64 KiB of K/V (+ 1 KiB slack) =
// 225 KiB, one CTA per SM. Keep WGMMA_PREFILL_TILES in native/paged_attention.py in step.
LMD_PREFILL_WGMMA_KERNEL(__half, f16, 128, 128, 3, 1)
LMD_PREFILL_WGMMA_KERNEL(__nv_bfloat16, bf16, 128, 128, 3, 1)
// D = 64: 128 x 64 tiles, 4 stages: 16 KiB + 4 x 16 KiB (+ 1 KiB) = 81 KiB, two CTAs per SM
// (128 x 128 tiles at two CTAs per SM spilled at the 128-register cap).
LMD_PREFILL_WGMMA_KERNEL(__half, f16, 64, 64, 4, 2)
LMD_PREFILL_WGMMA_KERNEL(__nv_bfloat16, bf16, 64, 64, 4, 2)
