// W4A16 for few rows (M <= 16): out[m, n] = sum_k x[m, k] * W[n, k] (+ bias[n]) with W in
// the int4 kernel layout of lmdeploy_sdk/quant/int4.py: per (16-row tile, 64-input chunk)
// 512 bytes, lane l's 16-byte vector holding the mma.sync m16n8k16 A fragments of the
// chunk's four k16 steps (nibbles j and j + 4 of word w are fragment register j), and
// (scale, additive term) pairs scale_min [K/G, N_pad] of T: W = q * s + m.
//
// The product is computed transposed, out^T = W x^T, so W is mma's A operand (16 rows of
// outputs) and the M tokens are its n8 columns: 1..8 tokens waste no tensor-core work on
// padding rows of W, and W never passes through shared memory:
//  - work items are (row block of kRB row tiles, K slice of kKS inputs), each lane's share
//    of an item being kI4Loads 16-byte W vectors; a persistent grid takes contiguous runs of
//    items (row-block-major, slice-fastest: "stream-K"), and each CTA issues the next
//    item's W loads as soon as the current item's MMAs have read theirs, so the loads fly
//    while it reduces, stores and stages the next x slice. The first item's loads go out
//    before the programmatic-dependent-launch wait, while the previous kernel finishes;
//  - the CTA stages the item's K slice of x (as T, rows padded by 16 bytes against bank
//    conflicts) and its sums per span in shared memory, and warps read mma's B fragments
//    with ldmatrix; x is staged again only when the slice changes;
//  - nibbles become T exactly with the magic-number trick ((q & 0xF) | exponent bits is
//    1024 + q in fp16, 128 + q in bf16: one LOP3, plus a shift for some registers), and the
//    MMAs multiply these raw values; a span of min(G, 64) inputs later the fp32 sums take
//    the group's scale and additive term at once, sum * s' + m' * (the span's sum of x),
//    so no instruction is spent per weight on (s, m);
//  - a CTA adds the slices of its run that share a row block in registers; a row block
//    split between CTAs is summed by the one that finishes it last (a per-row-block
//    counter in global memory, reset by that CTA), over the runs in order, so the result
//    does not depend on which CTA finishes first.
// Epilogues as in gemv.cu: plain (+ bias), SiLU-and-mul of [gate | up] row pairs, and rope
// + KV-cache write of [q | k | v] row pairs; a paired row block's first kRB/2 tiles hold the
// first rows of its pairs and the last kRB/2 tiles the partner rows. The rms_norm stage
// folds the norm in: x is staged as round(x + residual) * norm_w, the slices' sums of
// squares are added up like the products, and the output is scaled by rsqrt(mean square +
// eps). The result equals the unfused path within T's rounding (one rounding of x * rsqrt
// moves after the product).
#include "common.cuh"
#include "mma.cuh"
#include "rope_store.cuh"

