// GEMV for a few rows: out[m, n] = sum_k x[m, k] * W[n, k] (+ bias[n]), m < M <= 2.
// Batch-1..2 decode is bound by reading W once, so everything serves the W stream:
//  - x (M x K, as T) is staged once per CTA in dynamic shared memory;
//  - each warp owns one output row n at a time and streams W[n, :] with 16-byte
//    non-coherent loads that skip L1; lane l reads vector (base + 32 u + l), so each
//    warp instruction covers 512 contiguous bytes, and kGemvUnroll loads per lane are
//    in flight before any is used;
//  - the first chunk of a warp's next row is loaded before the warp-shuffle reduction
//    of the current one (and the very first before x is staged), so HBM never waits
//    on the reduction or on the staging;
//  - the grid is sized by the host to whole rounds of rows over the resident CTAs
//    (warp w of CTA b takes rows b * 8 + w, then + gridDim.x * 8, ...).
// Accumulation is fp32 per row in a fixed order that does not depend on the grid, so a
// row's result is the same whichever CTA computes it; one rounding to T at the end,
// after the bias is added.
// rms_norm_gemv normalises x (after the residual add) while staging it, with norm.cu's
// arithmetic; rms_norm_gated_gemv also pairs gate row r with up row N + r of a [gate | up]
// weight in one warp and writes silu(gate) * up, so the MLP's activation costs no launch;
// rms_norm_rope_gemv pairs rows i and i + D/2 of each head of a [q | k | v] weight, rotates
// q and k (rope.cu's arithmetic) and writes q out and k, v into the paged cache, so rope and
// the cache write cost no launch. All equal the unfused kernels bit for bit (norm: when
// K >= 1800, see stage_rms_norm).
#include "common.cuh"
#include "rope_store.cuh"

namespace lmd {

constexpr int kGemvWarps = 8;                  // rows in flight per CTA (one per warp)
constexpr int kGemvThreads = kGemvWarps * 32;  // 256
constexpr int kGemvUnroll = 8;                 // 16-byte W loads in flight per lane
constexpr int kGemvChunk = 32 * kGemvUnroll;   // vectors of a row one warp loads at once
// Resident CTAs per SM the register budget is sized for (65536 / (256 * CTAs) registers a
// thread): 4 (64), the most that does not spill; 4 CTAs keep 32 warps * 32 lanes * 8 * 16
// bytes = 128 KiB of loads in flight per SM, several times what HBM needs.
constexpr int kGemvMinCtas = 4;
// The gated GEMV keeps the gate sums live across the up row: 3 CTAs (80 registers) at M = 2.
constexpr int gemv_gated_min_ctas(int m) { return m == 1 ? 4 : 3; }

// Vectors [base, base + kGemvChunk) of one W row into w. kFull: all of them lie in the
// row (the common case, no bounds checks); else lanes past the row get zeros.
template <bool kFull>
__device__ __forceinline__ void load_w_chunk(uint4 (&w)[kGemvUnroll], const uint4* row, int base,
                                             int kv, int lane) {
#pragma unroll
  for (int u = 0; u < kGemvUnroll; ++u) {
    const int v = base + u * 32 + lane;
    w[u] = kFull || v < kv ? load_stream(row + v) : make_uint4(0, 0, 0, 0);
  }
}

__device__ __forceinline__ void load_w_chunk(uint4 (&w)[kGemvUnroll], const uint4* row, int base,
                                             int kv, int lane) {
  if (base + kGemvChunk <= kv) {  // warp-uniform
    load_w_chunk<true>(w, row, base, kv, lane);
  } else {
    load_w_chunk<false>(w, row, base, kv, lane);
  }
}

// acc[m] += dot(W chunk, x[m] chunk), x[m] read from shared memory (one 16-byte load each).
template <typename T, int M, bool kFull>
__device__ __forceinline__ void dot_chunk(float (&acc)[M], const uint4 (&w)[kGemvUnroll],
                                          const uint4* xs, int base, int kv, int lane) {
#pragma unroll
  for (int u = 0; u < kGemvUnroll; ++u) {
    const int v = base + u * 32 + lane;
    if (kFull || v < kv) {
      float wf[8];
      unpack8<T>(w[u], wf);
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const uint4 xr = xs[m * kv + v];
        float xf[8];
        unpack8<T>(xr, xf);
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[m] = fmaf(wf[i], xf[i], acc[m]);
      }
    }
  }
}

