// Decode attention (one new token per sequence) over an int8 or int4 paged KV cache
// (lmdeploy_sdk/quant/kv_cache.py: codes uint8 [num_blocks, block_size, Hkv, D * BITS / 8],
// float16 (scale, zero) [num_blocks, block_size, Hkv, 2] of each row; x = code * scale + zero).
//
// A decode step reads the whole cache once, so its time is the bytes read: this kernel
// streams 8- or 4-bit codes plus 4 bytes of params per row and dequantizes in registers.
// It follows paged_attention_decode.cu (CTA per (G <= 16 query heads of one kv head,
// sequence, split), a STAGES-deep cp.async ring of 64-key tiles, 4 warps of 16 keys each
// with their own online softmax, split-K partials merged by a reduce kernel, PDL: the
// ring's first tiles but the new token's row stream in before pdl_wait), with these changes:
//
// - Swapped operands: S^T = K Q^T and O^T = V^T P^T on mma.sync m16n8k16, so keys (then d)
//   are the 16 rows and the G heads the 8 columns (NH = 2 column tiles for G > 8): a group of
//   4 heads wastes half an n8 tile instead of 12 of 16 m rows.
// - fp16 mma whatever the model dtype (Q is converted once; bf16 -> fp16 is exact in range).
//   Codes become exact fp16 (code - 2^(BITS-1)) with the 0x6400 magic (PRMT / LOP3) and one
//   HSUB2 (or HFMA2 for high nibbles, which come out times 16). Scale and zero stay out of
//   the mma: score_k = s_k * (Q . c_k) + z'_k * sum(Q); P' = P * s_k * 2^BITS feeds P.V, and
//   sum_k P_k z'_k joins every output column at the end (z' = zero + 2^(BITS-1) * scale).
// - No ldmatrix (it moves 16-bit elements): lanes read their fragments' codes with plain
//   shared loads. The d order of the Q.K dot product is free, so each lane takes contiguous
//   bytes of a K row and Q's fragments are built in the same order; O^T's rows (d) are free
//   too, so each lane owns contiguous bytes of the V rows of its 4 keys and PRMT pairs two
//   keys' codes of one d into a half2. P's C fragment becomes the B operand with movmatrix.
// - Row strides and XOR swizzles (k_off / v_off) make those loads bank-conflict free.
#include "decode_split.cuh"
#include "mma.cuh"
#include "paged_cache.cuh"

namespace lmd {

constexpr int kQuantWarps = 4;
constexpr int kQuantTile = 16 * kQuantWarps;  // keys per smem tile, 16 per warp

__device__ __forceinline__ void cp_async_4(void* dst, const void* src, int src_bytes) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(src_bytes));
}

__device__ __forceinline__ uint32_t hsub2(uint32_t a, uint32_t b) {
  uint32_t r;
  asm("sub.rn.f16x2 %0, %1, %2;\n" : "=r"(r) : "r"(a), "r"(b));
  return r;
}

__device__ __forceinline__ uint32_t hfma2(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t r;
  asm("fma.rn.f16x2 %0, %1, %2, %3;\n" : "=r"(r) : "r"(a), "r"(b), "r"(c));
  return r;
}

// The transpose of an 8x8 b16 matrix held as an mma fragment (lane: row lane / 4, columns
// 2 (lane % 4) and + 1).
__device__ __forceinline__ uint32_t movmatrix_trans(uint32_t a) {
  uint32_t r;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(r) : "r"(a));
  return r;
}

__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) { return pack2(lo, hi, __half()); }

// int8: the two bytes that `sel` puts at bytes 0 and 2 (byte 4 of the second operand, 0x64,
// at 1 and 3) as half2 1024 + c, minus 1152: exact c - 128.
__device__ __forceinline__ uint32_t codes8(uint32_t x, uint32_t sel) {
  return hsub2(__byte_perm(x, 0x64646464u, sel), 0x64806480u);
}
// int4: the low nibbles of bytes 0 and 2 of x as half2 c - 8 (1024 + c - 1032), exact.
__device__ __forceinline__ uint32_t codes4_lo(uint32_t x) {
  return hsub2((x & 0x000F000Fu) | 0x64006400u, 0x64086408u);
}
// int4: the high nibbles of bytes 0 and 2: 1024 + 16 c, times 1/16, minus 72: exact c - 8.
__device__ __forceinline__ uint32_t codes4_hi(uint32_t x) {
  return hfma2((x & 0x00F000F0u) | 0x64006400u, 0x2C002C00u, 0xD480D480u);
}