namespace lmd {

constexpr int kI4Loads = 8;  // 16-byte W vectors per lane and item, all in flight at once

// The CTA's shape by token tiles MT (M <= 8 MT, MT = 1 or 2): kWarps warps, kRB row tiles,
// one row tile a warp, kWPT warps a row tile (splitting its chunks), kCPW chunks per warp
// and item, K slice kKS (4096: Llama-3-8B's hidden size is one slice, so x is
// staged once per launch). More tokens take dequantize + cuBLAS (native/int4_gemm.py): a
// build for 32 and 64 tokens with smaller slices lost to it (docs/performance.md).
template <int MT>
struct I4Shape {
  static_assert(MT == 1 || MT == 2, "builds for up to 16 tokens");
  static constexpr int kWarps = 16;
  static constexpr int kRB = 2;
  static constexpr int kWPT = kWarps / kRB;
  static constexpr int kCPW = kI4Loads;
  static constexpr int kKS = 64 * kCPW * kWPT;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kXStride = kKS + 8;  // elements; +16 bytes: ldmatrix rows on distinct banks
  static constexpr int kRows = kRB * 16;
  static constexpr int kTokens = MT * 8;
  static constexpr int kXBytes = kTokens * kXStride * 2;
  static constexpr int kXSumBytes = kTokens * (kKS / 32) * 4;  // sums of x per (span, token)
  static constexpr int kRedBytes = 2 * kWPT * kRows * kTokens * 4;  // two buffers
  static_assert(kRB * kWPT == kWarps, "every warp has a tile");
};

// T's magic exponent pair: the bits of (1024, 1024) in fp16 and (128, 128) in bf16, whose
// mantissa step is 1, so OR-ing a nibble into the low bits gives magic + q exactly.
template <typename T>
struct Magic;
template <>
struct Magic<__half> {
  static constexpr uint32_t kBits = 0x64006400u;
};
template <>
struct Magic<__nv_bfloat16> {
  static constexpr uint32_t kBits = 0x43004300u;
};

template <typename T>
__device__ __forceinline__ typename Pair<T>::type as_pair(uint32_t v) {
  return *reinterpret_cast<typename Pair<T>::type*>(&v);
}

template <typename T>
__device__ __forceinline__ uint32_t as_u32(typename Pair<T>::type v) {
  return *reinterpret_cast<uint32_t*>(&v);
}

// (s, m) packed as one T pair -> (s, s) and (m, m).
__device__ __forceinline__ void split_scale_min(uint32_t sm, __half2& s, __half2& m) {
  const __half2 v = as_pair<__half>(sm);
  s = __low2half2(v);
  m = __high2half2(v);
}
__device__ __forceinline__ void split_scale_min(uint32_t sm, __nv_bfloat162& s, __nv_bfloat162& m) {
  const __nv_bfloat162 v = as_pair<__nv_bfloat16>(sm);
  s = __low2bfloat162(v);
  m = __high2bfloat162(v);
}

// (a & mask) | bits in one LOP3 (the compiler emits an AND and an OR for the C++ form).
template <uint32_t kMask>
__device__ __forceinline__ uint32_t and_or(uint32_t a, uint32_t bits) {
  uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;\n" : "=r"(d) : "r"(a), "n"(kMask), "r"(bits));
  return d;
}

// One word of the kernel layout -> mma A fragment a[4]: register j holds nibbles j and j + 4
// (rows g for even j, g + 8 for odd j), dequantized as q * s + m with the row's pair.
template <typename T>
__device__ __forceinline__ void dequant_word(uint32_t (&a)[4], uint32_t q, uint32_t sm_g,
                                             uint32_t sm_g8) {
  using P = typename Pair<T>::type;
  P s0, m0, s8, m8;
  split_scale_min(sm_g, s0, m0);
  split_scale_min(sm_g8, s8, m8);
  const uint32_t magic_bits = Magic<T>::kBits;
  const P magic = as_pair<T>(magic_bits);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const P v = __hsub2(as_pair<T>(and_or<0x000F000Fu>(q >> (4 * j), magic_bits)), magic);
    a[j] = as_u32<T>(__hfma2(v, (j & 1) ? s8 : s0, (j & 1) ? m8 : m0));
  }
}

// One word -> mma A fragment a[4] holding magic + q (exact in T), the group's scale and
// additive term applied later to the fp32 sums (fold_group): two instructions a register
// fewer than dequant_word. fp16 reads the odd registers (row g + 8) as 1024 + 16 q, nibbles
// at bits 4-7 (fp16's mantissa has room; bf16's does not), so one shift serves four registers.
template <typename T>
__device__ __forceinline__ void raw_word(uint32_t (&a)[4], uint32_t q);
template <>
__device__ __forceinline__ void raw_word<__half>(uint32_t (&a)[4], uint32_t q) {
  const uint32_t hi = q >> 8;
  a[0] = and_or<0x000F000Fu>(q, Magic<__half>::kBits);
  a[1] = and_or<0x00F000F0u>(q, Magic<__half>::kBits);
  a[2] = and_or<0x000F000Fu>(hi, Magic<__half>::kBits);
  a[3] = and_or<0x00F000F0u>(hi, Magic<__half>::kBits);
}
template <>
__device__ __forceinline__ void raw_word<__nv_bfloat16>(uint32_t (&a)[4], uint32_t q) {
#pragma unroll
  for (int j = 0; j < 4; ++j) a[j] = and_or<0x000F000Fu>(q >> (4 * j), Magic<__nv_bfloat16>::kBits);
}

// raw_word's values are v = magic + q (row g) and magic + 16 q (fp16 row g + 8), so
// q * s + m = v * s' + m' with s' = s (or s / 16) and m' = m - magic * s'.
template <typename T>
struct RawForm;
template <>
struct RawForm<__half> {
  static constexpr float kMagic = 1024.f, kHiScale = 1.f / 16.f;
};
template <>
struct RawForm<__nv_bfloat16> {
  static constexpr float kMagic = 128.f, kHiScale = 1.f;
};

// (s', m') of one row from its (s, m) pair; `hi`: row g + 8.
template <typename T>
__device__ __forceinline__ float2 fold_pair(uint32_t sm, bool hi) {
  const float2 f = to_float2(as_pair<T>(sm));
  const float s = hi ? f.x * RawForm<T>::kHiScale : f.x;
  return make_float2(s, fmaf(-RawForm<T>::kMagic, s, f.y));
}

enum class I4Stage { kCopy, kRmsNorm };
enum class I4Epilogue { kStore, kSiluMul, kRope };

template <typename T>
struct I4NormArgs {
  const T* residual;  // [M, K] contiguous, or null
  T* sum_out;         // [M, K]: x + residual (written by the CTAs that stage row block 0)
  const T* weight;    // [K]
  float eps;
};

