"""convert(): HF directory -> our safetensors directory, bad inputs, and the completion marker."""
from __future__ import annotations

import json
import stat

import pytest
import torch
from safetensors import safe_open
from tiny_models import reference_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmdeploy_sdk.convert import MARKER_NAME, convert, is_complete
from lmdeploy_sdk.errors import ModelLoadError


def _tensors(model_dir) -> dict[str, torch.Tensor]:
    out = {}
    for shard in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            out.update({name: f.get_tensor(name) for name in f.keys()})  # noqa: SIM118 (not a dict)
    return out


@pytest.fixture(scope="module")
def converted(tiny_llama, tmp_path_factory):
    return convert(tiny_llama, tmp_path_factory.mktemp("conv") / "out")


def test_weights_config_and_tokenizer_survive(tiny_llama, converted):
    src, dst = _tensors(tiny_llama), _tensors(converted)
    assert src.keys() == dst.keys()
    for name, tensor in src.items():
        assert torch.equal(tensor, dst[name]), name
    config = json.loads((converted / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config
    tok_src, tok_dst = AutoTokenizer.from_pretrained(tiny_llama), AutoTokenizer.from_pretrained(converted)
    assert tok_dst.chat_template == tok_src.chat_template and tok_dst.chat_template
    text = "Hello 世界 def f(x): return x"
    assert tok_dst.encode(text) == tok_src.encode(text)
    generation = json.loads((converted / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [tok_src.eos_token_id]


def test_marker_lists_every_file_and_output_is_world_readable(tiny_llama, converted):
    marker = json.loads((converted / MARKER_NAME).read_text())
    files = {p.name for p in converted.iterdir()} - {MARKER_NAME}
    assert set(marker["files"]) == files and "model.safetensors" in files
    assert marker["dtype"] == "float32"
    assert is_complete(converted, tiny_llama, "float32") and is_complete(converted, tiny_llama, "auto")
    assert not is_complete(converted, tiny_llama, "float16")
    assert stat.S_IMODE(converted.stat().st_mode) == 0o755
    assert stat.S_IMODE((converted / "model.safetensors").stat().st_mode) == 0o644


def test_incomplete_directories_are_detected(tiny_llama, tmp_path):
    out = convert(tiny_llama, tmp_path / "out")
    other_source = tmp_path / "other"
    other_source.mkdir()
    assert not is_complete(out, other_source, "auto")
    (out / "tokenizer.json").unlink()
    assert not is_complete(out, tiny_llama, "auto")
    (out / MARKER_NAME).unlink()
    assert not is_complete(out, tiny_llama, "auto")


def test_tied_embeddings_are_stored_once(tiny_model_factory, tmp_path):
    src = tiny_model_factory("LlamaForCausalLM", tie_word_embeddings=True)
    out = convert(src, tmp_path / "tied")
    assert "lm_head.weight" not in _tensors(out)
    ids = torch.tensor([[1, 5, 9, 42]])
    with torch.no_grad():
        expected = reference_model(src)(ids).logits
        actual = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)(ids).logits
    assert torch.equal(expected, actual)


def test_dtype_is_applied(tiny_llama, tmp_path):
    out = convert(tiny_llama, tmp_path / "half", dtype="bfloat16")
    assert {t.dtype for t in _tensors(out).values()} == {torch.bfloat16}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert is_complete(out, tiny_llama, "bfloat16")


def test_bad_inputs_raise_naming_the_value(tiny_llama, tmp_path):
    with pytest.raises(ValueError, match="'float8'"):
        convert(tiny_llama, tmp_path / "a", dtype="float8")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        convert(tmp_path / "nowhere", tmp_path / "b")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="empty"):
        convert(tmp_path / "empty", tmp_path / "c")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "file").write_text("x")
    with pytest.raises(FileExistsError, match="taken"):
        convert(tiny_llama, taken)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dirs left


def test_empty_destination_dir_is_accepted(tiny_llama, tmp_path):
    (tmp_path / "dst").mkdir()
    assert is_complete(convert(tiny_llama, tmp_path / "dst"), tiny_llama, "auto")


@pytest.fixture(scope="module")
def tiny_q4_gguf(tmp_path_factory):
    from gguf_files import Q, tiny_gguf

    return tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-q4_0.gguf", "llama", Q.Q4_0)


def test_keep_quantized_writes_q4_projections_4bit_and_the_rest_float(tiny_q4_gguf, tmp_path):
    out = convert(tiny_q4_gguf, tmp_path / "int4", keep_quantized=True)
    tensors = _tensors(out)
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"] == {"quant_method": "lmdeploy_int4", "bits": 4, "group_size": 32,
                                             "modules_to_not_convert": []}
    for layer in range(2):
        for proj in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                     "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
            name = f"model.layers.{layer}.{proj}"
            assert f"{name}.weight" not in tensors
            assert tensors[f"{name}.qweight"].dtype == torch.int32
            assert tensors[f"{name}.scales"].dtype == tensors[f"{name}.mins"].dtype == torch.float16
    assert tensors["model.embed_tokens.weight"].dtype == torch.float32
    assert tensors["model.layers.0.input_layernorm.weight"].dtype == torch.float32
    marker = json.loads((out / MARKER_NAME).read_text())
    assert marker["keep_quantized"] is True
    assert is_complete(out, tiny_q4_gguf, "auto", keep_quantized=True)
    assert not is_complete(out, tiny_q4_gguf, "auto")  # the float and 4-bit conversions are distinct entries


def test_float_conversion_of_a_gguf_is_not_a_4bit_entry(tiny_q4_gguf, tmp_path):
    out = convert(tiny_q4_gguf, tmp_path / "float")
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    assert "model.layers.0.mlp.down_proj.weight" in _tensors(out)
    assert is_complete(out, tiny_q4_gguf, "auto") and not is_complete(out, tiny_q4_gguf, "auto", keep_quantized=True)


def test_keep_quantized_needs_a_gguf_source(tiny_llama, tmp_path):
    with pytest.raises(ValueError, match=f"keep_quantized needs a .gguf source.*{tiny_llama}"):
        convert(tiny_llama, tmp_path / "x", keep_quantized=True)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temp dir