// Tile layout constants of one (D, BITS) (the host's quant_decode_smem mirrors them).
template <int D, int BITS>
struct QuantTile {
  static constexpr int kRow = D * BITS / 8;                    // bytes of one cached row
  static constexpr int kKStride = kRow;                        // K rows: swizzled (128 B) or dense
  static constexpr int kVStride = kRow == 128 ? 128 : kRow + 16;  // V rows: swizzled or padded
  static constexpr int kKBytes = kQuantTile * kKStride;
  static constexpr int kVBytes = kQuantTile * kVStride;
  static constexpr int kStage = kKBytes + kVBytes + 2 * kQuantTile * 4;  // + K and V params
  // Byte offset of 16-byte chunk `c` of tile row `r`. Lane (g, t) of a warp reads K rows g and
  // g + 8 at chunks t (+ 4) and V rows of keys 2t, 2t + 1, 2t + 8, 2t + 9 at chunk g.
  __device__ static __forceinline__ int k_off(int r, int c) {
    return r * kKStride + ((kRow == 128 ? c ^ ((r & 1) << 2) : c) << 4);
  }
  __device__ static __forceinline__ int v_off(int r, int c) {
    return r * kVStride + ((kRow == 128 ? c ^ (r & 6) : c) << 4);
  }
  // Byte (of a K row) of this lane's 32-bit word w: lane t owns D * BITS / 32 bytes of a row.
  __device__ static __forceinline__ int k_byte(int w, int t) {
    return kRow >= 64 ? (w / 4) * 64 + 16 * t + 4 * (w % 4) : 8 * t + 4 * w;
  }
  // The element d of O^T's row half `hi` (0: row g, 1: row g + 8) of m-tile mt for lane group g.
  __device__ static __forceinline__ int v_dim(int g, int mt, int hi) {
    return BITS == 8 ? (D / 8) * g + 2 * mt + hi : (D / 16) * g + mt + hi * (D / 2);
  }
};