// Which W row tile local tile lt of row block rb is; -1 past the end. Paired epilogues: pair
// p = rb * RB/2 + lt % (RB/2), half = lt / (RB/2); its tile is (p / H2) * 2 H2 + p % H2 + half
// * H2, with H2 = half_tiles (rope: D/32 tiles a half head; silu: I/16, one "head").
template <I4Epilogue kEpi, int RB>
__device__ __forceinline__ int tile_of(int rb, int lt, int units, int half_tiles) {
  if constexpr (kEpi == I4Epilogue::kStore) {
    const int t = rb * RB + lt;
    return t < units ? t : -1;
  } else {
    const int p = rb * (RB / 2) + lt % (RB / 2), half = lt / (RB / 2);
    if (p >= units) return -1;
    return (p / half_tiles) * 2 * half_tiles + p % half_tiles + half * half_tiles;
  }
}

// The contiguous run of items [first, last) of CTA c when `items` are split over `ctas`.
__device__ __forceinline__ int run_start(int c, int items, int ctas) {
  const int q = items / ctas, r = items % ctas;
  return c * q + min(c, r);
}

// Whether item i starts a CTA's run (the runs' partial sums are where a row block split
// between CTAs keeps its parts).
__device__ __forceinline__ bool starts_run(int i, int items, int ctas) {
  const int q = items / ctas, r = items % ctas;
  const int c = i < r * (q + 1) ? i / (q + 1) : r + (i - r * (q + 1)) / max(q, 1);
  return run_start(c, items, ctas) == i;
}

// The first chunk of the K slice `slice` that warp `warp` reads; its u-th is u * kWPT on.
template <int MT>
__device__ __forceinline__ int first_chunk(int slice, int warp) {
  using S = I4Shape<MT>;
  return slice * (S::kKS / 64) + warp % S::kWPT;
}

// The number of the warp's chunks (u = 0, 1, ...) inside K for an item of slice `slice`.
template <int MT>
__device__ __forceinline__ int valid_chunks(int slice, int warp, int chunks) {
  using S = I4Shape<MT>;
  return min(S::kCPW, max(0, (chunks - first_chunk<MT>(slice, warp) + S::kWPT - 1) / S::kWPT));
}

// One lane's W vectors and (s, m) pairs of an item: chunk u < valid of the warp's share is
// chunk c0 + u kWPT of row tile `tile`, with the pairs of rows g and g + 8 of its group
// (sm[u][0]) and, at G = 32, of its second half's group (sm[u][1]). A tile past the
// weight's end (-1) reads tile 0 instead: the epilogue skips its rows.
template <int MT, bool kG32>
__device__ __forceinline__ void load_item(uint4 (&wv)[I4Shape<MT>::kCPW], uint32_t (&sm)[I4Shape<MT>::kCPW][2][2],
                                          const uint4* __restrict__ qweight,
                                          const uint32_t* __restrict__ scale_min, int tile, int c0, int valid,
                                          int chunks, int n_pad, int group_shift) {
  using S = I4Shape<MT>;
  const int lane = threadIdx.x % 32;
  tile = max(tile, 0);
  // 32-bit offsets: the layout's sizes are far below 2^31 vectors and pairs
  const uint4* w = qweight + (tile * chunks + c0) * 32 + lane;
  const uint32_t* sp = scale_min + ((c0 * 64) >> group_shift) * n_pad + tile * 16 + lane / 4;
  const int s_step = ((S::kWPT * 64) >> group_shift) * n_pad;  // chunk u's group is u (kWPT 64 / G) on
#pragma unroll
  for (int u = 0; u < S::kCPW; ++u) {
    if (u >= valid) break;  // warp-uniform
    wv[u] = load_stream(w + u * S::kWPT * 32);
    const uint32_t* at = sp + u * s_step;
    sm[u][0][0] = __ldg(at);
    sm[u][0][1] = __ldg(at + 8);
    if constexpr (kG32) {
      sm[u][1][0] = __ldg(at + n_pad);
      sm[u][1][1] = __ldg(at + n_pad + 8);
    }
  }
}

