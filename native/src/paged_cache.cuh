// Addressing of the paged KV cache [num_blocks, block_size, Hkv, D] through a block table.
#pragma once

#include <type_traits>

#include "mma.cuh"

namespace lmd {

// The cache rows of one tile's keys for this thread: ROWS keys n, n + STEP, ... (n is the
// thread's first key of the tile that starts at key n0). copy_row(i, offset, bytes) gets
// row i's byte offset in the cache (times row_bytes) and 16, or 0 for keys at or past
// `end`: those are to be zero-filled (masked scores must not meet NaN garbage in P.V),
// and their offset is key 0's row (always there), so there are no per-row branches.
// Power-of-two blocks of at least TILE keys hold whole tiles: one block-table lookup.
template <int ROWS, int STEP, int TILE, typename CopyRow>
__device__ __forceinline__ void for_tile_rows(const int* __restrict__ bt, int n0, int n, int end,
                                              int block_size, int block_shift, uint32_t row_bytes,
                                              CopyRow&& copy_row) {
  if (block_shift >= 0 && block_size >= TILE) {  // n0 is a multiple of TILE
    const uint32_t tok =
        static_cast<uint32_t>(bt[n0 >> block_shift]) * block_size + (n & (block_size - 1));
    const uint64_t first = static_cast<uint64_t>(tok) * row_bytes;
#pragma unroll
    for (int i = 0; i < ROWS; ++i)
      copy_row(i, first + static_cast<uint64_t>(i * STEP) * row_bytes, n + i * STEP < end ? 16 : 0);
    return;
  }
  auto rows = [&](auto pow2) {  // one lookup per row; the block-size case per tile
#pragma unroll
    for (int i = 0; i < ROWS; ++i) {
      const bool valid = n + i * STEP < end;
      const uint32_t key = valid ? n + i * STEP : 0;
      uint32_t blk, off;
      if constexpr (decltype(pow2)::value) {  // power-of-two block size: shift and mask
        blk = key >> block_shift;
        off = key & (block_size - 1);
      } else {
        blk = key / static_cast<uint32_t>(block_size);
        off = key - blk * block_size;
      }
      const uint32_t tok = static_cast<uint32_t>(bt[blk]) * block_size + off;  // cache row
      copy_row(i, static_cast<uint64_t>(tok) * row_bytes, valid ? 16 : 0);
    }
  };
  if (block_shift >= 0)
    rows(std::true_type());
  else
    rows(std::false_type());
}

// cp.async of one K or V tile's rows for this thread (for_tile_rows), 16 bytes each from
// byte `col` of their cache rows into smem at dst, dst + dst_step, ...
template <int ROWS, int STEP, int TILE>
__device__ __forceinline__ void cp_async_tile_rows(void* dst, uint32_t dst_step, const void* cache,
                                                   const int* __restrict__ bt, int n0, int n,
                                                   int end, int block_size, int block_shift,
                                                   uint32_t row_bytes, uint32_t col) {
  unsigned char* d = static_cast<unsigned char*>(dst);
  const char* base = static_cast<const char*>(cache) + col;
  for_tile_rows<ROWS, STEP, TILE>(bt, n0, n, end, block_size, block_shift, row_bytes,
                                  [&](int i, uint64_t offset, int bytes) {
                                    cp_async_16(d + i * dst_step, base + offset, bytes);
                                  });
}

}  // namespace lmd
