"""Convert a GGUF file or a HF directory into our HF-style safetensors model directory.

The output holds config.json, generation_config.json (with every eos id), the
tokenizer files with the chat template, and safetensors weights. It is built in a
temp directory beside the destination and renamed into place, with a marker file
written last, so a reader never sees a half-written model (see `is_complete`).
With `keep_quantized`, a GGUF file's Q4_0 / Q4_1 decoder projections are written 4-bit
(gguf_int4.py) rather than dequantized, and the directory loads as a 4-bit model.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from lmdeploy_sdk.errors import ModelLoadError
from lmdeploy_sdk.version import __version__

MARKER_NAME = ".lmdeploy_sdk_convert.json"
FORMAT_VERSION = 1  # bump when the output layout changes, so cached conversions are rebuilt
DTYPES = ("auto", "float32", "float16", "bfloat16")
MAX_SHARD_SIZE = "2GB"


def temp_prefix(dst: Path) -> str:
    """Name prefix of the temp dirs that build `dst` (also used to find leftovers of killed runs)."""
    return f".{dst.name}.lmdeploy-sdk-tmp."


def convert(
    src: str | os.PathLike,
    dst_path: str | os.PathLike,
    dtype: str = "auto",
    *,
    keep_quantized: bool = False,
    desc: str = "converting",
) -> Path:
    """Write the model at `src` (a .gguf file or a HF directory) to the new directory `dst_path`.

    dtype 'auto' keeps float32 for GGUF (its dequantized values are not exact in 16 bits)
    and the checkpoint's own dtype for a HF directory; it applies to every float tensor.
    keep_quantized (GGUF only): decoder projections stored as Q4_0 / Q4_1 are written in our
    4-bit layout straight from their blocks (exactly the same weights); projections of other
    types, and fused groups (q/k/v, gate/up) that mix types, stay float.
    """
    src, dst = Path(src).expanduser(), Path(dst_path).expanduser()
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if not src.exists():
        raise FileNotFoundError(f"conversion source {src} does not exist")
    if not is_gguf(src) and not (src.is_dir() and (src / "config.json").is_file()):
        raise ModelLoadError(f"cannot convert {src}: expected a .gguf file or a HF directory with config.json")
    if keep_quantized and not is_gguf(src):
        raise ValueError(f"keep_quantized needs a .gguf source (its Q4_0/Q4_1 weights), got {src}")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise FileExistsError(f"destination {dst} already exists and is not empty")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=temp_prefix(dst)))
    try:
        with tqdm(total=5 if keep_quantized else 4, desc=desc, unit="step") as bar:
            model, tokenizer = _load(src, dtype, bar)
            state, quantization_config = _unique_tensors(model.state_dict()), None
            if keep_quantized:
                state, quantization_config = _keep_q4(src, model, state, bar)
            files = _write(model, state, quantization_config, tokenizer, tmp, bar)
        marker = _marker(src, str(model.dtype).removeprefix("torch."), keep_quantized, files)
        (tmp / MARKER_NAME).write_text(json.dumps(marker, indent=2))  # last: it says "complete"
        _make_readable(tmp)
        if dst.exists():
            dst.rmdir()  # empty (checked above); os.replace needs it gone
        os.replace(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dst


def is_complete(model_dir: Path, src: Path, dtype: str, keep_quantized: bool = False) -> bool:
    """Whether `model_dir` is a finished conversion of `src` (this file, size, dtype and
    keep_quantized) by this format."""
    try:
        marker = json.loads((Path(model_dir) / MARKER_NAME).read_text())
        stat = Path(src).stat()
    except (OSError, ValueError):
        return False
    return (
        marker.get("format_version") == FORMAT_VERSION
        and marker.get("source") == str(Path(src).resolve())
        and marker.get("source_size") == stat.st_size
        and (dtype == "auto" or marker.get("dtype") == dtype)
        and bool(marker.get("keep_quantized", False)) == keep_quantized
        and isinstance(marker.get("files"), list)
        and all((Path(model_dir) / name).is_file() for name in marker["files"])
    )


def is_gguf(src: Path) -> bool:
    """Whether `src` is a GGUF file (by its suffix, as transformers' loader needs it)."""
    return src.is_file() and src.suffix.lower() == ".gguf"


def _torch_dtype(dtype: str, src: Path) -> torch.dtype | str:
    if dtype == "auto":
        return torch.float32 if is_gguf(src) else "auto"
    return getattr(torch, dtype)


def _load(src: Path, dtype: str, bar: tqdm) -> tuple[Any, Any]:
    """(transformers model, tokenizer) for a GGUF file (dequantized) or a HF directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = {"pretrained_model_name_or_path": src.parent, "gguf_file": src.name} if is_gguf(src) else {
        "pretrained_model_name_or_path": src}
    try:
        bar.set_postfix_str("reading weights")
        model = AutoModelForCausalLM.from_pretrained(**where, dtype=_torch_dtype(dtype, src))
        bar.update()
        bar.set_postfix_str("reading tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(**where)
        bar.update()
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot read model {src}: {exc}") from exc
    return model, tokenizer


def _keep_q4(
    src: Path, model: Any, state: dict[str, torch.Tensor], bar: tqdm,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """`state` with the GGUF file's Q4 decoder projections in 4-bit form, and the quantization_config."""
    from lmdeploy_sdk.gguf_int4 import read_q4_projections

    bar.set_postfix_str("packing 4-bit weights")
    q4 = read_q4_projections(src, model)
    quantized = {f"{module}.weight" for module in q4.quantized}
    state = {name: t for name, t in state.items() if name not in quantized} | q4.tensors
    if q4.kept_float:
        bar.write(f"note: {len(q4.kept_float)} decoder projections are not Q4_0/Q4_1 (or share a fused "
                  f"group with one that is not) and stay float: {', '.join(q4.kept_float)}")
    bar.update()
    return state, q4.quantization_config()


def _write(
    model: Any, state: dict[str, torch.Tensor], quantization_config: dict[str, Any] | None, tokenizer: Any,
    out: Path, bar: tqdm,
) -> list[str]:
    """Weights (`state`), config, generation config and tokenizer into `out`; returns the files written."""
    from huggingface_hub import save_torch_state_dict

    bar.set_postfix_str("writing weights")
    save_torch_state_dict(state, out, max_shard_size=MAX_SHARD_SIZE, metadata={"format": "pt"})
    bar.update()
    bar.set_postfix_str("writing config and tokenizer")
    config = model.config
    if hasattr(config, "quantization_config"):  # GGUF loading marks the (already dequantized) model
        del config.quantization_config
    if quantization_config is not None:
        config.quantization_config = quantization_config
    config.architectures = [type(model).__name__]
    config.dtype = model.dtype
    config.save_pretrained(out)
    generation_config = model.generation_config
    generation_config.eos_token_id = _eos_ids(config, generation_config, tokenizer)
    generation_config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if not getattr(tokenizer, "chat_template", None):
        bar.write(f"note: {out.name} has no chat template; prompts will be used as is")
    bar.update()
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def _unique_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop later names of shared storage (tied lm_head), keeping the first, as HF checkpoints do."""
    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    unique = {}
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key not in seen:
            seen.add(key)
            unique[name] = tensor
    return unique


def _eos_ids(config: Any, generation_config: Any, tokenizer: Any) -> list[int]:
    """Every token id that should end generation: the config's, the generation config's and the tokenizer's."""
    ids: set[int] = set()
    for value in (config.eos_token_id, generation_config.eos_token_id, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    return sorted(ids)


def _make_readable(out: Path) -> None:
    """temp dirs and files are created owner-only; a model directory is ordinary data."""
    out.chmod(0o755)
    for path in out.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _marker(src: Path, dtype: str, keep_quantized: bool, files: list[str]) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "source": str(src.resolve()),
        "source_size": src.stat().st_size,
        "dtype": dtype,
        "keep_quantized": keep_quantized,
        "files": files,
        "lmdeploy_sdk_version": __version__,
    }
