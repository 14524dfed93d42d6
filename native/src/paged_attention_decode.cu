// Decode attention (one new token per sequence) over a paged KV cache.
//
// Grid (B, Hq / G, S): one CTA per (sequence, group of G query heads sharing one kv
// head, split of the context). Each kv row is read once per CTA and used by all G
// heads. A CTA walks its split in chunks of kChunk tokens:
//   K pass: D/8 lanes share one token (16-byte loads, the next step's loads in flight
//           while this one computes), G dot products reduced across the lanes in one
//           butterfly, logits of all G heads -> smem
//   softmax stats of the chunk, merged into the running (max, sum) per head
//   V pass: acc[g][8 d-values] += p * v, rescaled when the running max moves
// With S > 1 each CTA writes its normalised partial output and (max, sum) in fp32
// and paged_decode_reduce merges the splits; with S == 1 it writes `out` directly.
// Logits are kept in the log2 domain (q is pre-scaled by scale * log2(e)).
#include "paged_cache.cuh"

namespace lmd {

constexpr int kDecodeWarps = 4;
constexpr int kDecodeChunk = 512;     // tokens whose logits sit in smem at once
constexpr int kDecodeMinSplit = 64;  // never split a context finer than this (small batches want many splits)

// Tokens handled by each of `num_splits` CTAs of a sequence (a multiple of 64).
__device__ __forceinline__ int decode_split_len(int kv_len, int num_splits) {
  int len = (kv_len + num_splits - 1) / num_splits;
  len = max(len, kDecodeMinSplit);
  return (len + 63) & ~63;
}

template <typename T, int D, int GMAX, int U, bool LOWREG>
__device__ __forceinline__ void paged_decode(T* __restrict__ out, float* __restrict__ part_o,
                                             float* __restrict__ part_ml,
                                             const T* __restrict__ q, const T* __restrict__ k_cache,
                                             const T* __restrict__ v_cache,
                                             const int* __restrict__ kv_lens,
                                             const int* __restrict__ block_tables,
                                             int bt_stride, int64_t q_stride_t, int64_t q_stride_h,
                                             int num_q_heads, int num_kv_heads, int group_heads,
                                             int block_size, int block_shift, float scale_log2) {
  // q: [B, Hq, D] (strided); caches: [num_blocks, block_size, Hkv, D]; out: [B, Hq, D];
  // part_o: [B, Hq, S, D] fp32; part_ml: [B, Hq, S, 2] fp32 (running max in log2 units, sum)
  constexpr int kThreads = kDecodeWarps * 32;
  constexpr int kLanesPerToken = D / 8;
  constexpr int kTokensPerWarp = 32 / kLanesPerToken;
  constexpr int kTokensPerIter = kDecodeWarps * kTokensPerWarp;
  constexpr int kStep = kTokensPerIter * U;
  // LOWREG parks the accumulators in smem between chunks and reloads q per chunk, so
  // q (K pass) and acc (V pass) never hold registers at the same time.
  constexpr int kChunk = (LOWREG && GMAX == 8) ? kDecodeChunk / 2 : kDecodeChunk;
  constexpr int kAccFloats = LOWREG ? GMAX * 8 * kThreads : 1;
  constexpr int kRedFloats = kDecodeWarps * GMAX * D;
  static_assert(kRedFloats <= (LOWREG ? kAccFloats : GMAX * kChunk), "final reduction scratch");
  __shared__ float s_logits[GMAX * kChunk];  // [GMAX, chunk]
  __shared__ float s_acc[kAccFloats];        // [GMAX * 8, threads]
  __shared__ float s_chunk_max[GMAX], s_chunk_sum[GMAX], s_l[GMAX];

  const int b = blockIdx.x, split = blockIdx.z, num_splits = gridDim.z;
  const int G = group_heads;
  const int h0 = blockIdx.y * G;
  const int kv_head = h0 / (num_q_heads / num_kv_heads);
  const int kv_len = kv_lens[b];
  const int split_len = decode_split_len(kv_len, num_splits);
  const int start = split * split_len;
  if (start >= kv_len) return;  // idle split: the reduce kernel skips it
  const int end = min(kv_len, start + split_len);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int slot = warp * kTokensPerWarp + lane / kLanesPerToken;  // token slot in an iteration
  const int lane_in_token = lane % kLanesPerToken;
  const int dpos = lane_in_token * 8;
  const int* bt = block_tables + static_cast<int64_t>(b) * bt_stride;
  const int64_t row_elems = static_cast<int64_t>(num_kv_heads) * D;
  const int kv_row = kv_head * D + dpos;

  float qf[GMAX][8];  // this lane's 8 d-values of each head's query, pre-scaled
  auto load_q = [&]() {
#pragma unroll
    for (int g = 0; g < GMAX; ++g) {
      if (g < G) {
        const uint4* qp = reinterpret_cast<const uint4*>(q + b * q_stride_t + (h0 + g) * q_stride_h + dpos);
        // asm volatile: a per-chunk reload must not be hoisted out of the chunk loop
        const uint4 raw = LOWREG ? load_16_volatile(qp) : *qp;
        unpack8<T>(raw, qf[g]);
#pragma unroll
        for (int i = 0; i < 8; ++i) qf[g][i] *= scale_log2;
      } else {
#pragma unroll
        for (int i = 0; i < 8; ++i) qf[g][i] = 0.f;
      }
    }
  };
  float acc[GMAX][8];
  float run_max[GMAX], run_sum[GMAX];
#pragma unroll
  for (int g = 0; g < GMAX; ++g) {
    run_max[g] = -INFINITY;
    run_sum[g] = 0.f;
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[g][i] = 0.f;
  }
  if (!LOWREG) load_q();

  // Loads of U tokens per thread (16 bytes each) for step `it` of a pass over the chunk.
  auto load_step = [&](uint4 (&dst)[U], const T* __restrict__ cache, int c0, int n, int it) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int tt = it + u * kTokensPerIter + slot;
      if (tt < n) {
        const int64_t tok = token_row(bt, c0 + tt, block_size, block_shift);
        dst[u] = *reinterpret_cast<const uint4*>(cache + tok * row_elems + kv_row);
      } else {
        dst[u] = make_uint4(0, 0, 0, 0);
      }
    }
  };
  // logits[g][tt] = q_g . k_tt for the U tokens of one step
  auto logits_step = [&](const uint4 (&kraw)[U], int n, int it) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int tt = it + u * kTokensPerIter + slot;
      float kf[8];
      unpack8<T>(kraw[u], kf);
      float s[GMAX];
