"""Loading safetensors checkpoints: shards, file discovery, and errors that name the bad tensors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_models import reference_model

from lmdeploy_sdk.models import CheckpointError, build_model
from lmdeploy_sdk.models.checkpoint import INDEX_FILE


def _copy_config(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "config.json", dst / "config.json")
    return dst


def _with_tensors(src: Path, dst: Path, edit) -> Path:
    """A copy of checkpoint `src` whose tensors went through `edit(dict) -> None`."""
    tensors = load_file(src / "model.safetensors")
    edit(tensors)
    save_file(tensors, str(_copy_config(src, dst) / "model.safetensors"))
    return dst


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    assert pa.keys() == pb.keys()
    for name in pa:
        assert torch.equal(pa[name], pb[name]), name


def test_sharded_checkpoint_with_index_and_progress_bar(tmp_path, tiny_llama, capsys):
    reference_model(tiny_llama).save_pretrained(tmp_path, max_shard_size="5MB")
    capsys.readouterr()
    shards = set(json.loads((tmp_path / INDEX_FILE).read_text())["weight_map"].values())
    assert len(shards) > 1
    sharded = build_model(tmp_path, torch.float32, "cpu")
    assert "Loading weights" in capsys.readouterr().err
    single = build_model(tiny_llama, torch.float32, "cpu")
    assert "Loading weights" not in capsys.readouterr().err  # one shard: no bar
    _assert_same_weights(sharded, single)


def test_index_naming_a_missing_shard(tmp_path, tiny_llama):
    reference_model(tiny_llama).save_pretrained(tmp_path, max_shard_size="5MB")
    victim = sorted(tmp_path.glob("*.safetensors"))[-1]
    victim.unlink()
    with pytest.raises(CheckpointError, match=victim.name):
        build_model(tmp_path, torch.float32, "cpu")


def test_single_safetensors_file_of_any_name(tmp_path, tiny_llama):
    shutil.copy(tiny_llama / "model.safetensors", _copy_config(tiny_llama, tmp_path) / "weights.safetensors")
    _assert_same_weights(build_model(tmp_path, torch.float32, "cpu"), build_model(tiny_llama, torch.float32, "cpu"))


def test_no_weights(tmp_path, tiny_llama):
    with pytest.raises(CheckpointError, match=r"no \*\.safetensors"):
        build_model(_copy_config(tiny_llama, tmp_path), torch.float32, "cpu")


def test_missing_tensor_is_named(tmp_path, tiny_llama):
    _with_tensors(tiny_llama, tmp_path, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(CheckpointError, match=r"missing tensors: model\.layers\.1\.mlp\.up_proj\.weight"):
        build_model(tmp_path, torch.float32, "cpu")


def test_unexpected_tensor_is_named(tmp_path, tiny_llama):
    _with_tensors(tiny_llama, tmp_path, lambda t: t.update({"model.layers.0.extra.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match=r"unexpected tensors: model\.layers\.0\.extra\.weight"):
        build_model(tmp_path, torch.float32, "cpu")


def test_derived_rotary_buffers_are_tolerated(tmp_path, tiny_llama):
    extra = {"model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(8)}
    _with_tensors(tiny_llama, tmp_path, lambda t: t.update(extra))
    _assert_same_weights(build_model(tmp_path, torch.float32, "cpu"), build_model(tiny_llama, torch.float32, "cpu"))


def test_wrong_shape_is_named(tmp_path, tiny_llama):
    _with_tensors(tiny_llama, tmp_path, lambda t: t.update({"model.layers.0.self_attn.k_proj.weight": torch.zeros(8, 64)}))
    with pytest.raises(CheckpointError, match=r"k_proj\.weight .* shape \(8, 64\), expected \(32, 64\)"):
        build_model(tmp_path, torch.float32, "cpu")


def test_tensor_repeated_across_unindexed_files(tmp_path, tiny_llama):
    _copy_config(tiny_llama, tmp_path)
    shutil.copy(tiny_llama / "model.safetensors", tmp_path / "a.safetensors")
    save_file({"model.norm.weight": torch.ones(64)}, str(tmp_path / "b.safetensors"))
    with pytest.raises(CheckpointError, match=r"repeats tensors .*model\.norm\.weight"):
        build_model(tmp_path, torch.float32, "cpu")


def test_corrupt_file_is_named(tmp_path, tiny_llama):
    (_copy_config(tiny_llama, tmp_path) / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot open .*model.safetensors"):
        build_model(tmp_path, torch.float32, "cpu")
