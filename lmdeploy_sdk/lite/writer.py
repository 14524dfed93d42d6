"""Write a quantized model in AutoAWQ's GEMM layout, atomically.

Per projection (HF name, e.g. model.layers.0.self_attn.q_proj): `qweight` int32 [K, N/8] and
`qzeros` int32 [K/G, N/8] packed by quant.formats.awq_pack, `scales` fp16 [K/G, N];
everything else fp16 (a tied lm_head is not written). config.json carries AutoAWQ's
quantization_config. The directory is built beside work_dir and renamed into place, so a
killed run leaves no half-written model at work_dir.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmdeploy_sdk.convert import MAX_SHARD_SIZE, temp_prefix
from lmdeploy_sdk.quant.formats import awq_pack

# (q uint8 [N, K], scales float32 [N, K/G], zeros uint8 [N, K/G]) as quant.int4.quantize_rtn returns
Quantized = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def check_work_dir(work_dir: str | os.PathLike) -> Path:
    """work_dir as a Path; FileExistsError if it exists and is not an empty directory."""
    dst = Path(work_dir).expanduser()
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise FileExistsError(f"work_dir {dst} already exists and is not empty; choose a new directory")
    return dst


@contextmanager
def building(work_dir: str | os.PathLike) -> Iterator[Path]:
    """A temp directory beside work_dir that becomes work_dir when the block succeeds."""
    dst = check_work_dir(work_dir)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=temp_prefix(dst)))
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp makes it owner-only; a model directory is ordinary data
        check_work_dir(dst)  # still free?
        if dst.exists():
            dst.rmdir()
        os.replace(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def awq_tensors(prefix: str, quantized: Quantized) -> dict[str, torch.Tensor]:
    """A projection's AutoAWQ tensors from (q [N, K], scales [N, K/G], zeros [N, K/G])."""
    q, scales, zeros = quantized
    return {
        f"{prefix}.qweight": awq_pack(q.t().contiguous().cpu()),  # [K, N/8]
        f"{prefix}.qzeros": awq_pack(zeros.t().contiguous().cpu()),  # [K/G, N/8]
        f"{prefix}.scales": scales.t().contiguous().cpu().half(),  # [K/G, N]
    }


def quantization_config(group_size: int) -> dict[str, Any]:
    return {"quant_method": "awq", "bits": 4, "group_size": group_size, "zero_point": True, "version": "gemm",
            "modules_to_not_convert": None}


def write_awq_model(
    model: nn.Module, tokenizer: Any, quantized: dict[str, Quantized], group_size: int, out: Path
) -> None:
    """Write `model` into the directory `out` with the projections in `quantized` (HF module
    name -> quantize_rtn's result) in AutoAWQ's layout and every other tensor in fp16."""
    from huggingface_hub import save_torch_state_dict

    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    state: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        if name.removesuffix(".weight") in quantized or (tied and name == "lm_head.weight"):
            continue  # a projection's weight (its bias stays, fp16, as AutoAWQ keeps it)
        state[name] = tensor.detach().cpu().half().contiguous() if tensor.is_floating_point() else tensor.cpu()
    for module, value in quantized.items():
        state.update(awq_tensors(module, value))
    save_torch_state_dict(state, out, max_shard_size=MAX_SHARD_SIZE, metadata={"format": "pt"})
    config = model.config
    config.quantization_config = quantization_config(group_size)
    config.dtype = torch.float16
    config.architectures = [type(model).__name__]
    config.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    tokenizer.save_pretrained(out)