// Dynamic smem: the ring, STAGES x {K codes [64 rows], V codes [64 rows], K params [64],
// V params [64] (half2 scale, zero)}; after the main loop it holds the warps' fp32
// O^T [warps, 16 heads, D + 4] and (max, sum, zero term) [warps, 16] each.
template <typename T, int D, int BITS, int NH, int STAGES>
__device__ __forceinline__ void paged_decode_quant(
    T* __restrict__ out, float* __restrict__ part_o, float* __restrict__ part_ml,
    const T* __restrict__ q, const uint8_t* __restrict__ k_values,
    const __half* __restrict__ k_params, const uint8_t* __restrict__ v_values,
    const __half* __restrict__ v_params, const int* __restrict__ kv_lens,
    const int* __restrict__ block_tables, int bt_stride, int64_t q_stride_t, int64_t q_stride_h,
    int num_q_heads, int num_kv_heads, int group_heads, int block_size, int block_shift,
    float scale_log2) {
  // q: [B, Hq, D] (strided); out: [B, Hq, D]; part_o: [B, Hq, S, D] fp32; part_ml: [B, Hq, S, 2]
  using L = QuantTile<D, BITS>;
  constexpr int kThreads = kQuantWarps * 32;
  constexpr int kTile = kQuantTile;
  constexpr int kChunks = L::kRow / 16;          // 16-byte chunks per row
  constexpr int kRowStep = kThreads / kChunks;   // rows one pass of the CTA copies
  constexpr int kKSteps = D / 16;                // k-steps of Q.K; also m-tiles of O^T
  constexpr int kKWords = L::kRow / 16;          // 32-bit words of a K row per lane
  constexpr int kVWords = L::kRow / 32;          // of a V row per lane
  constexpr int kOStride = D + 4;
  constexpr float kCodeOff = BITS == 8 ? 128.f : 8.f;  // codes are centred: c - kCodeOff
  constexpr float kPScale = BITS == 8 ? 256.f : 16.f;  // P' = P * scale * kPScale in fp16
  static_assert(L::kRow % 32 == 0 && kTile % kRowStep == 0, "rows copy in whole chunks");
  extern __shared__ __align__(128) unsigned char smem[];

  const int b = blockIdx.y, split = blockIdx.z, num_splits = gridDim.z;
  const int G = group_heads;
  const int h0 = blockIdx.x * G;
  const int kv_head = h0 / (num_q_heads / num_kv_heads);
  const int kv_len = kv_lens[b];
  const int split_len = decode_split_len(kv_len, num_splits);
  const int start = split * split_len;
  if (start >= kv_len) {  // idle split: the reduce kernel skips it
    pdl_wait();
    return;
  }
  const int end = min(kv_len, start + split_len);
  const int num_tiles = (end - start + kTile - 1) / kTile;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const int* bt = block_tables + static_cast<int64_t>(b) * bt_stride;

  // Copies: thread tid moves chunk tid % kChunks of rows tid / kChunks + i * kRowStep of K
  // and V, and the params of key tid % 64 of K (tid < 64) or V.
  const int ld_row = tid / kChunks, ld_chunk = tid % kChunks;
  const uint32_t values_row_bytes = num_kv_heads * L::kRow;  // all kv heads of a token
  const uint32_t params_row_bytes = num_kv_heads * 4;
  const char* src_k = reinterpret_cast<const char*>(k_values) + kv_head * L::kRow + ld_chunk * 16;
  const char* src_v = reinterpret_cast<const char*>(v_values) + kv_head * L::kRow + ld_chunk * 16;
  const int par_key = tid % kTile;
  const char* src_p = reinterpret_cast<const char*>(tid < kTile ? k_params : v_params) + kv_head * 4;
  const int dst_p = L::kKBytes + L::kVBytes + (tid < kTile ? 0 : kTile * 4) + par_key * 4;
  enum Rows { kAll, kAllButNew, kOnlyNew };
  // Power-of-two blocks of at least a tile hold whole tiles: one block-table entry per tile,
  // which the main loop fetches an iteration ahead (a load it would otherwise wait for).
  const bool whole_blocks = block_shift >= 0 && block_size >= kTile;
  auto tile_block = [&](int tile) {
    return whole_blocks && tile < num_tiles ? bt[(start + tile * kTile) >> block_shift] : 0;
  };
  auto load_tile = [&](int tile, Rows rows, int block) {
    unsigned char* stage = smem + (tile % STAGES) * L::kStage;
    const int n0 = start + tile * kTile;
    auto copy_row = [&](int r, uint64_t slot, int bytes) {
      const bool is_new = n0 + r == kv_len - 1;
      if (rows == kAll || (rows == kOnlyNew) == is_new) {
        const uint64_t off = slot * values_row_bytes;
        cp_async_16(stage + L::k_off(r, ld_chunk), src_k + off, bytes);
        cp_async_16(stage + L::kKBytes + L::v_off(r, ld_chunk), src_v + off, bytes);
      }
    };
    auto copy_params = [&](uint64_t slot, int bytes) {
      const bool is_new = n0 + par_key == kv_len - 1;
      if (rows == kAll || (rows == kOnlyNew) == is_new)
        cp_async_4(stage + dst_p, src_p + slot * params_row_bytes, bytes ? 4 : 0);
    };
    if (whole_blocks) {  // keys past the end: zero-filled from rows of the same block
      const uint32_t slot0 = static_cast<uint32_t>(block) * block_size + (n0 & (block_size - 1));
#pragma unroll
      for (int i = 0; i < kTile / kRowStep; ++i) {
        const int r = ld_row + i * kRowStep;
        copy_row(r, slot0 + r, n0 + r < end ? 16 : 0);
      }
      copy_params(slot0 + par_key, n0 + par_key < end ? 4 : 0);
      return;
    }
    for_tile_rows<kTile / kRowStep, kRowStep, kTile>(  // row_bytes 1: the cache row (slot) itself
        bt, n0, n0 + ld_row, end, block_size, block_shift, 1u,
        [&](int i, uint64_t slot, int bytes) { copy_row(ld_row + i * kRowStep, slot, bytes); });
    for_tile_rows<1, kTile, kTile>(bt, n0, n0 + par_key, end, block_size, block_shift, 1u,
                                   [&](int, uint64_t slot, int bytes) { copy_params(slot, bytes); });
  };
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < num_tiles) load_tile(s, kAllButNew, tile_block(s));
    cp_async_commit();
  }
  pdl_wait();
  const int new_tile = (kv_len - 1 - start) / kTile;
  if (kv_len - 1 < end && new_tile < STAGES - 1) load_tile(new_tile, kOnlyNew, tile_block(new_tile));
  cp_async_commit();
  int next_block = tile_block(STAGES - 1);

  // Q^T as B fragments (k: d in the order the K codes come in, n: head g of tile nt), fp16,
  // and per head sum(Q) over the same fp16 values. qsum[nt][j]: head nt * 8 + 2t + j (the
  // score fragment's columns).
  uint32_t qb[NH][kKSteps][2];
  float qsum[NH][2];
