// Thin wrappers over Hopper's warpgroup MMA (wgmma, sm_90a only: build with
// -arch=compute_90a): shared-memory matrix descriptors, the fence / commit / wait
// protocol, and m64nNk16 with fp32 accumulators for N = 64 and 128, A from shared
// memory (SS) or from registers (RS), B always from shared memory.
//
// All four warps of a warpgroup (128 consecutive threads starting at a multiple of 128)
// execute every call here together (.sync.aligned).
//
// Register layouts (per warp w = warp index in the warpgroup, g = lane / 4, t = lane % 4),
// the same as mma.sync m16n8k16's per warp, warp w owning rows 16w..16w+15:
//   accumulator d[N / 2] of m64nN: d[4j + e] is row 16w + g + 8 * (e / 2), column
//     8j + 2t + (e & 1), for n8 block j in [0, N / 8) and e in [0, 4);
//   A fragment a[4] of m64k16 (16-bit types, two per register, lower column in the low
//     half): a[0] row g, k 2t..2t+1; a[1] row g + 8, k 2t..; a[2] row g, k 2t+8..;
//     a[3] row g + 8, k 2t+8.. (rows relative to 16w).
#pragma once

#include "common.cuh"

namespace lmd {

// Shared-memory matrix descriptor (PTX ISA "Matrix Descriptor Format"): bits 0-13 start
// address >> 4, 16-29 leading-dimension byte offset >> 4, 32-45 stride-dimension byte
// offset >> 4, 49-51 base offset (0: every swizzle atom we use starts 1024-byte aligned),
// 62-63 swizzle mode (1 = 128-byte swizzle).
//
// Our tiles all use the 128-byte swizzle: a row of 64 16-bit elements is 128 bytes, 8 rows
// make a 1024-byte atom, and 16-byte chunk c of row r sits at chunk c ^ (r % 8) (the XOR
// is on shared-address bits 4-6 with bits 7-9, hence the 1024-byte alignment).
//   K-major operand (Q and K: the reduction dim contiguous): SBO = 1024 (8-row groups along
//     M/N); LBO unused (CUTLASS writes 1); a k16 step inside the atom adds 32 bytes to the
//     start address.
//   MN-major operand (V as P.V's B: N = D contiguous, transpose bit set): rows of the atom
//     run along K (8 keys), SBO = byte distance between 8-key groups (1024 when keys are
//     consecutive rows), LBO = byte distance between 64-column blocks along N.
__device__ __forceinline__ uint64_t smem_desc_sw128(uint32_t smem_byte_addr, uint32_t lbo_bytes,
                                                    uint32_t sbo_bytes) {
  return static_cast<uint64_t>((smem_byte_addr >> 4) & 0x3fff) |
         (static_cast<uint64_t>((lbo_bytes >> 4) & 0x3fff) << 16) |
         (static_cast<uint64_t>((sbo_bytes >> 4) & 0x3fff) << 32) | (1ull << 62);
}

// The descriptor of an operand `byte_offset` bytes further on (a multiple of 16; the sum
// stays inside the 14-bit address field since shared addresses are below 256 KiB).
__device__ __forceinline__ uint64_t desc_advance(uint64_t desc, uint32_t byte_offset) {
  return desc + (byte_offset >> 4);
}

// Orders this thread's earlier register writes (accumulators, A fragments) before the
// wgmmas that follow; required before the first wgmma and after ordinary code touched
// registers a wgmma reads or accumulates into.
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }

// Closes the wgmma-group of every wgmma issued since the last commit.
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}

// Waits until at most N committed wgmma-groups are pending; only then may the
// accumulators (and the A registers) of the finished groups be touched.
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

// Pins a register at this point of the instruction stream: the compiler may neither hoist
// a read of it above a preceding wait nor sink a write below a following fence (both are
// volatile asm, which keep their order; plain arithmetic does not).
__device__ __forceinline__ void fence_operand(float& r) { asm volatile("" : "+f"(r)::"memory"); }
__device__ __forceinline__ void fence_operand(uint32_t& r) { asm volatile("" : "+r"(r)::"memory"); }

template <int N>
__device__ __forceinline__ void fence_operands(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) fence_operand(r[i]);
}

// Smem written by ordinary stores or cp.async, read next by wgmma (the async proxy): each
// writing thread runs this after its writes landed, before the barrier the readers pass.
__device__ __forceinline__ void fence_proxy_async_smem() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