template <typename T, int M>
__device__ __forceinline__ void dot_chunk(float (&acc)[M], const uint4 (&w)[kGemvUnroll],
                                          const uint4* xs, int base, int kv, int lane) {
  if (base + kGemvChunk <= kv) {  // warp-uniform
    dot_chunk<T, M, true>(acc, w, xs, base, kv, lane);
  } else {
    dot_chunk<T, M, false>(acc, w, xs, base, kv, lane);
  }
}

// How a CTA fills the shared-memory x it multiplies W with.
enum class Stage {
  kCopy,     // x as given
  kRmsNorm,  // rms_norm(x) * norm_w, or rms_norm(x + residual) * norm_w, rounded as norm.cu
};

// RMSNorm of M rows while staging them, with norm.cu's arithmetic: (x + residual) rounded
// to T, fp32 sum of squares in the same thread/warp/block order (at 256 threads), x *
// rsqrt rounded to T, times the weight. Every CTA normalises the rows itself (they are
// a few KB, read from L2); CTA 0 also writes x + residual to sum_out.
template <typename T, int M>
__device__ __forceinline__ void stage_rms_norm(uint4* xs, const T* __restrict__ x,
                                               const T* __restrict__ residual,
                                               T* __restrict__ sum_out,
                                               const T* __restrict__ norm_w, int kv,
                                               int64_t x_stride, float eps) {
  __shared__ float partials[M][kGemvWarps];
  float sumsq[M];
#pragma unroll
  for (int m = 0; m < M; ++m) {
    sumsq[m] = 0.f;
    const uint4* src = reinterpret_cast<const uint4*>(x + m * x_stride);
    const uint4* res = reinterpret_cast<const uint4*>(residual + m * static_cast<int64_t>(kv) * 8);
    uint4* sum = reinterpret_cast<uint4*>(sum_out + m * static_cast<int64_t>(kv) * 8);
#pragma unroll 1
    for (int c = threadIdx.x; c < kv; c += kGemvThreads) {
      float v[8];
      unpack8<T>(src[c], v);
      if (residual != nullptr) {
        float r[8];
        unpack8<T>(res[c], r);
#pragma unroll
        for (int i = 0; i < 8; ++i) v[i] = round_to<T>(v[i] + r[i]);
        const uint4 packed = pack8<T>(v);
        if (blockIdx.x == 0) sum[c] = packed;
        xs[m * kv + c] = packed;
      } else {
        xs[m * kv + c] = src[c];
      }
#pragma unroll
      for (int i = 0; i < 8; ++i) sumsq[m] += v[i] * v[i];
    }
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int m = 0; m < M; ++m) {
    const float s = warp_sum(sumsq[m]);
    if (lane == 0) partials[m][warp] = s;
  }
  __syncthreads();
  const float hidden = static_cast<float>(kv * 8);
  const uint4* wv = reinterpret_cast<const uint4*>(norm_w);
#pragma unroll
  for (int m = 0; m < M; ++m) {
    const float total = warp_sum(lane < kGemvWarps ? partials[m][lane] : 0.f);
    const float inv_rms = rsqrtf(total / hidden + eps);
#pragma unroll 1
    for (int c = threadIdx.x; c < kv; c += kGemvThreads) {
      float v[8], w[8], o[8];
      unpack8<T>(xs[m * kv + c], v);
      unpack8<T>(wv[c], w);
#pragma unroll
      for (int i = 0; i < 8; ++i) o[i] = w[i] * round_to<T>(v[i] * inv_rms);
      xs[m * kv + c] = pack8<T>(o);
    }
  }
}

// xs[m * kv + c] <- x[m, 8c .. 8c + 8)
template <typename T, int M>
__device__ __forceinline__ void stage_x(uint4* xs, const T* __restrict__ x, int kv,
                                        int64_t x_stride) {
#pragma unroll
  for (int m = 0; m < M; ++m) {
    const uint4* src = reinterpret_cast<const uint4*>(x + m * x_stride);
#pragma unroll 4
    for (int c = threadIdx.x; c < kv; c += kGemvThreads) xs[m * kv + c] = src[c];
  }
}

