// How decode attention splits a long context over several CTAs (split-K): shared by the
// 16-bit and the int8/int4 decode kernels and the reduce kernel that merges the splits.
#pragma once

namespace lmd {

constexpr int kDecodeMinSplit = 64;  // never split a context finer than this (small batches want many splits)

// Tokens handled by each of `num_splits` CTAs of a sequence (a multiple of 64, so every
// split starts on a tile boundary).
__device__ __forceinline__ int decode_split_len(int kv_len, int num_splits) {
  int len = (kv_len + num_splits - 1) / num_splits;
  len = max(len, kDecodeMinSplit);
  return (len + 63) & ~63;
}

}  // namespace lmd
