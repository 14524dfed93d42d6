// SiLU(gate) * up over a [rows, 2I] (gate | up) input, 8 elements per thread.
// silu is rounded to T before the product, as torch's F.silu(gate) * up does.
#include "common.cuh"

namespace lmd {

template <typename T>
__device__ __forceinline__ void silu_and_mul_vec(T* __restrict__ out, const T* __restrict__ x,
                                                 int inter) {
  // x: [rows, 2 * inter]; out: [rows, inter]; this CTA: row blockIdx.x, vector column c
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= inter / 8) return;
  const size_t row = blockIdx.x;
  const uint4* gate = reinterpret_cast<const uint4*>(x + row * 2 * inter);
  const uint4* up = reinterpret_cast<const uint4*>(x + row * 2 * inter + inter);
  float g[8], u[8], o[8];
  unpack8<T>(gate[c], g);
  unpack8<T>(up[c], u);
#pragma unroll
  for (int i = 0; i < 8; ++i) o[i] = silu_mul<T>(g[i], u[i]);
  reinterpret_cast<uint4*>(out + row * inter)[c] = pack8<T>(o);
}

}  // namespace lmd

// inter % 8 == 0; grid (rows, ceil(inter / 8 / blockDim.x)).
#define LMD_SILU_KERNEL(T, SUFFIX)                                                 \
  extern "C" __global__ void __launch_bounds__(256)                                \
      silu_and_mul_##SUFFIX(T* out, const T* x, int inter) {                       \
    lmd::pdl_enter();                                                                           \
    lmd::silu_and_mul_vec<T>(out, x, inter);                                       \
  }

LMD_SILU_KERNEL(__half, f16)
LMD_SILU_KERNEL(__nv_bfloat16, bf16)