#pragma unroll
      for (int g = 0; g < GMAX; ++g) {
        s[g] = 0.f;
#pragma unroll
        for (int i = 0; i < 8; ++i) s[g] = fmaf(qf[g][i], kf[i], s[g]);
      }
      const ButterflyResult r = butterfly_sum<GMAX, kLanesPerToken>(s, lane_in_token);
      if (tt < n && r.writer && r.head < G) s_logits[r.head * kChunk + tt] = r.value;
    }
  };
  // acc[g] += p[g][tt] * v_tt for the U tokens of one step
  auto values_step = [&](const uint4 (&vraw)[U], int n, int it) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int tt = it + u * kTokensPerIter + slot;
      if (tt < n) {
        float vf[8];
        unpack8<T>(vraw[u], vf);
#pragma unroll
        for (int g = 0; g < GMAX; ++g) {
          if (g < G) {
            const float p = s_logits[g * kChunk + tt];
#pragma unroll
            for (int i = 0; i < 8; ++i) acc[g][i] = fmaf(p, vf[i], acc[g][i]);
          }
        }
      }
    }
  };

  uint4 cur[U], nxt[U];
  for (int c0 = start; c0 < end; c0 += kChunk) {
    const int n = min(kChunk, end - c0);

    // K pass; the next step's loads are in flight while this step computes
    if (LOWREG) load_q();
    load_step(cur, k_cache, c0, n, 0);
    for (int it = 0; it < n; it += kStep) {
      if (it + kStep < n) load_step(nxt, k_cache, c0, n, it + kStep);
      logits_step(cur, n, it);
#pragma unroll
      for (int u = 0; u < U; ++u) cur[u] = nxt[u];
    }
    load_step(cur, v_cache, c0, n, 0);  // V's first loads overlap the softmax
    __syncthreads();

    // chunk softmax: warp w owns heads g = w, w + warps, ...; p = exp2(logit - new max)
#pragma unroll
    for (int g = 0; g < GMAX; ++g) {
      if (g < G && g % kDecodeWarps == warp) {
        float* row = s_logits + g * kChunk;
        float mx = -INFINITY;
        for (int t = lane; t < n; t += 32) mx = fmaxf(mx, row[t]);
        mx = warp_max(mx);
        const float new_max = fmaxf(run_max[g], mx);
        float sum = 0.f;
        for (int t = lane; t < n; t += 32) {
          const float p = exp2f(row[t] - new_max);
          row[t] = p;
          sum += p;
        }
        sum = warp_sum(sum);
        if (lane == 0) {
          s_chunk_max[g] = mx;
          s_chunk_sum[g] = sum;
        }
      }
    }
    __syncthreads();
#pragma unroll
    for (int g = 0; g < GMAX; ++g) {
      const float new_max = fmaxf(run_max[g], s_chunk_max[g]);
      const float alpha = exp2f(run_max[g] - new_max);  // 0 on the first chunk
      if (g < G) {
        run_sum[g] = run_sum[g] * alpha + s_chunk_sum[g];
        run_max[g] = new_max;
      }
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        if (LOWREG) acc[g][i] = c0 == start ? 0.f : s_acc[(g * 8 + i) * kThreads + threadIdx.x];
        acc[g][i] *= alpha;
      }
    }

    // V pass
    for (int it = 0; it < n; it += kStep) {
      if (it + kStep < n) load_step(nxt, v_cache, c0, n, it + kStep);
      values_step(cur, n, it);
#pragma unroll
      for (int u = 0; u < U; ++u) cur[u] = nxt[u];
    }
    if (LOWREG) {
#pragma unroll
      for (int g = 0; g < GMAX; ++g)
#pragma unroll
        for (int i = 0; i < 8; ++i) s_acc[(g * 8 + i) * kThreads + threadIdx.x] = acc[g][i];
    }
    __syncthreads();  // the next chunk overwrites s_logits
  }
  if (LOWREG) {
#pragma unroll
    for (int g = 0; g < GMAX; ++g)
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[g][i] = s_acc[(g * 8 + i) * kThreads + threadIdx.x];
    __syncthreads();  // s_acc becomes the reduction scratch below
  }

  // Sum the token slots of each warp, then the warps, through smem.