#pragma unroll
  for (int nt = 0; nt < NH; ++nt) {
    const int head = nt * 8 + g;
    const T* qh = q + b * q_stride_t + (h0 + min(head, G - 1)) * q_stride_h;
    float part = 0.f;
#pragma unroll
    for (int ks = 0; ks < kKSteps; ++ks) {
      int d[4];  // elements of b0 (lo, hi) and b1 (lo, hi)
      if constexpr (BITS == 8) {
        const int base = L::k_byte(ks, t);
        d[0] = base, d[1] = base + 1, d[2] = base + 2, d[3] = base + 3;
      } else {
        const int base = L::k_byte(ks / 2, t) + ks % 2;
        d[0] = base, d[1] = base + 2, d[2] = base + D / 2, d[3] = base + 2 + D / 2;
      }
      float v[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        v[e] = head < G ? __half2float(__float2half_rn(to_float(qh[d[e]]))) : 0.f;
        part += v[e];
      }
      qb[nt][ks][0] = pack_half2(v[0], v[1]);
      qb[nt][ks][1] = pack_half2(v[2], v[3]);
    }
    part += __shfl_xor_sync(0xffffffffu, part, 1);
    part += __shfl_xor_sync(0xffffffffu, part, 2);  // all 4 lanes of group g: head nt * 8 + g
    qsum[nt][0] = __shfl_sync(0xffffffffu, part, (2 * t) * 4);
    qsum[nt][1] = __shfl_sync(0xffffffffu, part, (2 * t + 1) * 4);
  }

  float o[NH][kKSteps][4];  // O^T C fragments: m-tile mt (d rows v_dim), columns heads 2t, 2t + 1
#pragma unroll
  for (int nt = 0; nt < NH; ++nt)
#pragma unroll
    for (int mt = 0; mt < kKSteps; ++mt)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[nt][mt][e] = 0.f;
  // Per column (head nt * 8 + 2t + j): raw-score max (warp-uniform), and this lane's partial
  // sums of P and of P * z' (reduced over the 8 lane groups at the end).
  float row_max[NH][2], row_sum[NH][2], zsum[NH][2];
#pragma unroll
  for (int nt = 0; nt < NH; ++nt)
#pragma unroll
    for (int j = 0; j < 2; ++j) row_max[nt][j] = -INFINITY, row_sum[nt][j] = 0.f, zsum[nt][j] = 0.f;

  for (int tile = 0; tile < num_tiles; ++tile) {
    if (tile == 0)
      cp_async_wait<0>();
    else
      cp_async_wait<STAGES - 2>();
    __syncthreads();
    if (tile + STAGES - 1 < num_tiles) load_tile(tile + STAGES - 1, kAll, next_block);
    cp_async_commit();
    next_block = tile_block(tile + STAGES);  // used next iteration
    const int key0 = start + tile * kTile + warp * 16;  // this warp's first key
    if (key0 >= end) continue;                          // warp-uniform: only in the last tile
    const unsigned char* stage = smem + (tile % STAGES) * L::kStage;
    const unsigned char* s_k = stage;
    const unsigned char* s_v = stage + L::kKBytes;
    const __half2* s_kp = reinterpret_cast<const __half2*>(stage + L::kKBytes + L::kVBytes);
    const __half2* s_vp = s_kp + kTile;
    const int r0 = warp * 16 + g;  // this lane's keys (score rows): r0 and r0 + 8

    // S^T = K Q^T: A = K codes of rows r0, r0 + 8.
    uint32_t kw[2][kKWords];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      if constexpr (L::kRow >= 64) {
#pragma unroll
        for (int i = 0; i < L::kRow / 64; ++i) {
          const uint4 c = *reinterpret_cast<const uint4*>(s_k + L::k_off(r0 + 8 * h, t + 4 * i));
          kw[h][4 * i] = c.x, kw[h][4 * i + 1] = c.y, kw[h][4 * i + 2] = c.z, kw[h][4 * i + 3] = c.w;
        }
      } else {
        const uint2 c = *reinterpret_cast<const uint2*>(s_k + (r0 + 8 * h) * L::kKStride + 8 * t);
        kw[h][0] = c.x, kw[h][1] = c.y;
      }
    }
    float s[NH][4];