// Inputs of the kRmsNorm stage (unused otherwise).
template <typename T>
struct NormArgs {
  const T* residual;  // [M, K] contiguous, or null (plain rms_norm)
  T* sum_out;         // [M, K]: x + residual (written by CTA 0; unused without residual)
  const T* weight;    // [K]
  float eps;
};

// What a warp does with its row sums.
enum class Epilogue {
  kStore,    // out[m, row] = sum (+ bias)
  kSiluMul,  // rows r and N + r of a [gate | up] weight: out[m, r] = silu(gate) * up
  kRope,     // rows i and i + D/2 of a [q | k | v] head: rotate (q, k), store q / the cache
};

// kSiluMul: W is a gate/up projection [2N, K] ([gate | up]); the warp that computes gate
// row r also computes up row N + r and writes silu(gate) * up (each rounded to T first,
// as the unfused GEMV output would be, then silu_and_mul's own formula): out is [M, N].
// kRope: W is a qkv projection [(Hq + 2 Hkv) D, K]; item r of the n = rows / 2 is the pair
// (i, i + D/2) of head r / (D/2), and out is q [M, Hq, D] (see rope_store_pair).
template <typename T, int M, Stage kStage, Epilogue kEpi>
__device__ __forceinline__ void gemv(T* __restrict__ out, const T* __restrict__ x,
                                     const T* __restrict__ w, const T* __restrict__ bias, int n,
                                     int k, int64_t x_stride, NormArgs<T> norm = {},
                                     RopeArgs<T> rope = {}) {
  // x: [M, K] rows x_stride apart (silu: gate_up [M, 2K]); w: [N, K] (paired: [2N, K]);
  // bias: like w's rows, or null; out: [M, N]. Shared memory: M * K elements of T.
  extern __shared__ uint4 xs[];  // [M][K / 8]
  constexpr bool kPaired = kEpi != Epilogue::kStore;
  constexpr int kHalves = kPaired ? 2 : 1;  // weight rows per output element
  // weight row of half `half` of item `item`
  auto row_of = [&](int item, int half) {
    if constexpr (kEpi == Epilogue::kRope) {
      return (item / rope.half_dim) * 2 * rope.half_dim + item % rope.half_dim + half * rope.half_dim;
    } else {
      return item + half * n;
    }
  };
  const int kv = k / 8;
  const int lane = threadIdx.x % 32;
  const int item_step = gridDim.x * kGemvWarps;
  const uint4* wv = reinterpret_cast<const uint4*>(w);
  int item = blockIdx.x * kGemvWarps + threadIdx.x / 32;

  pdl_trigger();
  uint4 wbuf[kGemvUnroll];  // invariant at the top of each row: chunk 0 of that row
  if (item < n) load_w_chunk(wbuf, wv + static_cast<size_t>(row_of(item, 0)) * kv, 0, kv, lane);
  pdl_wait();  // W is constant: its first chunk streams in while the predecessor finishes
  if constexpr (kStage == Stage::kRmsNorm) {
    stage_rms_norm<T, M>(xs, x, norm.residual, norm.sum_out, norm.weight, kv, x_stride, norm.eps);
  } else {
    stage_x<T, M>(xs, x, kv, x_stride);
  }
  __syncthreads();

  for (; item < n; item += item_step) {
    float first[M];  // paired epilogues: the first row's sums, rounded to T
#pragma unroll
    for (int half = 0; half < kHalves; ++half) {
      const int row = row_of(item, half);
      const uint4* wrow = wv + static_cast<size_t>(row) * kv;
      float acc[M];
#pragma unroll
      for (int m = 0; m < M; ++m) acc[m] = 0.f;
      for (int base = 0;;) {
        dot_chunk<T, M>(acc, wbuf, xs, base, kv, lane);
        base += kGemvChunk;
        if (base >= kv) break;
        load_w_chunk(wbuf, wrow, base, kv, lane);
      }
      // the next row this warp streams: this item's second row, or the next item's first
      if constexpr (kEpi == Epilogue::kRope) {
        const int next_item = half == 0 ? item : item + item_step;
        if (next_item < n)
          load_w_chunk(wbuf, wv + static_cast<size_t>(row_of(next_item, 1 - half)) * kv, 0, kv, lane);
      } else {  // row_of is item + half * n
        const int next = half + 1 < kHalves ? item + n : item + item_step;
        if (next < kHalves * n && (half + 1 < kHalves || next < n))
          load_w_chunk(wbuf, wv + static_cast<size_t>(next) * kv, 0, kv, lane);
      }
      const float b = bias != nullptr ? to_float<T>(bias[row]) : 0.f;
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const float s = warp_sum(acc[m]) + b;  // identical in every lane (xor butterfly)
        if (kPaired && half == 0) {
          first[m] = round_to<T>(s);
        } else if (lane == m) {
          if constexpr (kEpi == Epilogue::kRope) {
            rope_store_pair<T>(out, rope, m, item, first[m], round_to<T>(s));
          } else {
            out[static_cast<size_t>(m) * n + item] = kEpi == Epilogue::kSiluMul
                                                         ? from_float<T>(silu_mul<T>(first[m], round_to<T>(s)))
                                                         : from_float<T>(s);
          }
        }
      }
    }
  }
}

}  // namespace lmd

