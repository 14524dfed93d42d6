"""`auto_awq`: quantize a float model to 4-bit weights with AWQ, one decoder layer at a
time, and write it in AutoAWQ's layout (LMDeploy's `lmdeploy.lite.apis.auto_awq`)."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from tqdm.auto import tqdm

from lmdeploy_sdk.lite.awq import AwqSettings, quantize_layer
from lmdeploy_sdk.lite.calibration import DEFAULT_CALIB_DATASET, calib_tokens, check_calibration
from lmdeploy_sdk.lite.model import (
    PROJECTIONS,
    check_model,
    decoder_layers,
    first_layer_inputs,
    load_float_model,
)
from lmdeploy_sdk.lite.writer import Quantized, building, check_work_dir, write_awq_model
from lmdeploy_sdk.model_source import resolve_model_path
from lmdeploy_sdk.quant.int4 import quantize_rtn

SUPPORTED_BITS = (4,)


def _device(device: str | None) -> torch.device:
    """The calibration device; ValueError for a name torch does not know or CUDA that is absent."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device={device!r} is not a device name (e.g. 'cuda', 'cuda:1', 'cpu')") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available here; use device='cpu'")
    return dev


def _check_bits(w_bits: int) -> None:
    if w_bits not in SUPPORTED_BITS:
        raise ValueError(f"w_bits={w_bits} is not supported; only 4-bit weights (w_bits=4)")


def auto_awq(
    model: str | os.PathLike,
    work_dir: str | os.PathLike = "./work_dir",
    calib_dataset: str = DEFAULT_CALIB_DATASET,
    calib_samples: int = 128,
    calib_seqlen: int = 2048,
    batch_size: int = 1,
    w_bits: int = 4,
    w_sym: bool = False,
    w_group_size: int = 128,
    search_scale: bool = False,
    device: str | None = None,
    dtype: str = "auto",
) -> Path:
    """Quantize `model` (a HF directory or an embedded model name) with AWQ into `work_dir`;
    returns work_dir. `pipeline(work_dir)` and `serve api_server work_dir` load the result.

    calib_dataset: 'moby-dick' (shipped), 'random', or a .txt / .jsonl ("text" field) path.
    calib_samples windows of calib_seqlen tokens run through the model batch_size at a time.
    w_sym: symmetric int4 (zero point 8). search_scale: grid-search the scale exponent per
    group (slower, usually better) instead of using 0.5. device: where each layer is
    calibrated (default: cuda if available). dtype: 'auto' (float32 on CPU, the checkpoint's
    dtype on GPU), 'float16', 'bfloat16' or 'float32'.
    """
    _check_bits(w_bits)
    check_work_dir(work_dir)
    check_calibration(calib_dataset, calib_samples, calib_seqlen, batch_size)
    dev = _device(device)
    model_dir = resolve_model_path(model)
    check_model(model_dir, w_group_size)
    settings = AwqSettings(group_size=w_group_size, symmetric=w_sym, search_scale=search_scale)
    float_model, tokenizer = load_float_model(model_dir, dtype, dev)
    tokens = calib_tokens(calib_dataset, tokenizer, calib_samples, calib_seqlen)  # [n, T]
    inputs = first_layer_inputs(float_model, tokens, batch_size, dev)
    quantized: dict[str, Quantized] = {}
    layers = decoder_layers(float_model)
    for i, layer in enumerate(tqdm(layers, desc="AWQ", unit="layer")):
        layer.to(dev)
        inputs.hidden, per_layer = quantize_layer(layer, inputs, settings)
        layer.to("cpu")
        quantized.update({f"model.layers.{i}.{name}": tuple(t.cpu() for t in value)
                          for name, value in per_layer.items()})
    with building(work_dir) as out:
        write_awq_model(float_model, tokenizer, quantized, w_group_size, out)
    return Path(work_dir).expanduser()


def rtn_quantize(
    model: str | os.PathLike, work_dir: str | os.PathLike, w_group_size: int = 128, w_sym: bool = False,
    dtype: str = "auto",
) -> Path:
    """The baseline AWQ is measured against: plain round-to-nearest int4 with integer zero points
    (no scales, no clipping), written in the same AutoAWQ layout."""
    check_work_dir(work_dir)
    model_dir = resolve_model_path(model)
    check_model(model_dir, w_group_size)
    float_model, tokenizer = load_float_model(model_dir, dtype, torch.device("cpu"))
    quantized = {}
    for i, layer in enumerate(decoder_layers(float_model)):
        for name in PROJECTIONS:
            weight = layer.get_submodule(name).weight
            quantized[f"model.layers.{i}.{name}"] = quantize_rtn(weight, w_group_size, w_sym)
    with building(work_dir) as out:
        write_awq_model(float_model, tokenizer, quantized, w_group_size, out)
    return Path(work_dir).expanduser()