#pragma unroll
    for (int nt = 0; nt < NH; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[nt][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < kKSteps; ++ks) {
      uint32_t a[4];
      if constexpr (BITS == 8) {
        a[0] = codes8(kw[0][ks], 0x4140), a[1] = codes8(kw[1][ks], 0x4140);
        a[2] = codes8(kw[0][ks], 0x4342), a[3] = codes8(kw[1][ks], 0x4342);
      } else {
        const uint32_t x0 = ks % 2 ? kw[0][ks / 2] >> 8 : kw[0][ks / 2];
        const uint32_t x1 = ks % 2 ? kw[1][ks / 2] >> 8 : kw[1][ks / 2];
        a[0] = codes4_lo(x0), a[1] = codes4_lo(x1), a[2] = codes4_hi(x0), a[3] = codes4_hi(x1);
      }
#pragma unroll
      for (int nt = 0; nt < NH; ++nt) mma_16816(s[nt], a, qb[nt][ks][0], qb[nt][ks][1], __half());
    }
    // V codes of keys 2t, 2t + 1, 2t + 8, 2t + 9 (issued early; used after the softmax).
    uint32_t vw[4][kVWords];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = warp * 16 + 2 * t + (i & 1) + (i >> 1) * 8;
      if constexpr (kVWords == 4) {
        const uint4 c = *reinterpret_cast<const uint4*>(s_v + L::v_off(r, g));
        vw[i][0] = c.x, vw[i][1] = c.y, vw[i][2] = c.z, vw[i][3] = c.w;
      } else if constexpr (kVWords == 2) {
        const uint2 c = *reinterpret_cast<const uint2*>(s_v + r * L::kVStride + 8 * g);
        vw[i][0] = c.x, vw[i][1] = c.y;
      } else {
        vw[i][0] = *reinterpret_cast<const uint32_t*>(s_v + r * L::kVStride + 4 * g);
      }
    }
    // Scores: s * raw + z' * sum(Q) for keys r0 (e = 0, 1) and r0 + 8 (e = 2, 3).
    const float2 kp0 = __half22float2(s_kp[r0]), kp1 = __half22float2(s_kp[r0 + 8]);
    const float2 vp0 = __half22float2(s_vp[r0]), vp1 = __half22float2(s_vp[r0 + 8]);
    const float kz0 = fmaf(kCodeOff, kp0.x, kp0.y), kz1 = fmaf(kCodeOff, kp1.x, kp1.y);
    const float vz0 = fmaf(kCodeOff, vp0.x, vp0.y), vz1 = fmaf(kCodeOff, vp1.x, vp1.y);
    const bool valid0 = key0 + g < end, valid1 = key0 + g + 8 < end;
#pragma unroll
    for (int nt = 0; nt < NH; ++nt)
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        s[nt][j] = valid0 ? fmaf(kp0.x, s[nt][j], kz0 * qsum[nt][j]) : -INFINITY;
        s[nt][2 + j] = valid1 ? fmaf(kp1.x, s[nt][2 + j], kz1 * qsum[nt][j]) : -INFINITY;
      }
    // Online softmax per column (head); a column's 16 keys live in the 8 lane groups.
    uint32_t pb[NH][2];
    float alphas[NH][2];
    bool rescale = false;
