"""4-bit checkpoints written the way AutoAWQ and AutoGPTQ write them, independently of
lmdeploy_sdk.quant (numpy bit twiddling from their documented layouts), plus the float
twin of the same weights (dequantized) for transformers to run as the reference.

AutoAWQ (GEMM): qweight int32 [K, N/8] and qzeros int32 [K/G, N/8], where nibble j
(bits 4j..4j+3) of word w holds column 8w + (0, 2, 4, 6, 1, 3, 5, 7)[j]; scales fp16
[K/G, N]; W = (q - z) * s.
AutoGPTQ ("v1"): qweight int32 [K/8, N], nibble i of word r holds row 8r + i; qzeros
int32 [K/G, N/8], nibble i of word c holds column 8c + i, storing z - 1; scales [K/G, N];
g_idx int32 [K] = k // G.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
_AWQ_COLUMN_OF_NIBBLE = (0, 2, 4, 6, 1, 3, 5, 7)


def _pack_words(values: np.ndarray, column_of_nibble=tuple(range(8))) -> np.ndarray:
    """uint8 [R, C] -> int32 [R, C/8]: nibble j of word w holds column 8w + column_of_nibble[j]."""
    r, c = values.shape
    out = np.zeros((r, c // 8), dtype=np.uint32)
    for j, col in enumerate(column_of_nibble):
        out |= values[:, col::8].astype(np.uint32) << np.uint32(4 * j)
    return out.view(np.int32)


def _quantize(w: torch.Tensor, group: int, rng: np.random.Generator):
    """Integer q, z and fp16 s near w (round to nearest, asymmetric), and the exact dequantized W."""
    n, k = w.shape
    wg = w.double().numpy().reshape(n, k // group, group)
    lo, hi = np.minimum(wg.min(-1), 0), np.maximum(wg.max(-1), 0)
    s = np.float16((hi - lo) / 15 + 1e-6).astype(np.float64)  # [N, K/G], fp16 values
    z = np.clip(np.round(-lo / s), 0, 15)
    q = np.clip(np.round(wg / s[..., None]) + z[..., None], 0, 15)
    deq = ((q - z[..., None]) * s[..., None]).reshape(n, k)
    return q.reshape(n, k).astype(np.uint8), z.astype(np.uint8), s, torch.from_numpy(deq).float()


def write_quantized(src: Path, out: Path, method: str, group: int = 32, seed: int = 0) -> Path:
    """A 4-bit copy of the float checkpoint `src` (a tiny transformers model dir) in `method`
    ('awq' or 'gptq') layout at `out`, and its dequantized float twin at out / 'dequantized'."""
    from safetensors.torch import load_file

    rng = np.random.default_rng(seed)
    state = load_file(str(src / "model.safetensors"))
    quantized: dict[str, torch.Tensor] = {}
    twin = dict(state)
    for name, w in state.items():
        if not name.endswith(".weight") or not any(p in name for p in PROJECTIONS):
            quantized[name] = w
            continue
        prefix = name.removesuffix(".weight")
        q, z, s, deq = _quantize(w, group, rng)  # q [N, K], z [N, K/G], s [N, K/G]
        twin[name] = deq
        if method == "awq":
            quantized[prefix + ".qweight"] = torch.from_numpy(_pack_words(q.T.copy(), _AWQ_COLUMN_OF_NIBBLE))
            quantized[prefix + ".qzeros"] = torch.from_numpy(_pack_words(z.T.copy(), _AWQ_COLUMN_OF_NIBBLE))
        else:
            quantized[prefix + ".qweight"] = torch.from_numpy(_pack_words(q.copy()).T.copy())  # [K/8, N]
            quantized[prefix + ".qzeros"] = torch.from_numpy(_pack_words((z.T - 1).astype(np.uint8)))
            quantized[prefix + ".g_idx"] = torch.arange(w.shape[1], dtype=torch.int32) // group
        quantized[prefix + ".scales"] = torch.from_numpy(s.T.copy()).half()
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in quantized.items()}, str(out / "model.safetensors"))
    config = json.loads((src / "config.json").read_text())
    if method == "awq":
        config["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": group,
                                         "zero_point": True, "version": "gemm"}
    else:
        config["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": group,
                                         "desc_act": False, "sym": False}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    twin_dir = out / "dequantized"
    twin_dir.mkdir()
    save_file({k: v.contiguous() for k, v in twin.items()}, str(twin_dir / "model.safetensors"))
    for f in src.iterdir():
        if f.is_file() and f.name not in ("model.safetensors", "config.json"):
            shutil.copy(f, out / f.name)
            shutil.copy(f, twin_dir / f.name)
    (twin_dir / "config.json").write_text((src / "config.json").read_text())
    return out
