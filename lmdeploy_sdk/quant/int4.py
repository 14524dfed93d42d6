"""The one int4 weight form every 4-bit format is loaded into, and its kernel layout.

A linear weight W [N, K] (out, in) is stored as int4 values q in [0, 15] with, per
group of `group_size` consecutive inputs of one output row, a scale s and an additive
term m:  W[n, k] = q[n, k] * s[k // G, n] + m[k // G, n].  AWQ and GPTQ (m = -z * s, z
the integer zero point) and GGUF Q4_1 (m its float min) and Q4_0 (m = -8 s) all map onto
it exactly, so one kernel serves every format.

Two layouts:
- rows (`RowsInt4`): how checkpoints are read. `qweight` int32 [N, K / 8] with input
  8j + i in bits 4i..4i+3 of word j; `scales` and `mins` float32 [N, K / G]. Row ranges of
  a fused projection ([q | k | v], [gate | up]) are plain row slices.
- kernel (`Int4Weight`): what the ops take. N is padded to a multiple of 16 and K to a
  multiple of 64 (padding: q = 0, s = m = 0, so padded weights are 0). `qweight` int32
  [N/16, K/64, 32, 4]: the 512 bytes of one (16-row tile, 64-input chunk) are lane l's
  16-byte vector at [tile, chunk, l], word w of which holds the mma.sync m16n8k16 A
  fragment of inputs 16w..16w+15 of the chunk (rows as A's rows), nibble i at bits 4i:
  row g + 8 (i & 1), input 2t + (i >> 2) + 8 ((i >> 1) & 1), with g = l // 4, t = l % 4.
  So one 16-byte load per lane gives a warp four k16 A fragments, and nibbles (j, j + 4)
  of a word are the two halves of fragment register j. `scale_min` [K/G, N, 2] in the
  activation dtype: (s, m) of a row are one 4-byte load.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

ROW_TILE = 16  # rows of W per mma tile
K_CHUNK = 64  # inputs per 16-byte lane vector (4 k16 fragments)
SUPPORTED_GROUP_SIZES = (32, 64, 128, 256)
_NIBBLES = torch.arange(8, dtype=torch.int32) * 4  # shift of nibble i


def padded(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def check_group_size(group_size: int, in_features: int, what: str = "layer") -> None:
    """ValueError unless group_size is supported and divides in_features."""
    if group_size not in SUPPORTED_GROUP_SIZES:
        raise ValueError(
            f"group_size={group_size} is not supported for 4-bit weights; supported: "
            f"{', '.join(map(str, SUPPORTED_GROUP_SIZES))}"
        )
    if in_features % group_size:
        raise ValueError(
            f"group_size={group_size} does not divide the {in_features} inputs of {what}; "
            "quantize it with a group size that does"
        )


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """int32 [..., W] -> uint8 [..., 8 W]: value 8j + i is bits 4i..4i+3 of word j."""
    shifts = _NIBBLES.to(packed.device)
    return ((packed.unsqueeze(-1) >> shifts) & 0xF).to(torch.uint8).flatten(-2)


def pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 8 W] (values 0..15) -> int32 [..., W], the inverse of unpack_nibbles."""
    if q.shape[-1] % 8:
        raise ValueError(f"the last dim ({q.shape[-1]}) must be a multiple of 8 to pack int4")
    fields = q.to(torch.int64).unflatten(-1, (-1, 8)) << _NIBBLES.to(q.device)  # [..., W, 8], disjoint bits
    total = fields.sum(-1)  # the OR of the fields, as an unsigned 32-bit value
    return torch.where(total >= 2**31, total - 2**32, total).to(torch.int32)


@dataclass
class RowsInt4:
    """A weight in the rows layout (see the module docstring), as checkpoints are read."""

    qweight: torch.Tensor  # int32 [N, K / 8]
    scales: torch.Tensor  # float32 [N, K / G]
    mins: torch.Tensor  # float32 [N, K / G]

    @property
    def shape(self) -> tuple[int, int]:
        return self.qweight.shape[0], self.qweight.shape[1] * 8

    @property
    def group_size(self) -> int:
        return self.shape[1] // self.scales.shape[1]

    def dequantize(self) -> torch.Tensor:
        """float32 [N, K]: q * s + m."""
        q = unpack_nibbles(self.qweight).float()  # [N, K]
        g = self.group_size
        s = self.scales.float().repeat_interleave(g, dim=1)
        m = self.mins.float().repeat_interleave(g, dim=1)
        return q * s + m


# Kernel layout <-> [N_pad, K_pad] values. The unpacked nibbles of qweight [RT, C, 32, 4]
# are [RT, C, g, t, w, a, b, c] with lane = 4 g + t and nibble i = 4 a + 2 b + c; the value
# sits at row 16 RT + 8 c + g, input 64 C + 16 w + 8 b + 2 t + a.
_KERNEL_DIMS = (8, 4, 4, 2, 2, 2)  # g, t, w, a, b, c
_TO_MATRIX = (0, 7, 2, 1, 4, 6, 3, 5)  # -> [RT, c, g, C, w, b, t, a]
_FROM_MATRIX = tuple(_TO_MATRIX.index(i) for i in range(8))