#define LMD_WGMMA_D32                                                                     \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "              \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define LMD_WGMMA_D64                                                                     \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "              \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "     \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "     \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"
#define LMD_ACC8(d, i)                                                                    \
  "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]),            \
      "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])
#define LMD_ACC32(d, i) LMD_ACC8(d, i), LMD_ACC8(d, i + 8), LMD_ACC8(d, i + 16), LMD_ACC8(d, i + 24)
#define LMD_ACC_N64(d) LMD_ACC32(d, 0)
#define LMD_ACC_N128(d) LMD_ACC32(d, 0), LMD_ACC32(d, 32)

// d[64 x N] = A[64 x 16] B[16 x N] + (scale_d ? d : 0): A and B K-major from smem
// descriptors (transpose bits 0). TY is the PTX type, CT the C++ element type (tag).
// DREGS/ACC name the accumulator list; IA, IB, IS the operand numbers of desc_a, desc_b
// and scale_d after it.
#define LMD_WGMMA_SS(N, DREGS, ACC, IA, IB, IS, TY, CT)                                     \
  __device__ __forceinline__ void wgmma_ss(float(&d)[N / 2], uint64_t desc_a, uint64_t desc_b, \
                                           int scale_d, CT) {                               \
    asm volatile(                                                                           \
        "{\n.reg .pred p;\nsetp.ne.b32 p, %" IS ", 0;\n"                                    \
        "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." TY "." TY " " DREGS              \
        ", %" IA ", %" IB ", p, 1, 1, 0, 0;\n}\n"                                          \
        : ACC(d)                                                                            \
        : "l"(desc_a), "l"(desc_b), "r"(scale_d));                                         \
  }

// d[64 x N] = A[64 x 16] B[16 x N] + (scale_d ? d : 0): A from registers (layout above),
// B MN-major from a smem descriptor (transpose bit 1: B's N dim contiguous in smem).
// IA0 is the operand number of a[0]; IB, IS those of desc_b and scale_d.
#define LMD_WGMMA_RS(N, DREGS, ACC, IA0, IA1, IA2, IA3, IB, IS, TY, CT)                    \
  __device__ __forceinline__ void wgmma_rs_tb(float(&d)[N / 2], const uint32_t(&a)[4],     \
                                              uint64_t desc_b, int scale_d, CT) {          \
    asm volatile(                                                                           \
        "{\n.reg .pred p;\nsetp.ne.b32 p, %" IS ", 0;\n"                                    \
        "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." TY "." TY " " DREGS              \
        ", {%" IA0 ", %" IA1 ", %" IA2 ", %" IA3 "}, %" IB ", p, 1, 1, 1;\n}\n"            \
        : ACC(d)                                                                            \
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d));          \
  }

LMD_WGMMA_SS(64, LMD_WGMMA_D32, LMD_ACC_N64, "32", "33", "34", "f16", __half)
LMD_WGMMA_SS(64, LMD_WGMMA_D32, LMD_ACC_N64, "32", "33", "34", "bf16", __nv_bfloat16)
LMD_WGMMA_SS(128, LMD_WGMMA_D64, LMD_ACC_N128, "64", "65", "66", "f16", __half)
LMD_WGMMA_SS(128, LMD_WGMMA_D64, LMD_ACC_N128, "64", "65", "66", "bf16", __nv_bfloat16)
LMD_WGMMA_RS(64, LMD_WGMMA_D32, LMD_ACC_N64, "32", "33", "34", "35", "36", "37", "f16", __half)
LMD_WGMMA_RS(64, LMD_WGMMA_D32, LMD_ACC_N64, "32", "33", "34", "35", "36", "37", "bf16",
             __nv_bfloat16)
LMD_WGMMA_RS(128, LMD_WGMMA_D64, LMD_ACC_N128, "64", "65", "66", "67", "68", "69", "f16", __half)
LMD_WGMMA_RS(128, LMD_WGMMA_D64, LMD_ACC_N128, "64", "65", "66", "67", "68", "69", "bf16",
             __nv_bfloat16)

#undef LMD_WGMMA_SS
#undef LMD_WGMMA_RS
#undef LMD_ACC_N128
#undef LMD_ACC_N64
#undef LMD_ACC32
#undef LMD_ACC8
#undef LMD_WGMMA_D64
#undef LMD_WGMMA_D32

}  // namespace lmd