#pragma unroll
    for (int nt = 0; nt < NH; ++nt) {
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        float mx = fmaxf(s[nt][j], s[nt][2 + j]);
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 4));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 8));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 16));
        const float new_max = fmaxf(row_max[nt][j], mx);  // finite: the warp's first key is valid
        const float base = new_max * scale_log2;
        const float alpha = exp2_ftz(fmaf(row_max[nt][j], scale_log2, -base));
        row_max[nt][j] = new_max;
        const float p0 = exp2_ftz(fmaf(s[nt][j], scale_log2, -base));
        const float p1 = exp2_ftz(fmaf(s[nt][2 + j], scale_log2, -base));
        row_sum[nt][j] = fmaf(row_sum[nt][j], alpha, p0 + p1);
        zsum[nt][j] = fmaf(zsum[nt][j], alpha, fmaf(p0, vz0, p1 * vz1));
        alphas[nt][j] = alpha;
        rescale |= alpha != 1.f;
        s[nt][j] = p0 * (vp0.x * kPScale);
        s[nt][2 + j] = p1 * (vp1.x * kPScale);
      }
      // P'^T as the B fragment: the C fragment's 8x8 blocks (keys 0-7, 8-15) transposed.
      pb[nt][0] = movmatrix_trans(pack_half2(s[nt][0], s[nt][1]));
      pb[nt][1] = movmatrix_trans(pack_half2(s[nt][2], s[nt][3]));
    }
    if (__any_sync(0xffffffffu, rescale)) {  // once the maxima settle, most tiles skip this
#pragma unroll
      for (int nt = 0; nt < NH; ++nt)
#pragma unroll
        for (int mt = 0; mt < kKSteps; ++mt)
#pragma unroll
          for (int e = 0; e < 4; ++e) o[nt][mt][e] *= alphas[nt][e % 2];
    }
    // O^T += V^T P'^T: A = V codes, rows d (v_dim), columns keys 2t, 2t + 1 (a0 a1) and
    // 2t + 8, 2t + 9 (a2 a3).
#pragma unroll
    for (int mt = 0; mt < kKSteps; ++mt) {
      uint32_t a[4];
      if constexpr (BITS == 8) {
        const int w = mt / 2;
        const uint32_t sel = mt % 2 ? 0x7362 : 0x5140;  // bytes 2, 3 or 0, 1 of the two keys
        const uint32_t p01 = __byte_perm(vw[0][w], vw[1][w], sel);
        const uint32_t p23 = __byte_perm(vw[2][w], vw[3][w], sel);
        a[0] = codes8(p01, 0x4140), a[1] = codes8(p01, 0x4342);
        a[2] = codes8(p23, 0x4140), a[3] = codes8(p23, 0x4342);
      } else {
        const int w = mt / 4, byte = mt % 4;
        const uint32_t sel = byte < 2 ? 0x5410 : 0x7632;  // bytes (0 1 | 2 3) of key a, key b
        uint32_t p01 = __byte_perm(vw[0][w], vw[1][w], sel);
        uint32_t p23 = __byte_perm(vw[2][w], vw[3][w], sel);
        if (byte % 2) p01 >>= 8, p23 >>= 8;
        a[0] = codes4_lo(p01), a[1] = codes4_hi(p01), a[2] = codes4_lo(p23), a[3] = codes4_hi(p23);
      }
#pragma unroll
      for (int nt = 0; nt < NH; ++nt) mma_16816(o[nt][mt], a, pb[nt][0], pb[nt][1], __half());
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // the ring becomes the epilogue's scratch

  // Merge the warps: per head, M = max_w m_w; O = sum_w 2^(m_w - M) (O_w / kPScale + zsum_w).
  float* s_o = reinterpret_cast<float*>(smem);                 // [warps, 16, kOStride]
  float* s_m = s_o + kQuantWarps * 16 * kOStride;             // [warps, 16]
  float* s_l = s_m + kQuantWarps * 16;                        // [warps, 16]
#pragma unroll
  for (int nt = 0; nt < NH; ++nt)
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      float l = row_sum[nt][j], z = zsum[nt][j];
#pragma unroll
      for (int m = 4; m < 32; m *= 2) {
        l += __shfl_xor_sync(0xffffffffu, l, m);
        z += __shfl_xor_sync(0xffffffffu, z, m);
      }
      row_sum[nt][j] = l, zsum[nt][j] = z;
      if (g == 0) {
        s_m[warp * 16 + nt * 8 + 2 * t + j] = row_max[nt][j];
        s_l[warp * 16 + nt * 8 + 2 * t + j] = l;
      }
    }
  __syncthreads();
