// Shared device helpers: 16-byte vectors of fp16/bf16 <-> fp32, warp reductions.
// Every kernel file includes this; the kernels themselves are `extern "C"` so the
// driver finds them by plain name (<op>_<dtype>[_d<D>][_g<G>]).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

namespace lmd {

template <typename T>
struct Pair;
template <>
struct Pair<__half> {
  using type = __half2;
};
template <>
struct Pair<__nv_bfloat16> {
  using type = __nv_bfloat162;
};

__device__ __forceinline__ float2 to_float2(__half2 v) { return __half22float2(v); }
__device__ __forceinline__ float2 to_float2(__nv_bfloat162 v) { return __bfloat1622float2(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

template <typename T>
__device__ __forceinline__ float to_float(T v);
template <>
__device__ __forceinline__ float to_float<__half>(__half v) {
  return __half2float(v);
}
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

// Two floats -> one 32-bit register of two T (lo in the low half), as mma fragments want.
__device__ __forceinline__ uint32_t pack2(float lo, float hi, __half) {
  __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}
__device__ __forceinline__ uint32_t pack2(float lo, float hi, __nv_bfloat16) {
  __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}

// 8 elements of T held in one uint4 (one 16-byte load) -> 8 floats.
template <typename T>
__device__ __forceinline__ void unpack8(const uint4& raw, float (&f)[8]) {
  using P = typename Pair<T>::type;
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    P p = *reinterpret_cast<const P*>(&w[i]);
    float2 v = to_float2(p);
    f[2 * i] = v.x;
    f[2 * i + 1] = v.y;
  }
}

// 8 floats -> 8 elements of T (round to nearest even) in one uint4.
template <typename T>
__device__ __forceinline__ uint4 pack8(const float (&f)[8]) {
  uint4 r;
  r.x = pack2(f[0], f[1], T());
  r.y = pack2(f[2], f[3], T());
  r.z = pack2(f[4], f[5], T());
  r.w = pack2(f[6], f[7], T());
  return r;
}

// Round each float through T and back: reproduces torch's per-op rounding.
template <typename T>
__device__ __forceinline__ float round_to(float v) {
  return to_float<T>(from_float<T>(v));
}

// The gated-MLP activation of one element: silu(gate) rounded to T, times up, in fp32
// (the caller rounds the product to T), as torch's F.silu(gate) * up does. Shared by
// silu_and_mul and silu_mul_gemv so the fused GEMV sees bit-identical activations.
template <typename T>
__device__ __forceinline__ float silu_mul(float gate, float up) {
  return round_to<T>(gate / (1.0f + expf(-gate))) * up;
}

// Programmatic dependent launch (PDL, sm_90+; no-ops in the compute_80 build): the host
// launches our kernels so that one may start while its predecessor in the stream is still
// finishing. pdl_trigger lets the successor launch now (it still waits for all of this
// grid before touching our outputs); pdl_wait blocks until the predecessor grid has
// completed and its writes are visible. Every kernel waits before its first read of
// another kernel's output and before its first global write (a predecessor may still be
// reading what it overwrites), and no CTA returns before waiting, so "completed" chains
// back through every earlier kernel. The one exception is data no kernel of the current
// step writes: step inputs (copied before the step's first kernel) and the KV cache's rows
// of earlier tokens, which decode attention streams before it waits.
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// Kernels with nothing to do before their inputs are ready: both, at entry.
__device__ __forceinline__ void pdl_enter() {
  pdl_trigger();
  pdl_wait();
}

// 16-byte load of read-only data that is used once: no L1 allocation. Not volatile, so
// the compiler may schedule it freely (W is never written while the kernel runs).
__device__ __forceinline__ uint4 load_stream(const uint4* p) {
  uint4 r;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\n"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "l"(p));
  return r;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}

}  // namespace lmd