// Stage x's slice [k0, k0 + KS) of M tokens into xs (rows kXStride apart), zeros past K,
// and the sums of the staged values over each span of min(G, 64) inputs (what mma_item
// folds at once) into xsum [KS/span][kTokens] (fp32). Thread t stages inputs 8t..8t+7 of
// every token (KS = 8 x threads), so a token's loads are spread over the whole CTA.
// kRmsNorm: xs = round(round(x + residual) * norm_w), and ssq_part [kTokens][kWarps] gets
// each warp's sum of squares of round(x + residual) (add_sumsq adds them up after the
// barrier); `write_sum` also stores x + residual to sum_out.
template <typename T, int MT, I4Stage kStage>
__device__ __forceinline__ void stage_x_slice(T* xs, float* xsum, float* ssq_part, const T* __restrict__ x,
                                              int64_t x_stride, int m_rows, int k, int k0, int group_shift,
                                              bool write_sum, const I4NormArgs<T>& norm) {
  using S = I4Shape<MT>;
  static_assert(S::kKS == 8 * S::kThreads, "one 16-byte vector a thread and token");
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, v = threadIdx.x, kk = k0 + 8 * v;
  const int span_shift = min(group_shift, 6);
  const int span_lanes = (1 << span_shift) / 8;  // lanes whose 8 values make up a span
#pragma unroll 4
  for (int m = 0; m < m_rows; ++m) {
    uint4 raw = make_uint4(0, 0, 0, 0);
    float ss = 0.f;
    if (kk < k) {
      raw = *reinterpret_cast<const uint4*>(x + m * x_stride + kk);
      if constexpr (kStage == I4Stage::kRmsNorm) {
        float f[8];
        unpack8<T>(raw, f);
        if (norm.residual != nullptr) {
          float r[8];
          unpack8<T>(*reinterpret_cast<const uint4*>(norm.residual + static_cast<int64_t>(m) * k + kk), r);
#pragma unroll
          for (int i = 0; i < 8; ++i) f[i] = round_to<T>(f[i] + r[i]);
          if (write_sum) *reinterpret_cast<uint4*>(norm.sum_out + static_cast<int64_t>(m) * k + kk) = pack8<T>(f);
        }
        float w[8];
        unpack8<T>(*reinterpret_cast<const uint4*>(norm.weight + kk), w);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
          ss += f[i] * f[i];
          f[i] *= w[i];
        }
        raw = pack8<T>(f);
      }
    }
    *reinterpret_cast<uint4*>(xs + m * S::kXStride + 8 * v) = raw;
    float staged[8];
    unpack8<T>(raw, staged);
    float gs = 0.f;
#pragma unroll
    for (int i = 0; i < 8; ++i) gs += staged[i];
#pragma unroll
    for (int off = 1; off < 8; off <<= 1)
      if (off < span_lanes) gs += __shfl_xor_sync(0xffffffffu, gs, off);
    if (lane % span_lanes == 0) xsum[((8 * v) >> span_shift) * S::kTokens + m] = gs;
    if constexpr (kStage == I4Stage::kRmsNorm) {
      ss = warp_sum(ss);
      if (lane == 0) ssq_part[m * S::kWarps + warp] = ss;
    }
  }
}

// sumsq[m] (+)= the staged slice's sum of squares of token m, its warps' parts added in
// order (a fixed order: the result does not depend on timing). After the staging barrier.
template <int MT>
__device__ __forceinline__ void add_sumsq(float* sumsq, const float* ssq_part, int m_rows, bool new_run) {
  using S = I4Shape<MT>;
  const int m = threadIdx.x;
  if (m < m_rows) {
    float ss = 0.f;
#pragma unroll
    for (int w = 0; w < S::kWarps; ++w) ss += ssq_part[m * S::kWarps + w];
    sumsq[m] = new_run ? ss : sumsq[m] + ss;
  }
}

// ld.shared.v2.f32 at a shared-space byte address.
__device__ __forceinline__ float2 lds_f2(uint32_t addr) {
  float2 v;
  asm volatile("ld.shared.v2.f32 {%0, %1}, [%2];\n" : "=f"(v.x), "=f"(v.y) : "r"(addr));
  return v;
}

// fin += s' * accg + m' * (the span's sums of x) for one span's MMA sums accg (rows g and
// g + 8 with the pairs sm_g, sm_g8; the lane's tokens' sums at xsum_at, token tile mt at
// + 32 mt bytes).
template <typename T, int MT>
__device__ __forceinline__ void fold_span(float (&fin)[MT][4], const float (&accg)[MT][4], uint32_t sm_g,
                                          uint32_t sm_g8, uint32_t xsum_at) {
  const float2 p0 = fold_pair<T>(sm_g, false), p8 = fold_pair<T>(sm_g8, true);
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    const float2 xg = lds_f2(xsum_at + 32 * mt);
    fin[mt][0] = fmaf(p0.x, accg[mt][0], fmaf(p0.y, xg.x, fin[mt][0]));
    fin[mt][1] = fmaf(p0.x, accg[mt][1], fmaf(p0.y, xg.y, fin[mt][1]));
    fin[mt][2] = fmaf(p8.x, accg[mt][2], fmaf(p8.y, xg.x, fin[mt][2]));
    fin[mt][3] = fmaf(p8.x, accg[mt][3], fmaf(p8.y, xg.y, fin[mt][3]));
  }
}

