// Addressing of the paged KV cache [num_blocks, block_size, Hkv, D] through a block table.
#pragma once

#include "common.cuh"

namespace lmd {

// Cache row (block * block_size + offset) of context token t, from the block table.
__device__ __forceinline__ int64_t token_row(const int* __restrict__ block_table, int t,
                                             int block_size, int block_shift) {
  int blk, off;
  if (block_shift >= 0) {  // power-of-two block size: shift and mask
    blk = block_table[t >> block_shift];
    off = t & (block_size - 1);
  } else {
    blk = block_table[t / block_size];
    off = t % block_size;
  }
  return static_cast<int64_t>(blk) * block_size + off;
}

}  // namespace lmd