def _kernel_to_matrix(qweight: torch.Tensor) -> torch.Tensor:
    # qweight: int32 [RT, C, 32, 4] -> uint8 [16 RT, 64 C]
    rt, c = qweight.shape[:2]
    q = unpack_nibbles(qweight).view(rt, c, *_KERNEL_DIMS)
    return q.permute(_TO_MATRIX).reshape(rt * ROW_TILE, c * K_CHUNK)


def _matrix_to_kernel(q: torch.Tensor) -> torch.Tensor:
    # q: uint8 [16 RT, 64 C] -> int32 [RT, C, 32, 4]
    n, k = q.shape
    rt, c = n // ROW_TILE, k // K_CHUNK
    fields = q.view(rt, 2, 8, c, 4, 2, 4, 2).permute(_FROM_MATRIX).contiguous()  # [RT, C, g, t, w, a, b, c]
    return pack_nibbles(fields.view(rt, c, 32, 4, 8).flatten(-2)).view(rt, c, 32, 4)


@dataclass(frozen=True)
class Int4Weight:
    """A 4-bit linear weight in the kernel layout; the ops accept it wherever they take a
    [N, K] weight tensor (`shape`, `dtype` and `device` answer as that tensor would)."""

    qweight: torch.Tensor  # int32 [N_pad / 16, K_pad / 64, 32, 4]
    scale_min: torch.Tensor  # dtype [K_pad / G, N_pad, 2]: (scale, additive term)
    out_features: int  # N
    in_features: int  # K
    group_size: int  # G

    @property
    def shape(self) -> tuple[int, int]:
        return self.out_features, self.in_features

    @property
    def dtype(self) -> torch.dtype:
        return self.scale_min.dtype

    @property
    def device(self) -> torch.device:
        return self.qweight.device

    @property
    def nbytes(self) -> int:
        return self.qweight.numel() * 4 + self.scale_min.numel() * self.scale_min.element_size()

    def values(self) -> torch.Tensor:
        """uint8 [N, K]: the int4 values q."""
        return _kernel_to_matrix(self.qweight)[: self.out_features, : self.in_features]

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """[N, K] in `dtype` (default: the activation dtype): q * s + m in float32, rounded once."""
        n, k, g = self.out_features, self.in_features, self.group_size
        q = self.values().float()  # [N, K]
        sm = self.scale_min[: k // g, :n].float()  # [K/G, N, 2]
        s = sm[..., 0].t().repeat_interleave(g, dim=1)  # [N, K]
        m = sm[..., 1].t().repeat_interleave(g, dim=1)
        return (q * s + m).to(dtype or self.dtype)

    @classmethod
    def from_rows(cls, rows: RowsInt4, dtype: torch.dtype, device: torch.device | str | None = None) -> "Int4Weight":
        """Repack a rows-layout weight for the kernels; scales and mins are rounded to `dtype`."""
        n, k = rows.shape
        g = rows.group_size
        check_group_size(g, k)
        device = torch.device(device) if device is not None else rows.qweight.device
        n_pad, k_pad = padded(n, ROW_TILE), padded(k, K_CHUNK)
        q = torch.zeros(n_pad, k_pad, dtype=torch.uint8, device=device)
        q[:n, :k] = unpack_nibbles(rows.qweight.to(device))
        scale_min = torch.zeros(k_pad // g, n_pad, 2, dtype=dtype, device=device)  # G | K and 64 | K_pad
        scale_min[: k // g, :n, 0] = rows.scales.to(device).t().to(dtype)
        scale_min[: k // g, :n, 1] = rows.mins.to(device).t().to(dtype)
        return cls(_matrix_to_kernel(q), scale_min, n, k, g)


def quantize_rtn(
    weight: torch.Tensor, group_size: int, symmetric: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round-to-nearest 4-bit quantization with integer zero points, as AWQ/GPTQ store it:
    (q uint8 [N, K], scales float32 [N, K/G], zeros uint8 [N, K/G]); W ~ (q - z) * s.
    symmetric: z = 8 and s = max|w| / 7 (GPTQ's sym=True)."""
    # weight: [N, K]
    n, k = weight.shape
    check_group_size(group_size, k)
    w = weight.float().reshape(n, k // group_size, group_size)
    if symmetric:
        scales = (w.abs().amax(-1) / 7).clamp(min=1e-8)
        zeros = torch.full_like(scales, 8)
    else:
        lo, hi = w.amin(-1).clamp(max=0), w.amax(-1).clamp(min=0)
        scales = ((hi - lo) / 15).clamp(min=1e-8)
        zeros = (-lo / scales).round().clamp(0, 15)
    q = (w / scales.unsqueeze(-1)).round().add(zeros.unsqueeze(-1)).clamp(0, 15)
    return q.reshape(n, k).to(torch.uint8), scales, zeros.to(torch.uint8)