#pragma unroll
  for (int g = 0; g < GMAX; ++g)
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int off = kLanesPerToken; off < 32; off <<= 1)
        acc[g][i] += __shfl_xor_sync(0xffffffffu, acc[g][i], off);
  float* red = LOWREG ? s_acc : s_logits;  // [warps, GMAX, D]
  if (lane < kLanesPerToken) {
#pragma unroll
    for (int g = 0; g < GMAX; ++g)
      if (g < G) {
        float* dst = red + (warp * GMAX + g) * D + dpos;
#pragma unroll
        for (int i = 0; i < 8; ++i) dst[i] = acc[g][i];
      }
  }
  if (threadIdx.x == 0) {
#pragma unroll
    for (int g = 0; g < GMAX; ++g) {
      s_l[g] = run_sum[g];
      s_chunk_max[g] = run_max[g];
    }
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < G * D; idx += kThreads) {
    const int g = idx / D, d = idx % D;
    float v = 0.f;
#pragma unroll
    for (int w = 0; w < kDecodeWarps; ++w) v += red[(w * GMAX + g) * D + d];
    v /= s_l[g];
    const int64_t bh = static_cast<int64_t>(b) * num_q_heads + h0 + g;
    if (num_splits == 1) {
      out[bh * D + d] = from_float<T>(v);
    } else {
      part_o[(bh * num_splits + split) * D + d] = v;
      if (d == 0) {
        part_ml[(bh * num_splits + split) * 2] = s_chunk_max[g];
        part_ml[(bh * num_splits + split) * 2 + 1] = s_l[g];
      }
    }
  }
}

