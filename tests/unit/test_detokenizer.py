"""IncrementalDetokenizer: streamed pieces join to one-shot decoding, never a broken character."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer as RustTokenizer
from tokenizers import decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from lmdeploy_sdk import detokenizer as detokenizer_module
from lmdeploy_sdk.detokenizer import IncrementalDetokenizer
from lmdeploy_sdk.tokenizer import Tokenizer

REPLACEMENT = "\ufffd"
MIXED_TEXT = "Hello 世界! 你好，我是模型。🎉👍🏽 Ünïcödé ok"


def make_sentencepiece_style_tokenizer(out: Path) -> Path:
    """A small Llama/Mistral-style tokenizer: '▁' word marker, first space dropped, byte fallback, BOS."""
    rust = RustTokenizer(models.BPE(unk_token="<unk>"))
    rust.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    rust.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace(prepend_scheme="first")])
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<s>", "</s>"])
    rust.train_from_iterator(["Hello world, the quick brown fox jumps over the lazy dog."] * 4, trainer)
    spec = json.loads(rust.to_str())
    vocab = spec["model"]["vocab"]
    for b in range(256):  # sentencepiece's <0xNN> tokens for characters outside the vocabulary
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    spec["model"]["byte_fallback"] = True
    rust = RustTokenizer.from_str(json.dumps(spec))
    rust.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    hf = PreTrainedTokenizerFast(tokenizer_object=rust, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    hf.save_pretrained(out)
    return out


@pytest.fixture(autouse=True, params=["rust", "python"])
def decode_path(request, monkeypatch) -> str:
    """Every test runs on tokenizers' DecodeStream and on the Python window it falls back to."""
    if request.param == "python":
        monkeypatch.setattr(detokenizer_module, "DecodeStream", None)
    elif detokenizer_module.DecodeStream is None:
        pytest.skip("tokenizers < 0.21 has no DecodeStream")
    return request.param


@pytest.fixture(scope="module")
def tok(tokenizer_dir: Path) -> Tokenizer:
    return Tokenizer(tokenizer_dir)


@pytest.fixture(scope="module")
def sp_tok(tmp_path_factory) -> Tokenizer:
    return Tokenizer(make_sentencepiece_style_tokenizer(tmp_path_factory.mktemp("sp_tokenizer")))


def stream(detok: IncrementalDetokenizer, ids: list[int], chunk: int = 1) -> list[str]:
    pieces = [detok.step(ids[i : i + chunk]) for i in range(0, len(ids), chunk)]
    return pieces + [detok.flush()]


def test_multibyte_characters_split_over_tokens_are_held_back(tok: Tokenizer):
    ids = tok.encode(MIXED_TEXT)
    assert any(tok.decode([i]).endswith(REPLACEMENT) for i in ids), "the text must split characters over tokens"
    pieces = stream(tok.detokenizer(), ids)
    assert "".join(pieces) == tok.decode(ids) == MIXED_TEXT
    assert not any(REPLACEMENT in p for p in pieces)
    assert "" in pieces  # some steps had to wait for the rest of a character


def test_chunked_steps_give_the_same_text(tok: Tokenizer):
    ids = tok.encode(MIXED_TEXT)
    for chunk in (2, 3, 7, len(ids)):
        assert "".join(stream(tok.detokenizer(), ids, chunk)) == MIXED_TEXT


def test_invalid_tail_comes_out_at_flush(tok: Tokenizer):
    first_byte_of_ni = tok.encode("你")[:1]  # the first byte(s) of a 3-byte character only
    ids = tok.encode("ok") + first_byte_of_ni
    detok = tok.detokenizer()
    assert detok.step(ids[:-1]) == "ok"
    assert detok.step(ids[-1:]) == ""
    assert detok.flush() == REPLACEMENT == tok.decode(first_byte_of_ni)
    assert detok.flush() == ""


def test_invalid_bytes_followed_by_text(tok: Tokenizer):
    ids = tok.encode("你")[:1] + tok.encode("abc")
    assert "".join(stream(tok.detokenizer(), ids)) == tok.decode(ids) == REPLACEMENT + "abc"


@pytest.mark.parametrize("skip", [True, False])
def test_special_tokens(tok: Tokenizer, skip: bool):
    ids = tok.encode_prompt("hi") + tok.encode("Hello 你好") + tok.eos_token_ids
    text = "".join(stream(tok.detokenizer(skip_special_tokens=skip), ids))
    assert text == tok.decode(ids, skip_special_tokens=skip)
    assert ("<|im_end|>" in text) is (not skip)


def test_sentencepiece_leading_space(sp_tok: Tokenizer):
    ids = sp_tok.encode("Hello world the fox 你好", add_special_tokens=False)
    pieces = stream(sp_tok.detokenizer(), ids)
    assert pieces[0] == "Hello"  # the first word's '▁' is not a space
    assert "".join(pieces) == sp_tok.decode(ids) == "Hello world the fox 你好"
    assert any(p.startswith(" ") for p in pieces[1:])  # later words keep their space


@pytest.mark.parametrize("skip", [True, False])
def test_sentencepiece_with_special_tokens_between_words(sp_tok: Tokenizer, skip: bool):
    bos, eos = sp_tok.bos_token_id, sp_tok.eos_token_ids[0]
    word = sp_tok.encode("the", add_special_tokens=False)
    fox = sp_tok.encode("fox", add_special_tokens=False)  # '▁fox'
    ids = [bos] + word + [eos, bos] + fox
    assert "".join(stream(sp_tok.detokenizer(skip), ids)) == sp_tok.decode(ids, skip_special_tokens=skip)


def test_each_step_decodes_only_a_short_window(tok: Tokenizer, monkeypatch, decode_path: str):
    ids = tok.encode(MIXED_TEXT * 40)
    windows: list[int] = []
    real_decode = tok.hf.decode

    def spy(token_ids, *args, **kwargs):
        windows.append(len(token_ids))
        return real_decode(token_ids, *args, **kwargs)

    monkeypatch.setattr(tok.hf, "decode", spy)
    detok = tok.detokenizer()
    assert "".join(stream(detok, ids)) == MIXED_TEXT * 40
    assert len(ids) > 400
    if decode_path == "rust":
        assert windows == []  # every step went through DecodeStream
    else:
        assert max(windows) <= 8


unicode_text = st.text(
    alphabet=st.one_of(
        # Assigned, printable characters: the test tokenizer's byte vocabulary lacks some
        # lead bytes used only by unassigned planes, and drops control characters.
        st.characters(exclude_categories=("Cc", "Cs", "Co", "Cn"), exclude_characters=REPLACEMENT),
        st.sampled_from("世界你好模型。，🎉👍🏽😀🇯🇵 ab\n"),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=unicode_text, data=st.data())
def test_random_text_random_steps(tok: Tokenizer, sp_tok: Tokenizer, text: str, data):
    for t in (tok, sp_tok):
        ids = t.encode(text, add_special_tokens=False)
        cuts = sorted(data.draw(st.lists(st.integers(0, len(ids)), max_size=8)))
        detok = t.detokenizer()
        pieces = [detok.step(ids[a:b]) for a, b in zip([0] + cuts, cuts + [len(ids)])]
        pieces.append(detok.flush())
        assert "".join(pieces) == t.decode(ids)
        assert not any(REPLACEMENT in p for p in pieces)
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text  # byte-level BPE round-trips it