// fin[mt] += W(item) x^T over the staged slice, a span of min(G, 64) inputs at a time (a
// chunk; each half of it at G = 32): the MMAs sum v * x with raw_word's v, then fold_span.
// xs_at: this lane's ldmatrix address for the warp's first chunk (chunk u is u kWPT 128
// bytes on, k16 step w 32 bytes); xsum_at: its tokens' sums of that chunk's first span;
// chunks u < valid are inside K.
template <typename T, int MT, bool kG32>
__device__ __forceinline__ void mma_item(float (&fin)[MT][4], const uint4 (&wv)[I4Shape<MT>::kCPW],
                                         const uint32_t (&sm)[I4Shape<MT>::kCPW][2][2], uint32_t xs_at,
                                         uint32_t xsum_at, int valid) {
  using S = I4Shape<MT>;
  constexpr int kSpanBytes = S::kTokens * 4;  // one span's sums in xsum
  constexpr int kChunkSums = (kG32 ? 2 : 1) * S::kWPT * kSpanBytes;  // xsum bytes from chunk u to u + 1
#pragma unroll
  for (int u = 0; u < S::kCPW; ++u) {
    if (u >= valid) break;  // warp-uniform
    float accg[MT][4];
    uint32_t b4[4];
#pragma unroll
    for (int w = 0; w < 4; ++w) {  // k16 step w of the chunk
      if (w == 0 || (kG32 && w == 2)) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int e = 0; e < 4; ++e) accg[mt][e] = 0.f;
      }
      const uint32_t word = w == 0 ? wv[u].x : w == 1 ? wv[u].y : w == 2 ? wv[u].z : wv[u].w;
      uint32_t a[4];
      raw_word<T>(a, word);
      // B fragments (k16 x n8, tokens as columns) by ldmatrix.x4. MT 1: steps w and w + 1
      // (matrices 0-1 and 2-3); MT 2: step w of token tiles 0 and 1.
      const uint32_t at = xs_at + u * S::kWPT * 128;
      if constexpr (MT == 1) {
        if (w % 2 == 0) ldmatrix_x4(b4, at + 32 * w);
        mma_16816(accg[0], a, b4[2 * (w % 2)], b4[2 * (w % 2) + 1], T());
      } else {
        ldmatrix_x4(b4, at + 32 * w);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) mma_16816(accg[mt], a, b4[2 * mt], b4[2 * mt + 1], T());
      }
      if (w == 3 || (kG32 && w == 1))
        fold_span<T, MT>(fin, accg, sm[u][kG32 ? w / 2 : 0][0], sm[u][kG32 ? w / 2 : 0][1],
                         xsum_at + u * kChunkSums + (kG32 && w == 3 ? kSpanBytes : 0));
    }
  }
}

