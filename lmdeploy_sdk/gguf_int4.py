"""GGUF Q4_0 / Q4_1 decoder projections -> our 4-bit checkpoint tensors, from the block bytes.

`lmdeploy-sdk convert --keep-quantized` uses this so a GGUF Q4 file runs 4-bit without a
round trip through float (and without re-quantization error). What it reuses, so that it
reads a file exactly as transformers' GGUF loader does:
- names: transformers' `get_gguf_hf_weights_map` (gguf-py's tensor name map per architecture,
  e.g. blk.3.attn_q.weight -> model.layers.3.self_attn.q_proj.weight);
- row order: llama.cpp stores llama-family q_proj / k_proj rows permuted for its RoPE (HF row
  (head, half, i) of a head's two rotary halves is GGUF row (head, i, half): the halves
  interleaved); transformers' `LlamaTensorProcessor` undoes it on the dequantized weight (per
  kv head for k). We run that same processor on the row indices (an [N, 1] array), which gives
  the row order to apply to qweight / scales / mins (a whole row moves, blocks and all);
- decoding: `lmdeploy_sdk.quant.formats.gguf_q4_rows`.
Every packed projection is checked to dequantize to the very weight transformers read.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from lmdeploy_sdk.errors import ModelLoadError
from lmdeploy_sdk.quant.formats import GGUF_BLOCK, gguf_q4_rows
from lmdeploy_sdk.quant.int4 import RowsInt4

Q4_TYPES = ("Q4_0", "Q4_1")
QUANT_METHOD = "lmdeploy_int4"
PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
# Projections our models fuse into one linear: all 4-bit or all float.
FUSED_GROUPS = (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("mlp.gate_proj", "mlp.up_proj"))
_PROJECTION = re.compile(r"(?P<layer>.+\.layers\.\d+)\.(?P<proj>" + "|".join(map(re.escape, PROJECTIONS)) + r")")


@dataclass(frozen=True)
class Q4Projections:
    """What a GGUF file's decoder projections become in a 4-bit model directory."""

    tensors: dict[str, torch.Tensor]  # '<module>.qweight' int32 [N, K/8]; '.scales', '.mins' float16 [N, K/32]
    quantized: tuple[str, ...]  # modules written 4-bit (their '.weight' is dropped)
    kept_float: tuple[str, ...]  # decoder projections left float (other types, or a mixed fused group)

    def quantization_config(self) -> dict[str, Any]:
        """config.json's quantization_config for these tensors (quant.config reads it)."""
        return {"quant_method": QUANT_METHOD, "bits": 4, "group_size": GGUF_BLOCK,
                "modules_to_not_convert": list(self.kept_float)}


@dataclass(frozen=True)
class _Candidate:
    tensor: Any  # gguf.ReaderTensor
    module: str  # HF module name, e.g. model.layers.0.self_attn.q_proj
    order: np.ndarray | None  # int64 [N]: HF row r is GGUF row order[r]; None: cannot be kept 4-bit


def read_q4_projections(gguf_path: str | Path, hf_model: Any) -> Q4Projections:
    """The Q4_0 / Q4_1 decoder projections of `gguf_path` in our rows layout, row order and names
    as `hf_model` (transformers' model loaded from that same file) has them.

    ModelLoadError if the file has no decoder projection that can stay 4-bit.
    """
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path))
    processor = _tensor_processor(reader, hf_model)
    names = _weights_map(hf_model, processor)
    weights = dict(hf_model.named_parameters(remove_duplicate=False))
    candidates: dict[str, _Candidate] = {}
    for tensor in reader.tensors:
        hf_name = names.get(tensor.name, "")
        if hf_name.endswith(".weight") and _PROJECTION.fullmatch(module := hf_name.removesuffix(".weight")):
            candidates[module] = _Candidate(tensor, module, _row_order(tensor, processor, weights[hf_name]))
    keep = _four_bit_modules(candidates)
    if not keep:
        kinds = sorted({c.tensor.tensor_type.name for c in candidates.values()})
        raise ModelLoadError(
            f"{gguf_path} has no decoder projection that can stay 4-bit (their GGUF types: {', '.join(kinds) or 'none'}; "
            f"only {' and '.join(Q4_TYPES)} can); convert it without keep_quantized (--keep-quantized)"
        )
    tensors: dict[str, torch.Tensor] = {}
    for module in tqdm(keep, desc="packing 4-bit weights", unit="tensor", leave=False):
        tensors.update(_pack(candidates[module], weights[f"{module}.weight"]))
    kept_float = tuple(sorted(set(candidates) - set(keep)))
    return Q4Projections(tensors, tuple(keep), kept_float)


