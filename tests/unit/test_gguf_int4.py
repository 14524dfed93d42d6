"""GGUF Q4_0 / Q4_1 -> rows layout: exact against gguf-py's dequantization, and gguf_int4's
names, llama q/k row order and fused-group rule against transformers' GGUF loader."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader, quants
from gguf_files import MIXED, Q, smollm2_gguf, tiny_gguf
from transformers import AutoModelForCausalLM

from lmdeploy_sdk.errors import ModelLoadError
from lmdeploy_sdk.gguf_int4 import read_q4_projections
from lmdeploy_sdk.quant.formats import gguf_q4_rows
from lmdeploy_sdk.quant.int4 import RowsInt4

Q4 = [GGMLQuantizationType.Q4_0, GGMLQuantizationType.Q4_1]
# [N, K] of SmolLM2's projections (q/o, k/v, gate/up, down) and small odd ones
SHAPES = [(576, 576), (192, 576), (1536, 576), (576, 1536), (1, 32), (7, 96)]


def _rows(blocks: np.ndarray, kind: GGMLQuantizationType, shape: tuple[int, int]) -> RowsInt4:
    with warnings.catch_warnings():  # torch warns that a read-only memmap is not writable; it is only read
        warnings.simplefilter("ignore", UserWarning)
        return gguf_q4_rows(blocks, kind.name, shape)


@pytest.mark.parametrize("kind", Q4, ids=lambda k: k.name)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_rows_dequantize_exactly_as_gguf_py(kind, shape):
    rng = np.random.default_rng(sum(shape))
    w = rng.standard_normal(shape).astype(np.float32) * rng.choice([1e-3, 0.02, 1.0, 300.0], size=(shape[0], 1))
    w[0, :32] = 0.0  # an all-zero block (d = 0)
    w[-1, -32:] = 0.5  # a constant block
    blocks = quants.quantize(w, kind)  # uint8 [N, K / 32 * block bytes]
    want = torch.from_numpy(quants.dequantize(blocks, kind))
    assert torch.equal(_rows(blocks, kind, shape).dequantize(), want)


def test_every_projection_kind_of_the_embedded_model_dequantizes_exactly():
    reader = GGUFReader(str(smollm2_gguf()))
    q4 = [t for t in reader.tensors if t.tensor_type in Q4 and t.name.startswith(("blk.0.", "blk.29."))]
    assert len(q4) == 2 * 7  # q, k, v, o, gate, up, down of the first and last layer
    for t in q4:
        rows = _rows(t.data, t.tensor_type, (t.data.shape[0], int(t.shape[0])))
        assert torch.equal(rows.dequantize(), torch.from_numpy(quants.dequantize(t.data, t.tensor_type))), t.name


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """make(arch, q4, kind_of) -> (gguf path, transformers model read from it)."""
    cache = {}

    def make(arch="llama", q4=Q.Q4_0, kind_of=None):
        key = (arch, q4, tuple(sorted((kind_of or {}).items())))
        if key not in cache:
            out = tmp_path_factory.mktemp(f"gguf-{arch}")
            path = tiny_gguf(out / "model.gguf", arch, q4, kind_of)
            model = AutoModelForCausalLM.from_pretrained(out, gguf_file=path.name, dtype=torch.float32)
            cache[key] = path, model
        return cache[key]

    return make


def _stored(q4, module: str) -> torch.Tensor:
    t = q4.tensors
    return RowsInt4(t[f"{module}.qweight"], t[f"{module}.scales"].float(), t[f"{module}.mins"].float()).dequantize()


@pytest.mark.parametrize("arch, q4kind", [("llama", Q.Q4_0), ("qwen2", Q.Q4_1)], ids=["llama-Q4_0", "qwen2-Q4_1"])
def test_projections_equal_transformers_weights_in_its_names_and_row_order(arch, q4kind, tiny):
    path, model = tiny(arch, q4kind)
    q4 = read_q4_projections(path, model)
    weights = dict(model.named_parameters())
    assert len(q4.quantized) == 2 * 7 and q4.kept_float == ()
    for module in q4.quantized:
        assert f"{module}.weight" in weights
        n, k = weights[f"{module}.weight"].shape
        assert q4.tensors[f"{module}.qweight"].dtype == torch.int32 and q4.tensors[f"{module}.qweight"].shape == (n, k // 8)
        assert {q4.tensors[f"{module}.{s}"].dtype for s in ("scales", "mins")} == {torch.float16}
        assert q4.tensors[f"{module}.scales"].shape == (n, k // 32)
        assert torch.equal(_stored(q4, module), weights[f"{module}.weight"]), module
    assert q4.quantization_config() == {"quant_method": "lmdeploy_int4", "bits": 4, "group_size": 32,
                                        "modules_to_not_convert": []}


def test_llama_q_and_k_rows_are_unpermuted():
    """llama.cpp's (head, pair, half) row order of q/k, undone: HF row (h, half, i) is GGUF row (h, i, half)."""
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    from lmdeploy_sdk.gguf_int4 import _row_order

    class Tensor:  # what _row_order reads of a gguf ReaderTensor
        def __init__(self, name, n, k):
            self.name, self.shape, self.data = name, np.array([k, n]), np.zeros((n, k // 32 * 20), np.uint8)
            self.tensor_type = Q.Q4_1

    heads, kv_heads, dim = 4, 2, 16
    proc = LlamaTensorProcessor(config={"num_attention_heads": heads, "num_key_value_heads": kv_heads})
    for name, h in (("blk.0.attn_q.weight", heads), ("blk.0.attn_k.weight", kv_heads)):
        order = _row_order(Tensor(name, h * dim, 64), proc, torch.empty(h * dim, 64))
        want = np.arange(h * dim).reshape(h, dim // 2, 2).transpose(0, 2, 1).reshape(-1)
        assert np.array_equal(order, want)
    assert np.array_equal(_row_order(Tensor("blk.0.attn_v.weight", 32, 64), proc, torch.empty(32, 64)), np.arange(32))


def test_mixed_types_stay_float_with_their_whole_fused_group(tiny):
    path, model = tiny("llama", Q.Q4_1, MIXED)
    q4 = read_q4_projections(path, model)
    assert q4.kept_float == ("model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.q_proj",
                             "model.layers.0.self_attn.v_proj", "model.layers.1.mlp.down_proj")
    assert "model.layers.0.self_attn.o_proj" in q4.quantized and "model.layers.1.mlp.up_proj" in q4.quantized
    assert len(q4.quantized) == 14 - 4
    assert q4.quantization_config()["modules_to_not_convert"] == list(q4.kept_float)


def test_a_file_without_q4_projections_is_refused_naming_its_types(tiny):
    path, model = tiny("llama", Q.Q8_0)
    with pytest.raises(ModelLoadError, match=r"no decoder projection that can stay 4-bit.*Q8_0"):
        read_q4_projections(path, model)