// x: [M, K] rows x_stride apart; W: qweight [N_pad/16, K_pad/64, 32] uint4 and scale_min
// [K_pad/G, N_pad] (s, m) pairs; units: row tiles (store) or row-tile pairs (paired);
// row_blocks * slices items; ws: fp32 [row blocks, slices, M, kRows + 1] (a run's partial
// sums at its first slice; the +1 column: sums of squares); counters: [row blocks] int32,
// zero at entry and at exit. Any 1-D grid (the host sizes it to the resident CTAs).
template <typename T, int MT, I4Stage kStage, I4Epilogue kEpi>
__device__ __forceinline__ void int4_gemm(T* __restrict__ out, const T* __restrict__ x,
                                          int64_t x_stride, const uint4* __restrict__ qweight,
                                          const uint32_t* __restrict__ scale_min,
                                          const T* __restrict__ bias, int m_rows, int n, int k,
                                          int n_pad, int chunks, int group_shift, int units,
                                          int half_tiles, int row_blocks, int slices,
                                          float* __restrict__ ws, int* __restrict__ counters,
                                          I4NormArgs<T> norm, RopeArgs<T> rope) {
  using S = I4Shape<MT>;
  constexpr int kRedFloats = S::kWPT * S::kRows * S::kTokens;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* xs = reinterpret_cast<T*>(smem_raw);                            // [kTokens][kXStride]
  float* xsum = reinterpret_cast<float*>(smem_raw + S::kXBytes);      // [KS/G][kTokens]
  float* red_base = reinterpret_cast<float*>(smem_raw + S::kXBytes + S::kXSumBytes);  // [2][kWPT][kRows][kTokens]
  __shared__ float sumsq[S::kTokens];
  __shared__ float ssq_part[S::kTokens * S::kWarps];
  __shared__ int is_last;
  __shared__ int tiles_smem[2][S::kRB];  // the W row tile of each local tile of the row block

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int items = row_blocks * slices;
  const int first = run_start(blockIdx.x, items, gridDim.x);
  const int last = run_start(blockIdx.x + 1, items, gridDim.x);
  constexpr int kCols = S::kRows + 1;

  pdl_trigger();
  uint4 wv[S::kCPW];
  uint32_t sm[S::kCPW][2][2];
  const bool g32 = group_shift == 5;
  if (first < last) {
    const int tile = tile_of<kEpi, S::kRB>(first / slices, warp / S::kWPT, units, half_tiles);
    const int c0 = first_chunk<MT>(first % slices, warp), valid = valid_chunks<MT>(first % slices, warp, chunks);
    if (g32) {
      load_item<MT, true>(wv, sm, qweight, scale_min, tile, c0, valid, chunks, n_pad, group_shift);
    } else {
      load_item<MT, false>(wv, sm, qweight, scale_min, tile, c0, valid, chunks, n_pad, group_shift);
    }
  }
  pdl_wait();
  if (first >= last) return;

  float fin[MT][4];
  auto zero_fin = [&]() {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int e = 0; e < 4; ++e) fin[mt][e] = 0.f;
  };
  zero_fin();
  int run = first;  // first item of the current row block's run
  stage_x_slice<T, MT, kStage>(xs, xsum, ssq_part, x, x_stride, m_rows, k, (first % slices) * S::kKS,
                               group_shift, first / slices == 0, norm);
  __syncthreads();
  if constexpr (kStage == I4Stage::kRmsNorm) add_sumsq<MT>(sumsq, ssq_part, m_rows, true);

  // One CTA barrier per row block: the sums go to one of two buffers (by flush parity), so
  // a warp may start the next item while others still run this one's epilogue; the next
  // flush's barrier orders every read of a buffer before its reuse two flushes later.
  // this lane's shared-memory addresses for the warp's first chunk of a slice (mma_item)
  const int mi = lane / 8;  // the ldmatrix matrix this lane addresses
  const int xs_row = MT == 1 ? lane % 8 : (mi / 2) * 8 + lane % 8;
  const int xs_col = (warp % S::kWPT) * 64 + (MT == 1 ? 16 * (mi / 2) : 0) + 8 * (mi % 2);
  const uint32_t xs_at = smem_addr(xs + xs_row * S::kXStride + xs_col);
  const uint32_t xsum_at64 = smem_addr(xsum + (warp % S::kWPT) * S::kTokens + 2 * (lane % 4));
  const uint32_t xsum_at32 = smem_addr(xsum + 2 * (warp % S::kWPT) * S::kTokens + 2 * (lane % 4));
  int parity = 0;
  int rb = first / slices, slice = first % slices;  // of `item`, kept in step below (no divisions)
  for (int item = first;; ++item) {
    const int next = item + 1;
    const bool rb_ends = slice + 1 == slices;
    const int next_rb = rb_ends ? rb + 1 : rb, next_slice = rb_ends ? 0 : slice + 1;
    // the next item's loads fly while this one is reduced and stored
    const int valid = valid_chunks<MT>(slice, warp, chunks);
    const int next_tile = tile_of<kEpi, S::kRB>(next_rb, warp / S::kWPT, units, half_tiles);
    const int next_c0 = first_chunk<MT>(next_slice, warp);
    const int next_valid = next < last ? valid_chunks<MT>(next_slice, warp, chunks) : 0;
    if (g32) {
      mma_item<T, MT, true>(fin, wv, sm, xs_at, xsum_at32, valid);
      load_item<MT, true>(wv, sm, qweight, scale_min, next_tile, next_c0, next_valid, chunks, n_pad, group_shift);
    } else {
      mma_item<T, MT, false>(fin, wv, sm, xs_at, xsum_at64, valid);
      load_item<MT, false>(wv, sm, qweight, scale_min, next_tile, next_c0, next_valid, chunks, n_pad, group_shift);
    }
    const bool flush = next == last || rb_ends;
    if (flush) {
      float* red = red_base + parity * kRedFloats;
      int* tiles = tiles_smem[parity];
      if (threadIdx.x < S::kRB) tiles[threadIdx.x] = tile_of<kEpi, S::kRB>(rb, threadIdx.x, units, half_tiles);
      const int lt = warp / S::kWPT;
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int row = lt * 16 + lane / 4 + 8 * (e / 2), token = mt * 8 + 2 * (lane % 4) + (e & 1);
          red[((warp % S::kWPT) * S::kRows + row) * S::kTokens + token] = fin[mt][e];
        }
      zero_fin();
      __syncthreads();
      int slots = S::kWPT;  // partial sums of a (row, token) in red, added in slot order
      bool whole = run == rb * slices && item == rb * slices + slices - 1;
      if (!whole) {
        // Publish this run's part; the CTA that completes the row block adds the parts up.
        constexpr int kOutputs = S::kRows * S::kTokens;
        for (int i = threadIdx.x; i < kOutputs; i += S::kThreads) {
          float v = red[i];
#pragma unroll
          for (int s = 1; s < S::kWPT; ++s) v += red[s * kOutputs + i];
          red[i] = v;
        }
        slots = 1;
        float* mine = ws + (static_cast<int64_t>(rb) * slices + run % slices) * m_rows * kCols;
        __syncthreads();
        for (int i = threadIdx.x; i < m_rows * S::kRows; i += S::kThreads) {
          const int token = i / S::kRows, row = i % S::kRows;
          mine[token * kCols + row] = red[row * S::kTokens + token];
        }
        if constexpr (kStage == I4Stage::kRmsNorm) {
          for (int m = threadIdx.x; m < m_rows; m += S::kThreads) mine[m * kCols + S::kRows] = sumsq[m];
        }
        __threadfence();
        __syncthreads();
        if (threadIdx.x == 0) {
          const int covered = item - run + 1;
          is_last = atomicAdd(counters + rb, covered) + covered == slices;
        }
        __syncthreads();
        whole = is_last;
        if (whole) {
          __threadfence();
          const float* parts = ws + static_cast<int64_t>(rb) * slices * m_rows * kCols;
          for (int i = threadIdx.x; i < m_rows * kCols; i += S::kThreads) {
            float v = 0.f;
            for (int s = 0; s < slices; ++s)
              if (starts_run(rb * slices + s, items, gridDim.x) || s == 0)
                v += __ldcg(parts + static_cast<int64_t>(s) * m_rows * kCols + i);
            const int token = i / kCols, col = i % kCols;
            if (col < S::kRows) {
              red[col * S::kTokens + token] = v;
            } else {
              sumsq[token] = v;
            }
          }
          if (threadIdx.x == 0) counters[rb] = 0;  // ready for the next launch
          __syncthreads();
        }
      }
      if (whole) {
        // Epilogue: row block rb's sums are red's slots added up.
        constexpr int kItems = kEpi == I4Epilogue::kStore ? S::kRows : S::kRows / 2;
        auto sum_at = [&](int row, int token) {
          float v = 0.f;
#pragma unroll
          for (int s = 0; s < S::kWPT; ++s)
            if (s < slots) v += red[(s * S::kRows + row) * S::kTokens + token];
          return v;
        };
        for (int i = threadIdx.x; i < m_rows * kItems; i += S::kThreads) {
          const int token = i / kItems, it = i % kItems;
          const int lt = it / 16, r = it % 16;
          const int tile = tiles[lt];
          if (tile < 0) continue;
          const float scale = kStage == I4Stage::kRmsNorm ? rsqrtf(sumsq[token] / k + norm.eps) : 1.f;
          const int row = tile * 16 + r;
          if constexpr (kEpi == I4Epilogue::kStore) {
            if (row >= n) continue;
            const float b = bias != nullptr ? to_float<T>(bias[row]) : 0.f;
            out[static_cast<int64_t>(token) * n + row] = from_float<T>(sum_at(it, token) * scale + b);
          } else {
            const int row2 = tiles[lt + S::kRB / 2] * 16 + r;
            const float b1 = bias != nullptr ? to_float<T>(bias[row]) : 0.f;
            const float b2 = bias != nullptr ? to_float<T>(bias[row2]) : 0.f;
            const float x1 = round_to<T>(sum_at(it, token) * scale + b1);
            const float x2 = round_to<T>(sum_at(it + S::kRows / 2, token) * scale + b2);
            const int p = rb * (S::kRB / 2) + lt;  // pair index; its output item is p * 16 + r
            if constexpr (kEpi == I4Epilogue::kSiluMul) {
              out[static_cast<int64_t>(token) * n + p * 16 + r] = from_float<T>(silu_mul<T>(x1, x2));
            } else {
              rope_store_pair<T>(out, rope, token, p * 16 + r, x1, x2);
            }
          }
        }
      }
      parity ^= 1;
      run = next;
    }
    if (next == last) break;
    if (next_slice != slice) {  // x's slice is all that staging depends on
      __syncthreads();  // every warp is done reading xs and sumsq
      stage_x_slice<T, MT, kStage>(xs, xsum, ssq_part, x, x_stride, m_rows, k, next_slice * S::kKS, group_shift,
                                   next_rb == 0, norm);
      __syncthreads();
      if constexpr (kStage == I4Stage::kRmsNorm) add_sumsq<MT>(sumsq, ssq_part, m_rows, flush);
    }
    rb = next_rb;
    slice = next_slice;
  }
}

