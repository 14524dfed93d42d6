"""The quantized KV cache (`quant_policy` 8 or 4): K or V of one layer, int8 or int4 per
(token, kv head), asymmetric, with that row's (scale, zero) beside it.

A cached row x [D] (one token, one kv head) is stored as q = round((x - zero) / scale)
clamped to [0, 2^bits - 1], with zero = min(x) and scale = (max(x) - min(x)) / (2^bits - 1)
rounded to float16 first (q is computed from the rounded pair, so the error stays within
half a step); it reads back as q * scale + zero. float16 rather than the model's dtype:
bfloat16's 8-bit mantissa would put a zero point of a row far from 0 up to half an int8
step off.

Rows are stored rotated: x is first multiplied by the orthonormal Walsh-Hadamard matrix
H [D, D] (head dims that are powers of two), which spreads a few large channels (keys have
them) over all, so one (scale, zero) per row fits far better: on the embedded SmolLM2,
int8 keys and values went from 98.8% to 99.3% top-1 agreement with the unquantized cache
and int4's perplexity increase from 9.9% to 4.3%. q.k and p.v are unchanged when queries
are rotated the same way and the attention output rotated back (H is its own inverse): the
rope + KV-write op returns q already rotated, and attention over this cache rotates its
output back (`rotate`).

Layout: `values` uint8 [num_blocks, block_size, Hkv, D * bits / 8] (int4: byte j holds
element j in its low nibble and element j + D/2 in its high one, so the two halves that
rotary embedding pairs share a byte) and `params` float16 [num_blocks, block_size, Hkv, 2].
Both are indexed by the same block ids as a 16-bit cache, so the block manager, prefix
cache and preemption do not change; the kernels read a tile's params in the same pass as
its values. This module holds the definition (the ops' reference and the CPU path).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

KV_BITS = (8, 4)
PARAMS_DTYPE = torch.float16
_F16_MAX = 65504.0


def check_kv_bits(bits: int) -> None:
    if bits not in KV_BITS:
        raise ValueError(f"KV cache bits must be 8 or 4, got {bits!r}")


def packed_dim(head_dim: int, bits: int) -> int:
    """Bytes of one stored row of head_dim elements."""
    check_kv_bits(bits)
    if bits == 4 and head_dim % 2:
        raise ValueError(f"an int4 KV cache needs an even head dim, got {head_dim}")
    return head_dim * bits // 8


def row_bytes(head_dim: int, bits: int) -> int:
    """Bytes per (token, kv head): the values and the float16 (scale, zero)."""
    return packed_dim(head_dim, bits) + 2 * PARAMS_DTYPE.itemsize


def hadamard(head_dim: int, device: torch.device | str = "cpu") -> torch.Tensor | None:
    """The orthonormal Walsh-Hadamard matrix [D, D] float32 (Sylvester's order: H[i, j] =
    (-1)^popcount(i & j) / sqrt(D)), or None when D is not a power of two (rows kept as they are)."""
    if head_dim < 1 or head_dim & (head_dim - 1):
        return None
    i = torch.arange(head_dim, device=device)
    bits = torch.bitwise_and(i.unsqueeze(1), i.unsqueeze(0))  # [D, D]
    parity = torch.zeros_like(bits)
    while bool(bits.any()):
        parity ^= bits & 1
        bits = bits >> 1
    return (1 - 2 * parity).float() / head_dim**0.5


def quantize(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of x as (values, params), per the module docstring."""
    # x: [..., D] -> values uint8 [..., D * bits / 8], params float16 [..., 2] (scale, zero)
    levels = (1 << bits) - 1
    xf = x.float()
    lo, hi = xf.amin(-1, keepdim=True), xf.amax(-1, keepdim=True)
    scale = ((hi - lo) / levels).clamp(max=_F16_MAX).to(PARAMS_DTYPE)
    zero = lo.clamp(-_F16_MAX, _F16_MAX).to(PARAMS_DTYPE)
    s, z = scale.float(), zero.float()
    q = torch.where(s > 0, (xf - z) / torch.where(s > 0, s, 1.0), 0.0)
    q = q.round().clamp(0, levels).to(torch.uint8)
    if bits == 4:
        half = q.shape[-1] // 2
        q = q[..., :half] | (q[..., half:] << 4)
    return q, torch.cat((scale, zero), dim=-1)