#pragma unroll
  for (int nt = 0; nt < NH; ++nt)
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int col = nt * 8 + 2 * t + j;
      float m = -INFINITY;
#pragma unroll
      for (int w = 0; w < kQuantWarps; ++w) m = fmaxf(m, s_m[w * 16 + col]);
      const float c = exp2_ftz((row_max[nt][j] - m) * scale_log2);  // 0 for a warp that saw no key
      const float cz = c * zsum[nt][j], co = c * (1.f / kPScale);
      float* dst = s_o + (warp * 16 + col) * kOStride;
#pragma unroll
      for (int mt = 0; mt < kKSteps; ++mt) {
        dst[L::v_dim(g, mt, 0)] = fmaf(o[nt][mt][j], co, cz);
        dst[L::v_dim(g, mt, 1)] = fmaf(o[nt][mt][2 + j], co, cz);
      }
    }
  __syncthreads();
  for (int idx = tid; idx < G * D; idx += kThreads) {
    const int r = idx / D, d = idx % D;
    float m = -INFINITY;
#pragma unroll
    for (int w = 0; w < kQuantWarps; ++w) m = fmaxf(m, s_m[w * 16 + r]);
    float v = 0.f, l = 0.f;
#pragma unroll
    for (int w = 0; w < kQuantWarps; ++w) {
      v += s_o[(w * 16 + r) * kOStride + d];
      l += s_l[w * 16 + r] * exp2_ftz((s_m[w * 16 + r] - m) * scale_log2);
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

}  // namespace lmd

// 4 warps; NH = 1 (G <= 8) fits 4 CTAs an SM's registers, NH = 2 three.
#define LMD_QDECODE_KERNEL(T, SUFFIX, BITS, D, NH, STAGES)                                       \
  extern "C" __global__ void __launch_bounds__(lmd::kQuantWarps * 32, NH == 1 ? 4 : 3)          \
      paged_decode_q##BITS##_##SUFFIX##_d##D##_h##NH##_s##STAGES(                                \
          T* out, float* part_o, float* part_ml, const T* q, const uint8_t* k_values,           \
          const __half* k_params, const uint8_t* v_values, const __half* v_params,              \
          const int* kv_lens, const int* block_tables, int bt_stride, int64_t q_stride_t,       \
          int64_t q_stride_h, int num_q_heads, int num_kv_heads, int group_heads,               \
          int block_size, int block_shift, float scale_log2) {                                  \
    lmd::pdl_trigger();                                                                         \
    lmd::paged_decode_quant<T, D, BITS, NH, STAGES>(                                            \
        out, part_o, part_ml, q, k_values, k_params, v_values, v_params, kv_lens, block_tables, \
        bt_stride, q_stride_t, q_stride_h, num_q_heads, num_kv_heads, group_heads, block_size,  \
        block_shift, scale_log2);                                                               \
  }

#define LMD_QDECODE_STAGES(T, SUFFIX, BITS, D, NH) \
  LMD_QDECODE_KERNEL(T, SUFFIX, BITS, D, NH, 2)    \
  LMD_QDECODE_KERNEL(T, SUFFIX, BITS, D, NH, 4)    \
  LMD_QDECODE_KERNEL(T, SUFFIX, BITS, D, NH, 6)

#define LMD_QDECODE_ALL(T, SUFFIX, D)        \
  LMD_QDECODE_STAGES(T, SUFFIX, 8, D, 1)     \
  LMD_QDECODE_STAGES(T, SUFFIX, 8, D, 2)     \
  LMD_QDECODE_STAGES(T, SUFFIX, 4, D, 1)     \
  LMD_QDECODE_STAGES(T, SUFFIX, 4, D, 2)

LMD_QDECODE_ALL(__half, f16, 64)
LMD_QDECODE_ALL(__half, f16, 128)
LMD_QDECODE_ALL(__nv_bfloat16, bf16, 64)
LMD_QDECODE_ALL(__nv_bfloat16, bf16, 128)