// out[n, k] = W[n, k] (the reference's dequantize, for the large-M path: cuBLAS on it). A
// warp dequantizes one (tile, chunk) of 16 x 64 values into shared memory, then writes its
// rows with 16-byte stores; grid-stride over the units.
template <typename T>
__device__ __forceinline__ void int4_dequant(T* __restrict__ out, const uint4* __restrict__ qweight,
                                             const uint32_t* __restrict__ scale_min, int n, int k,
                                             int n_pad, int chunks, int group_shift, int64_t units) {
  constexpr int kStride = 64 + 8;  // elements a row of the staging tile
  __shared__ __align__(16) T tile_smem[8][16 * kStride];
  pdl_enter();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  T* stage = tile_smem[warp];
  for (int64_t unit = blockIdx.x * 8LL + warp; unit < units; unit += gridDim.x * 8LL) {
    const int c = static_cast<int>(unit % chunks), tile = static_cast<int>(unit / chunks);
    const uint4 v = qweight[unit * 32 + lane];
    const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      const int64_t at = static_cast<int64_t>((c * 64 + 16 * w) >> group_shift) * n_pad + tile * 16 + g;
      uint32_t a[4];
      dequant_word<T>(a, words[w], scale_min[at], scale_min[at + 8]);
#pragma unroll
      for (int j = 0; j < 4; ++j)
        *reinterpret_cast<uint32_t*>(stage + (g + 8 * (j & 1)) * kStride + 16 * w + 2 * t + 8 * (j >> 1)) = a[j];
    }
    __syncwarp();
    // lane: row lane / 2, inputs 32 (lane % 2) .. + 32 of the chunk (K % 32 == 0: all or none)
    const int row = tile * 16 + lane / 2, col = c * 64 + 32 * (lane % 2);
    if (row < n && col < k) {
      const uint4* src = reinterpret_cast<const uint4*>(stage + (lane / 2) * kStride + 32 * (lane % 2));
      uint4* dst = reinterpret_cast<uint4*>(out + static_cast<int64_t>(row) * k + col);
#pragma unroll
      for (int i = 0; i < 4; ++i) dst[i] = src[i];
    }
    __syncwarp();
  }
}

}  // namespace lmd

