"""Checkpoint int4 layouts -> the rows layout of int4.py, one tensor at a time.

Each function takes one checkpoint tensor and returns its rows-layout counterpart
(output rows first), so fused projections are filled by row ranges like float weights:
- AWQ (AutoAWQ GEMM): `qweight` int32 [K, N/8] and `qzeros` int32 [K/G, N/8], eight
  columns a word in the interleaved order 0 2 4 6 1 3 5 7 (nibble j holds column
  8w + AWQ_ORDER[j]); `scales` fp16 [K/G, N]; W = (q - z) * s.
- GPTQ: `qweight` int32 [K/8, N] packed along K in natural order; `qzeros` int32
  [K/G, N/8] packed along N in natural order, storing z - 1 (AutoGPTQ's "v1" format; the
  "v2" format of GPTQModel stores z); `scales` [K/G, N].
- GGUF Q4_0 / Q4_1 blocks of 32 inputs: Q4_0 is fp16 d + 16 bytes (W = d (q - 8)), Q4_1
  fp16 d, fp16 m + 16 bytes (W = d q + m); byte j holds input j (low nibble) and j + 16.
"""
from __future__ import annotations

import numpy as np
import torch

from lmdeploy_sdk.quant.int4 import RowsInt4, pack_nibbles, unpack_nibbles

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # nibble j of a word holds column AWQ_ORDER[j]
_AWQ_NIBBLE_OF_COLUMN = tuple(AWQ_ORDER.index(c) for c in range(8))  # 0 4 1 5 2 6 3 7
GGUF_BLOCK = 32


def _check_int32(t: torch.Tensor, name: str) -> None:
    if t.dtype != torch.int32 or t.dim() != 2:
        raise ValueError(f"{name} must be a 2-D int32 tensor, got {t.dtype} of shape {tuple(t.shape)}")


def awq_unpack(packed: torch.Tensor) -> torch.Tensor:
    """AWQ-packed int32 [R, C/8] -> uint8 [R, C] in column order."""
    _check_int32(packed, "an AWQ qweight/qzeros")
    q = unpack_nibbles(packed).view(packed.shape[0], -1, 8)  # [R, C/8, nibble]
    return q[..., list(_AWQ_NIBBLE_OF_COLUMN)].reshape(packed.shape[0], -1)


def awq_pack(q: torch.Tensor) -> torch.Tensor:
    """uint8 [R, C] (values 0..15) -> AWQ-packed int32 [R, C/8], the inverse of awq_unpack."""
    grouped = q.view(q.shape[0], -1, 8)[..., list(AWQ_ORDER)]  # nibble j <- column AWQ_ORDER[j]
    return pack_nibbles(grouped.reshape(q.shape[0], -1))


def awq_qweight(t: torch.Tensor) -> torch.Tensor:
    """AWQ qweight int32 [K, N/8] -> rows qweight int32 [N, K/8]."""
    return pack_nibbles(awq_unpack(t).t().contiguous())


def awq_qzeros(t: torch.Tensor) -> torch.Tensor:
    """AWQ qzeros int32 [K/G, N/8] -> zero points float32 [N, K/G]."""
    return awq_unpack(t).t().float().contiguous()


def group_scales(t: torch.Tensor) -> torch.Tensor:
    """AWQ/GPTQ scales [K/G, N] -> float32 [N, K/G]."""
    if t.dim() != 2 or not t.is_floating_point():
        raise ValueError(f"scales must be a 2-D float tensor, got {t.dtype} of shape {tuple(t.shape)}")
    return t.t().float().contiguous()


def gptq_qweight(t: torch.Tensor) -> torch.Tensor:
    """GPTQ qweight int32 [K/8, N] -> rows qweight int32 [N, K/8] (the same words, transposed)."""
    _check_int32(t, "a GPTQ qweight")
    return t.t().contiguous()


def gptq_qzeros(t: torch.Tensor, offset: int = 1) -> torch.Tensor:
    """GPTQ qzeros int32 [K/G, N/8] -> zero points float32 [N, K/G]; `offset` is added to
    the stored values (1 for AutoGPTQ's v1 format, 0 for v2)."""
    _check_int32(t, "a GPTQ qzeros")
    return (unpack_nibbles(t).t().float() + offset).contiguous()


def gguf_q4_rows(blocks: np.ndarray | torch.Tensor, kind: str, shape: tuple[int, int]) -> RowsInt4:
    """GGUF Q4_0 / Q4_1 block bytes (uint8 [N, K / 32 * block bytes]) of a [N, K] weight -> rows layout."""
    if kind not in ("Q4_0", "Q4_1"):
        raise ValueError(f"only GGUF Q4_0 and Q4_1 load as 4-bit weights, got {kind}")
    n, k = shape
    if k % GGUF_BLOCK:
        raise ValueError(f"a GGUF {kind} weight needs a multiple of {GGUF_BLOCK} inputs, got {k}")
    head = 2 if kind == "Q4_0" else 4  # fp16 d (and fp16 m) before the 16 nibble bytes
    raw = torch.as_tensor(np.ascontiguousarray(blocks)).view(torch.uint8).reshape(n, k // GGUF_BLOCK, head + 16)
    d = raw[..., :2].contiguous().view(torch.float16)[..., 0].float()  # [N, K/32]
    if kind == "Q4_1":
        m = raw[..., 2:4].contiguous().view(torch.float16)[..., 0].float()
    else:
        m = -8.0 * d
    nib = raw[..., head:]  # [N, K/32, 16]: byte j = input j (low) | input j + 16 (high)
    q = torch.cat((nib & 0xF, nib >> 4), dim=-1).reshape(n, k)  # [N, K] uint8
    return RowsInt4(pack_nibbles(q), d, m)
