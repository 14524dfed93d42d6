// Fused RMSNorm, optionally after a residual add (add_rms_norm).
// One CTA per row; the row stays in registers between the sum-of-squares pass and
// the scaling pass, so x (and residual) are read from memory once.
// Rounding follows lmdeploy_sdk.ops.reference: (x + residual) and x * rsqrt(...)
// are rounded to T before the next step, as torch does.
#include "common.cuh"

namespace lmd {

// Up to MAX_VECS 8-element vectors per thread: 256 threads * 8 * 8 = 16384 columns.
constexpr int kNormMaxVecs = 8;

template <typename T>
__device__ __forceinline__ void rms_norm_row(T* __restrict__ out, T* __restrict__ sum_out,
                                             const T* __restrict__ x, const T* __restrict__ residual,
                                             const T* __restrict__ weight, int hidden, float eps) {
  // x, residual, out, sum_out: [rows, hidden]; weight: [hidden]; this CTA: row blockIdx.x
  __shared__ float warp_partials[32];
  const int nvec = hidden / 8;
  const size_t row_off = static_cast<size_t>(blockIdx.x) * hidden;
  const uint4* xv = reinterpret_cast<const uint4*>(x + row_off);
  const uint4* rv = reinterpret_cast<const uint4*>(residual + row_off);
  uint4* sv = reinterpret_cast<uint4*>(sum_out + row_off);

  float vals[kNormMaxVecs][8];
  float sumsq = 0.f;
#pragma unroll
  for (int j = 0; j < kNormMaxVecs; ++j) {
    const int c = threadIdx.x + j * blockDim.x;
    if (c < nvec) {
      unpack8<T>(xv[c], vals[j]);
      if (residual != nullptr) {
        float r[8];
        unpack8<T>(rv[c], r);
#pragma unroll
        for (int i = 0; i < 8; ++i) vals[j][i] = round_to<T>(vals[j][i] + r[i]);
        sv[c] = pack8<T>(vals[j]);
      }
#pragma unroll
      for (int i = 0; i < 8; ++i) sumsq += vals[j][i] * vals[j][i];
    }
  }

  sumsq = warp_sum(sumsq);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_partials[warp] = sumsq;
  __syncthreads();
  if (warp == 0) {
    const int nwarps = (blockDim.x + 31) / 32;
    float v = lane < nwarps ? warp_partials[lane] : 0.f;
    v = warp_sum(v);
    if (lane == 0) warp_partials[0] = v;
  }
  __syncthreads();
  const float inv_rms = rsqrtf(warp_partials[0] / static_cast<float>(hidden) + eps);

  const uint4* wv = reinterpret_cast<const uint4*>(weight);
  uint4* ov = reinterpret_cast<uint4*>(out + row_off);
#pragma unroll
  for (int j = 0; j < kNormMaxVecs; ++j) {
    const int c = threadIdx.x + j * blockDim.x;
    if (c < nvec) {
      float w[8], o[8];
      unpack8<T>(wv[c], w);
#pragma unroll
      for (int i = 0; i < 8; ++i) o[i] = w[i] * round_to<T>(vals[j][i] * inv_rms);
      ov[c] = pack8<T>(o);
    }
  }
}

}  // namespace lmd

// residual/sum_out may be null (plain rms_norm). hidden % 8 == 0, hidden <= 8 * 8 * blockDim.x.
#define LMD_NORM_KERNEL(T, SUFFIX)                                                              \
  extern "C" __global__ void __launch_bounds__(256)                                             \
      rms_norm_##SUFFIX(T* out, T* sum_out, const T* x, const T* residual, const T* weight,    \
                        int hidden, float eps) {                                                \
    lmd::pdl_enter();                                                                           \
    lmd::rms_norm_row<T>(out, sum_out, x, residual, weight, hidden, eps);                       \
  }

LMD_NORM_KERNEL(__half, f16)
LMD_NORM_KERNEL(__nv_bfloat16, bf16)