def _tensor_processor(reader: Any, hf_model: Any) -> Any:
    """transformers' per-architecture GGUF tensor processor, as its loader builds it."""
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor

    arch = reader.fields["general.architecture"].contents()
    return TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=hf_model.config.to_dict())


def _weights_map(hf_model: Any, processor: Any) -> dict[str, str]:
    """GGUF tensor name -> HF parameter name (gguf-py's map, as transformers applies it)."""
    from transformers.modeling_gguf_pytorch_utils import get_gguf_hf_weights_map

    return get_gguf_hf_weights_map(hf_model, processor)


def _row_order(tensor: Any, processor: Any, weight: torch.Tensor) -> np.ndarray | None:
    """The HF row order of `tensor`'s rows (transformers' processing applied to row indices), or
    None when it cannot stay 4-bit: not Q4_0/Q4_1, another shape, or a processing that is more
    than a row permutation."""
    if tensor.tensor_type.name not in Q4_TYPES:
        return None
    n, k = tensor.data.shape[0], int(tensor.shape[0])  # GGUF shapes are [K, N]
    if tuple(weight.shape) != (n, k):
        return None
    rows = np.arange(n, dtype=np.int64).reshape(n, 1)  # [N, 1]: row r holds r
    order = np.asarray(processor.process(weights=rows, name=tensor.name).weights).reshape(-1)
    if order.shape != (n,) or not np.array_equal(np.sort(order), np.arange(n)):
        return None
    return order


def _four_bit_modules(candidates: dict[str, _Candidate]) -> list[str]:
    """Modules that stay 4-bit: Q4 themselves, and for a fused group every member of it."""
    keep = []
    for module, cand in candidates.items():
        if cand.order is None:
            continue
        layer, proj = _PROJECTION.fullmatch(module).group("layer", "proj")
        group = next((g for g in FUSED_GROUPS if proj in g), (proj,))
        members = [candidates.get(f"{layer}.{p}") for p in group]
        if all(m is not None and m.order is not None for m in members):
            keep.append(module)
    return keep


def _pack(cand: _Candidate, weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """The rows-layout tensors of one projection, in HF row order; checked against `weight`
    (transformers' dequantized [N, K] weight of the same tensor)."""
    n, k = weight.shape
    kind = cand.tensor.tensor_type.name
    rows = gguf_q4_rows(np.array(cand.tensor.data), kind, (n, k))  # a copy: the reader's memmap is read-only
    order = torch.from_numpy(cand.order)
    qweight = rows.qweight[order].contiguous()  # int32 [N, K/8]
    scales = rows.scales[order].half()  # [N, K/32], GGUF's own fp16 d (exact)
    mins = rows.mins[order].half()  # Q4_1: its fp16 m; Q4_0: -8 d (exact unless it overflows)
    stored = RowsInt4(qweight, scales.float(), mins.float()).dequantize().to(weight.dtype)  # [N, K]
    if not torch.equal(stored, weight):
        raise ModelLoadError(
            f"GGUF tensor {cand.tensor.name} ({kind}) does not repack exactly into 4-bit {cand.module} "
            f"(max difference {(stored - weight).abs().max().item():.3g}); convert it without keep_quantized"
        )
    return {f"{cand.module}.qweight": qweight, f"{cand.module}.scales": scales, f"{cand.module}.mins": mins}