def dequantize(values: torch.Tensor, params: torch.Tensor, bits: int) -> torch.Tensor:
    """The float32 rows that (values, params) stand for."""
    # values: uint8 [..., Dq]; params: [..., 2] -> float32 [..., D]
    if bits == 4:
        values = torch.cat((values & 0xF, values >> 4), dim=-1)
    p = params.float()
    return values.float() * p[..., :1] + p[..., 1:]


@dataclass(frozen=True)
class QuantizedKVCache:
    """K or V of one layer in a quantized paged cache (the module docstring's layout)."""

    values: torch.Tensor  # uint8 [num_blocks, block_size, Hkv, D * bits / 8]
    params: torch.Tensor  # float16 [num_blocks, block_size, Hkv, 2]: (scale, zero) of each row
    bits: int
    rotation: torch.Tensor | None  # float32 [D, D]: hadamard(D), applied to rows before quantizing
    rotation_lowp: torch.Tensor | None = None  # the same in the model's 16-bit dtype (rotate_fast)

    @classmethod
    def zeros(
        cls, num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int, bits: int,
        device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
    ) -> "QuantizedKVCache":
        """dtype: the model's (a 16-bit one gets a copy of the rotation for rotate_fast)."""
        rows = (num_blocks, block_size, num_kv_heads)
        rotation = hadamard(head_dim, device)
        return cls(
            values=torch.zeros((*rows, packed_dim(head_dim, bits)), dtype=torch.uint8, device=device),
            params=torch.zeros((*rows, 2), dtype=PARAMS_DTYPE, device=device),
            bits=bits,
            rotation=rotation,
            rotation_lowp=rotation.to(dtype) if rotation is not None and dtype.itemsize == 2 else None,
        )

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., D] times the rotation (into the stored rows' basis, or back), in x's dtype."""
        if self.rotation is None:
            return x
        return (x.float() @ self.rotation).to(x.dtype)

    def rotate_fast(self, x: torch.Tensor) -> torch.Tensor:
        """rotate as one GEMM in x's 16-bit dtype (the native path's attention output); the
        rounded matrix is H times a factor within 2^-9 of 1, the same for every entry."""
        if self.rotation_lowp is None or x.dtype != self.rotation_lowp.dtype:
            return self.rotate(x)
        return torch.matmul(x, self.rotation_lowp)

    @property
    def head_dim(self) -> int:
        return self.values.shape[-1] * 8 // self.bits

    @property
    def shape(self) -> torch.Size:
        """The shape of the 16-bit cache this one stands for: [num_blocks, block_size, Hkv, D]."""
        return torch.Size((*self.values.shape[:-1], self.head_dim))

    @property
    def device(self) -> torch.device:
        return self.values.device

    def store(self, x: torch.Tensor, slot_mapping: torch.Tensor) -> None:
        """Quantize the new tokens' rows into their cache slots (negative slots are skipped)."""
        # x: [T, Hkv, D]; slot_mapping: [T] (slot = block * block_size + offset)
        keep = slot_mapping >= 0
        if not bool(keep.all()):
            x, slot_mapping = x[keep], slot_mapping[keep]
        values, params = quantize(x.float() if self.rotation is None else x.float() @ self.rotation, self.bits)
        nb, bs, h, dq = self.values.shape
        self.values.view(nb * bs, h, dq).index_copy_(0, slot_mapping, values)
        self.params.view(nb * bs, h, 2).index_copy_(0, slot_mapping, params)

    def gather(self, block_table: torch.Tensor, length: int) -> torch.Tensor:
        """The first `length` cached rows of one sequence, dequantized to float32 (still rotated)."""
        # block_table: [max_blocks] -> [length, Hkv, D]
        bs = self.values.shape[1]
        blocks = block_table[: (length + bs - 1) // bs].long()
        values = self.values.index_select(0, blocks).flatten(0, 1)[:length]
        params = self.params.index_select(0, blocks).flatten(0, 1)[:length]
        return dequantize(values, params, self.bits)

    def copy_blocks(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        """Copy whole blocks src[i] -> dst[i] (copy-on-write of a shared prefix block)."""
        self.values.index_copy_(0, dst, self.values.index_select(0, src))
        self.params.index_copy_(0, dst, self.params.index_select(0, src))