// Merge the S partial results of each (sequence, head): weights sum_s * 2^(max_s - max).
template <typename T, int D>
__device__ __forceinline__ void paged_decode_reduce(T* __restrict__ out,
                                                    const float* __restrict__ part_o,
                                                    const float* __restrict__ part_ml,
                                                    const int* __restrict__ kv_lens,
                                                    int num_q_heads, int num_splits) {
  // grid: B * Hq CTAs of D threads; out: [B, Hq, D]
  const int64_t bh = blockIdx.x;
  const int b = blockIdx.x / num_q_heads, d = threadIdx.x;
  const int kv_len = kv_lens[b];
  const int split_len = decode_split_len(kv_len, num_splits);
  const int active = (kv_len + split_len - 1) / split_len;
  const float* ml = part_ml + bh * num_splits * 2;
  float global_max = -INFINITY;
  for (int s = 0; s < active; ++s) global_max = fmaxf(global_max, ml[2 * s]);
  float num = 0.f, den = 0.f;
  for (int s = 0; s < active; ++s) {
    const float w = ml[2 * s + 1] * exp2f(ml[2 * s] - global_max);
    num = fmaf(w, part_o[(bh * num_splits + s) * D + d], num);
    den += w;
  }
  out[bh * D + d] = from_float<T>(num / den);
}

}  // namespace lmd

// U: tokens in flight per thread; LOWREG: see paged_decode; MINB: CTAs per SM to fit.
#define LMD_DECODE_KERNEL_X(T, SUFFIX, D, G, U, LOWREG, NAME, MINB)                             \
  extern "C" __global__ void __launch_bounds__(lmd::kDecodeWarps * 32, MINB)                    \
      NAME(                                                                                     \
          T* out, float* part_o, float* part_ml, const T* q, const T* k_cache, const T* v_cache, \
          const int* kv_lens, const int* block_tables, int bt_stride, int64_t q_stride_t,        \
          int64_t q_stride_h, int num_q_heads, int num_kv_heads, int group_heads,                \
          int block_size, int block_shift, float scale_log2) {                                  \
    lmd::paged_decode<T, D, G, U, LOWREG>(out, part_o, part_ml, q, k_cache, v_cache, kv_lens,   \
                                          block_tables, bt_stride, q_stride_t, q_stride_h,      \
                                          num_q_heads, num_kv_heads, group_heads, block_size,   \
                                          block_shift, scale_log2);                             \
  }

// Measured on H100 (B=32, ctx 4096, D=128): G <= 4 runs best with 4 tokens in flight
// per thread and <= 128 registers (4 CTAs/SM); G = 8 needs LOWREG and 2 tokens to reach
// 4 CTAs/SM at all.
#define LMD_DECODE_KERNEL(T, SUFFIX, D, G)                                  \
  LMD_DECODE_KERNEL_X(T, SUFFIX, D, G, (G == 8 ? 2 : 4), (G == 8),          \
                      paged_decode_##SUFFIX##_d##D##_g##G, 4)

#define LMD_DECODE_REDUCE_KERNEL(T, SUFFIX, D)                                                  \
  extern "C" __global__ void __launch_bounds__(D) paged_decode_reduce_##SUFFIX##_d##D(          \
      T* out, const float* part_o, const float* part_ml, const int* kv_lens, int num_q_heads,   \
      int num_splits) {                                                                         \
    lmd::paged_decode_reduce<T, D>(out, part_o, part_ml, kv_lens, num_q_heads, num_splits);     \
  }

#define LMD_DECODE_ALL_G(T, SUFFIX, D) \
  LMD_DECODE_KERNEL(T, SUFFIX, D, 1)   \
  LMD_DECODE_KERNEL(T, SUFFIX, D, 2)   \
  LMD_DECODE_KERNEL(T, SUFFIX, D, 4)   \
  LMD_DECODE_KERNEL(T, SUFFIX, D, 8)   \
  LMD_DECODE_REDUCE_KERNEL(T, SUFFIX, D)

LMD_DECODE_ALL_G(__half, f16, 64)
LMD_DECODE_ALL_G(__half, f16, 128)
LMD_DECODE_ALL_G(__nv_bfloat16, bf16, 64)
LMD_DECODE_ALL_G(__nv_bfloat16, bf16, 128)