// Requirements (checked by native/int4_gemm.py): K % 32 == 0, x 16-byte aligned rows
// (x_stride % 8 == 0), M <= 8 MT, block I4Shape<MT>::kThreads; dynamic shared memory
// kXBytes + kXSumBytes + kRedBytes (two sum buffers); any 1-D grid (persistent: the resident CTAs, at most the items).
#define LMD_I4_ARGS(T)                                                                            \
  T *out, const T *x, int64_t x_stride, const uint4 *qweight, const uint32_t *scale_min,          \
      const T *bias, int m_rows, int n, int k, int n_pad, int chunks, int group_shift, int units, \
      int half_tiles, int row_blocks, int slices, float *ws, int *counters
#define LMD_I4_PASS out, x, x_stride, qweight, scale_min, bias, m_rows, n, k, n_pad, chunks, \
                    group_shift, units, half_tiles, row_blocks, slices, ws, counters
#define LMD_I4_BOUNDS(MT) __launch_bounds__(lmd::I4Shape<MT>::kThreads, 1)
#define LMD_I4_KERNELS(T, SUFFIX, MT)                                                             \
  extern "C" __global__ void LMD_I4_BOUNDS(MT) int4_gemm_##SUFFIX##_m##MT(LMD_I4_ARGS(T)) {       \
    lmd::int4_gemm<T, MT, lmd::I4Stage::kCopy, lmd::I4Epilogue::kStore>(LMD_I4_PASS, {}, {});    \
  }                                                                                               \
  extern "C" __global__ void LMD_I4_BOUNDS(MT) rms_norm_int4_gemm_##SUFFIX##_m##MT(               \
      LMD_I4_ARGS(T), T *sum_out, const T *residual, const T *norm_w, float eps) {               \
    lmd::int4_gemm<T, MT, lmd::I4Stage::kRmsNorm, lmd::I4Epilogue::kStore>(                       \
        LMD_I4_PASS, {residual, sum_out, norm_w, eps}, {});                                       \
  }                                                                                               \
  extern "C" __global__ void LMD_I4_BOUNDS(MT) rms_norm_gated_int4_gemm_##SUFFIX##_m##MT(         \
      LMD_I4_ARGS(T), T *sum_out, const T *residual, const T *norm_w, float eps) {               \
    lmd::int4_gemm<T, MT, lmd::I4Stage::kRmsNorm, lmd::I4Epilogue::kSiluMul>(                     \
        LMD_I4_PASS, {residual, sum_out, norm_w, eps}, {});                                       \
  }                                                                                               \
  extern "C" __global__ void LMD_I4_BOUNDS(MT) rms_norm_rope_int4_gemm_##SUFFIX##_m##MT(          \
      LMD_I4_ARGS(T), T *sum_out, const T *residual, const T *norm_w, float eps, T *k_cache,     \
      T *v_cache, const int64_t *positions, const int64_t *slots, const float *cos_sin,          \
      int num_q_heads, int num_kv_heads, int head_dim) {                                          \
    lmd::int4_gemm<T, MT, lmd::I4Stage::kRmsNorm, lmd::I4Epilogue::kRope>(                        \
        LMD_I4_PASS, {residual, sum_out, norm_w, eps},                                            \
        {k_cache, v_cache, positions, slots, cos_sin, num_q_heads, num_kv_heads, head_dim / 2});  \
  }

#define LMD_I4_DTYPE(T, SUFFIX)                                                                   \
  LMD_I4_KERNELS(T, SUFFIX, 1)                                                                    \
  LMD_I4_KERNELS(T, SUFFIX, 2)                                                                    \
  extern "C" __global__ void __launch_bounds__(256) int4_dequant_##SUFFIX(                        \
      T *out, const uint4 *qweight, const uint32_t *scale_min, int n, int k, int n_pad,          \
      int chunks, int group_shift, int64_t units) {                                               \
    lmd::int4_dequant<T>(out, qweight, scale_min, n, k, n_pad, chunks, group_shift, units);       \
  }

LMD_I4_DTYPE(__half, f16)
LMD_I4_DTYPE(__nv_bfloat16, bf16)
