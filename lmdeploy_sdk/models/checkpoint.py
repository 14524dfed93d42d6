"""Reading HF safetensors checkpoints straight into a model's (packed) parameters.

An architecture describes its checkpoint as a `CheckpointLayout`: for every tensor
name in the files, which parameter (and which rows of it) receives it. The loader
checks names before reading any data, so a wrong checkpoint fails fast with the
missing and unexpected names listed.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from tqdm.auto import tqdm

from lmdeploy_sdk.models.errors import CheckpointError

INDEX_FILE = "model.safetensors.index.json"
# Tensors some checkpoints carry that are derived data, never weights.
_DERIVED_SUFFIXES = ("rotary_emb.inv_freq",)
_MAX_LISTED = 20


@dataclass(frozen=True)
class WeightTarget:
    """Where one checkpoint tensor goes."""

    param: str  # name in model.named_parameters()
    rows: tuple[int, int] | None = None  # [start, end) along dim 0, for packed parameters
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None  # applied to the tensor first


@dataclass(frozen=True)
class CheckpointLayout:
    targets: Mapping[str, WeightTarget]
    ignored: frozenset[str] = field(default_factory=frozenset)  # may be present, never loaded
    # Checkpoint name prefix -> the prefix `targets` use (a text model saved inside a larger model).
    renames: tuple[tuple[str, str], ...] = ()
    # Tensors under these prefixes belong to other parts (a vision tower), never loaded here.
    ignored_prefixes: tuple[str, ...] = ()

    def canonical(self, name: str) -> str | None:
        """The `targets` name of a checkpoint tensor; None for tensors of other parts."""
        if name.startswith(self.ignored_prefixes) and self.ignored_prefixes:
            return None
        for prefix, replacement in self.renames:
            if name.startswith(prefix):
                return replacement + name[len(prefix):]
        return name


def checkpoint_files(model_dir: Path) -> list[Path]:
    """The safetensors files of a checkpoint: from the index if there is one, else all *.safetensors."""
    index = model_dir / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"cannot read the weight_map of {index}: {e!r}") from e
        files = [model_dir / name for name in sorted(set(weight_map.values()))]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{index} lists shards that are not in {model_dir}: {', '.join(missing)}")
        return files
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"no *.safetensors weights in {model_dir}")
    return files


def _listing(names: set[str]) -> str:
    shown = sorted(names)[:_MAX_LISTED]
    more = f" ... and {len(names) - len(shown)} more" if len(names) > len(shown) else ""
    return ", ".join(shown) + more


def _check_names(present: set[str], layout: CheckpointLayout, model_dir: Path) -> None:
    expected = set(layout.targets)
    missing = expected - present
    unexpected = {
        n for n in present - expected - layout.ignored if not n.endswith(_DERIVED_SUFFIXES)
    }
    problems = []
    if missing:
        problems.append(f"missing tensors: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {_listing(unexpected)}")
    if problems:
        raise CheckpointError(f"checkpoint in {model_dir} does not match its config: " + "; ".join(problems))


def _write(dst: torch.Tensor, name: str, target: WeightTarget, tensor: torch.Tensor, shard: Path) -> int:
    """Copy (and cast) one checkpoint tensor into its place; returns the rows written."""
    if target.transform is not None:
        try:
            tensor = target.transform(tensor)
        except RuntimeError as e:
            raise CheckpointError(f"tensor {name} in {shard.name} has an unexpected shape {tuple(tensor.shape)}: {e}") from e
    if target.rows is not None:
        dst = dst[target.rows[0] : target.rows[1]]
    if dst.shape != tensor.shape:
        raise CheckpointError(
            f"tensor {name} in {shard.name} has shape {tuple(tensor.shape)}, expected {tuple(dst.shape)}"
        )
    dst.copy_(tensor)
    return dst.shape[0] if dst.dim() else 1


@torch.no_grad()
def load_checkpoint(model: torch.nn.Module, model_dir: Path, layout: CheckpointLayout) -> None:
    """Fill every parameter of `model` from the safetensors files in `model_dir`, casting to its dtype."""
    files = checkpoint_files(model_dir)
    keys: dict[Path, list[str]] = {}
    for f in files:
        try:
            with safe_open(f, framework="pt") as sf:
                keys[f] = list(sf.keys())
        except (OSError, SafetensorError) as e:
            raise CheckpointError(f"cannot open {f}: {e}") from e
    present: set[str] = set()
    for f, names in keys.items():
        repeated = present.intersection(names)
        if repeated:
            raise CheckpointError(f"{f} repeats tensors already found in another shard: {_listing(repeated)}")
        present.update(names)
    _check_names({c for c in map(layout.canonical, present) if c is not None}, layout, model_dir)

    params = dict(model.named_parameters())
    assert {t.param for t in layout.targets.values()} == set(params), "layout must cover every parameter"
    rows_written = dict.fromkeys(params, 0)
    for f in tqdm(files, desc="Loading weights", unit="shard", disable=len(files) <= 1):
        with safe_open(f, framework="pt") as sf:
            for name in keys[f]:
                canonical = layout.canonical(name)
                target = layout.targets.get(canonical) if canonical is not None else None
                if target is not None:
                    rows = _write(params[target.param].data, name, target, sf.get_tensor(name), f)
                    rows_written[target.param] += rows
    for name, p in params.items():
        assert rows_written[name] == (p.shape[0] if p.dim() else 1), f"{name} not fully written"
