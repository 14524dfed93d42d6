"""Calibration and evaluation text for `lite auto_awq`, all offline.

LMDeploy downloads its calibration sets (`ptb`, `wikitext2`, `c4`, `pileval`, ...); nothing
can be downloaded here, so a public-domain text ships with the package (data/README.md says
what and under which licence). A calibration set is `n` windows of `seqlen` tokens cut at
seeded random offsets from one token stream, as LMDeploy does for wikitext2 and ptb.
"""
from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import torch

DEFAULT_CALIB_DATASET = "moby-dick"
RANDOM_DATASET = "random"
# shipped name -> file in lmdeploy_sdk/lite/data
SHIPPED = {DEFAULT_CALIB_DATASET: "moby_dick.txt"}
HELDOUT_FILE = "heldout_sotu_1961_1963.txt"  # never used for calibration
# LMDeploy's names, which need a download (said so in the error)
DOWNLOADED = ("ptb", "wikitext2", "c4", "pileval", "gsm8k", "neuralmagic_calibration", "open-platypus",
              "openwebtext")


def available() -> str:
    """What --calib-dataset accepts, for help texts and error messages."""
    return (f"{', '.join(repr(n) for n in SHIPPED)} (shipped, public domain), {RANDOM_DATASET!r} (random token ids), "
            "a .txt file, or a .jsonl file with a 'text' field per line")


def data_file(name: str) -> Path:
    """A file shipped in lmdeploy_sdk/lite/data."""
    path = Path(str(resources.files("lmdeploy_sdk.lite").joinpath("data", name)))
    assert path.is_file(), f"package data {name} is missing from the install"
    return path


def heldout_text() -> str:
    """The held-out evaluation text (perplexity comparisons); disjoint from every shipped calibration set."""
    return data_file(HELDOUT_FILE).read_text(encoding="utf-8")


def _jsonl_text(path: Path) -> str:
    texts = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno} is not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise ValueError(f"{path}:{lineno} has no string field 'text' (calibration .jsonl needs one per line)")
            texts.append(record["text"])
    return "\n\n".join(texts)


def dataset_file(dataset: str | os.PathLike) -> Path | None:
    """The text file behind a calib_dataset (None for 'random'); ValueError listing what works."""
    name = str(dataset)
    key = name.strip().lower()
    if key == RANDOM_DATASET:
        return None
    if key in SHIPPED:
        return data_file(SHIPPED[key])
    path = Path(name).expanduser()
    if path.is_file() and path.suffix.lower() in (".txt", ".jsonl"):
        return path
    if key in DOWNLOADED:
        raise ValueError(f"calib_dataset {name!r} must be downloaded, and this install works offline; "
                         f"use one of: {available()}")
    if path.exists():
        raise ValueError(f"calib_dataset {name!r} is not a .txt or .jsonl file; use one of: {available()}")
    raise ValueError(f"calib_dataset {name!r} is not available; use one of: {available()}")


def check_calibration(dataset: str | os.PathLike, n_samples: int, seqlen: int, batch_size: int = 1) -> None:
    """ValueError for a calibration request that cannot work, before any model loads."""
    dataset_file(dataset)
    for name, value, least in (("calib_samples", n_samples, 1), ("calib_seqlen", seqlen, 2),
                               ("batch_size", batch_size, 1)):
        if value < least:
            raise ValueError(f"{name} must be >= {least}, got {value}")


def calib_tokens(
    dataset: str | os.PathLike, tokenizer: Any, n_samples: int, seqlen: int, seed: int = 0
) -> torch.Tensor:
    """int64 [n_samples, seqlen]: windows of the dataset's token stream at seeded random offsets
    ('random': uniform token ids of the tokenizer's vocabulary)."""
    check_calibration(dataset, n_samples, seqlen)
    gen = torch.Generator().manual_seed(seed)
    path = dataset_file(dataset)
    if path is None:
        return torch.randint(0, len(tokenizer), (n_samples, seqlen), generator=gen)
    text = _jsonl_text(path) if path.suffix.lower() == ".jsonl" else path.read_text(encoding="utf-8")
    stream = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.int64)  # [S]
    if stream.numel() < seqlen:
        raise ValueError(f"calib_dataset {str(dataset)!r} has {stream.numel()} tokens, fewer than "
                         f"calib_seqlen={seqlen}; use a longer text or a shorter calib_seqlen")
    starts = torch.randint(0, stream.numel() - seqlen + 1, (n_samples,), generator=gen)
    return torch.stack([stream[s : s + seqlen] for s in starts.tolist()])  # [n, seqlen]