// K % 8 == 0; x, w, out 16-byte aligned, x_stride % 8 == 0; block 256 threads; dynamic
// shared memory M * K * sizeof(T); any grid >= 1 (the host picks whole rounds of rows).
#define LMD_GEMV_KERNEL(T, SUFFIX, M)                                                          \
  extern "C" __global__ void __launch_bounds__(lmd::kGemvThreads, lmd::kGemvMinCtas)        \
      gemv_##SUFFIX##_m##M(T* out, const T* x, const T* w, const T* bias, int n, int k,       \
                           int64_t x_stride) {                                                 \
    lmd::gemv<T, M, lmd::Stage::kCopy, lmd::Epilogue::kStore>(out, x, w, bias, n, k, x_stride); \
  }                                                                                            \
  extern "C" __global__ void __launch_bounds__(lmd::kGemvThreads, lmd::kGemvMinCtas)        \
      rms_norm_gemv_##SUFFIX##_m##M(T* out, T* sum_out, const T* x, const T* residual,         \
                                    const T* norm_w, float eps, const T* w, const T* bias,     \
                                    int n, int k, int64_t x_stride) {                          \
    lmd::gemv<T, M, lmd::Stage::kRmsNorm, lmd::Epilogue::kStore>(                              \
        out, x, w, bias, n, k, x_stride, {residual, sum_out, norm_w, eps});                    \
  }                                                                                            \
  extern "C" __global__ void __launch_bounds__(lmd::kGemvThreads, lmd::gemv_gated_min_ctas(M)) \
      rms_norm_gated_gemv_##SUFFIX##_m##M(T* out, T* sum_out, const T* x, const T* residual,   \
                                          const T* norm_w, float eps, const T* w,              \
                                          const T* bias, int n, int k, int64_t x_stride) {     \
    lmd::gemv<T, M, lmd::Stage::kRmsNorm, lmd::Epilogue::kSiluMul>(                            \
        out, x, w, bias, n, k, x_stride, {residual, sum_out, norm_w, eps});                    \
  }                                                                                            \
  /* n: pairs = (Hq + 2 Hkv) * D / 2; out: q [M, Hq, D]; D % 2 == 0 */                         \
  extern "C" __global__ void __launch_bounds__(lmd::kGemvThreads, lmd::gemv_gated_min_ctas(M)) \
      rms_norm_rope_gemv_##SUFFIX##_m##M(                                                      \
          T* out, T* sum_out, const T* x, const T* residual, const T* norm_w, float eps,       \
          const T* w, const T* bias, int n, int k, int64_t x_stride, T* k_cache, T* v_cache,   \
          const int64_t* positions, const int64_t* slots, const float* cos_sin,                \
          int num_q_heads, int num_kv_heads, int head_dim) {                                   \
    lmd::gemv<T, M, lmd::Stage::kRmsNorm, lmd::Epilogue::kRope>(                               \
        out, x, w, bias, n, k, x_stride, {residual, sum_out, norm_w, eps},                     \
        {k_cache, v_cache, positions, slots, cos_sin, num_q_heads, num_kv_heads, head_dim / 2}); \
  }

// More rows lost to cuBLAS (a 4-row build, tried on an H200), so only M = 1, 2 are built.
#define LMD_GEMV_ROWS(T, SUFFIX) \
  LMD_GEMV_KERNEL(T, SUFFIX, 1)  \
  LMD_GEMV_KERNEL(T, SUFFIX, 2)

LMD_GEMV_ROWS(__half, f16)
LMD_GEMV_ROWS(__nv_bfloat16, bf16)
