"""Compiled grammars: cached per spec, a fresh matcher per request, errors that name the problem;
the bitmask applied to logits allows exactly the grammar's tokens."""
from __future__ import annotations

import json
import logging

import pytest
import torch

from lmdeploy_sdk.guided import grammar_spec
from lmdeploy_sdk.guided.bitmask import BitmaskFiller, apply_bitmask
from lmdeploy_sdk.guided.compiler import GrammarCompiler
from lmdeploy_sdk.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok(tokenizer_dir) -> Tokenizer:
    return Tokenizer(tokenizer_dir)


@pytest.fixture
def compiler(tok) -> GrammarCompiler:
    return GrammarCompiler(tok.hf, tok.eos_token_ids)


def _walk(matcher, tok: Tokenizer, text: str) -> bool:
    return all(matcher.accept(t) for t in tok.encode(text, add_special_tokens=False))


def test_a_compiled_grammar_is_reused_and_matchers_are_independent(compiler, tok, monkeypatch, caplog):
    spec = grammar_spec({"type": "regex_schema", "regex_schema": "[0-9]{3}-[0-9]{2}"})
    compiled = []
    real = compiler._compile
    monkeypatch.setattr(compiler, "_compile", lambda s: compiled.append(s) or real(s))
    with caplog.at_level(logging.INFO, logger="lmdeploy_sdk.guided.compiler"):
        a = compiler.matcher(spec)
        b = compiler.matcher(spec)
    assert compiled == [spec]  # the second request copies the cached grammar
    assert "compiled the grammar for regex in" in caplog.text  # the first request says how long it took
    assert _walk(a, tok, "123-45") and a.done
    assert not b.done and _walk(b, tok, "98")  # b did not move with a
    assert not b.accept(tok.encode("x", add_special_tokens=False)[0])


def test_cache_is_bounded(tok):
    compiler = GrammarCompiler(tok.hf, tok.eos_token_ids, cache_size=2)
    for n in range(4):
        compiler.matcher(grammar_spec({"type": "regex", "regex": f"a{{{n + 1}}}"}))
    assert len(compiler._compiled) == 2


def test_json_is_written_as_json_dumps_writes_it(compiler, tok):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "array"}},
              "required": ["a", "b"], "additionalProperties": False}
    spec = grammar_spec({"type": "json_schema", "json_schema": {"schema": schema}})
    assert _walk(compiler.matcher(spec), tok, json.dumps({"a": 1, "b": [1, 2]}))
    padded = compiler.matcher(spec)
    assert not _walk(padded, tok, '{"a": 1,\n\n\n "b": []}')  # no free whitespace to ramble in


def test_bad_schemas_are_value_errors(compiler):
    weird = {"type": "string", "format": "no-such-format"}
    strict = grammar_spec({"type": "json_schema", "json_schema": {"name": "w", "schema": weird, "strict": True}})
    with pytest.raises(ValueError, match="response_format: cannot use this json_schema 'w': Unknown format"):
        compiler.matcher(strict)
    lenient = grammar_spec({"type": "json_schema", "json_schema": {"name": "w", "schema": weird}})
    assert compiler.matcher(lenient) is not None  # non-strict: the keyword is ignored
    with pytest.raises(ValueError, match="cannot use this grammar"):
        compiler.matcher(grammar_spec({"type": "grammar", "grammar": "start: undefined_rule"}))


def test_bitmask_allows_exactly_the_grammars_tokens(compiler, tok):
    spec = grammar_spec({"type": "regex", "regex": "(yes|no)"})
    matcher = compiler.matcher(spec)
    vocab = compiler.tokenizer.vocab_size
    mask = BitmaskFiller().fill([matcher], matcher.mask_words)  # [1, W]
    logits = torch.zeros(3, vocab + 40)  # a padded vocabulary, and rows without a grammar
    apply_bitmask(logits, torch.tensor([1]), mask)
    allowed = torch.isfinite(logits[1]).nonzero().flatten().tolist()
    assert allowed and all("yes".startswith(tok.decode([t])) or "no".startswith(tok.decode([t])) for t in allowed)
    assert tok.encode("yes", add_special_tokens=False)[0] in allowed
    assert torch.isfinite(logits[0]).all() and torch.isfinite(logits[2]).all()
    assert not torch.isfinite(logits[1, vocab:]).any()


def test_end_ids_past_the_tokenizers_vocabulary_are_left_out(tok):
    # random-weight shapes pair a small tokenizer with a big model's config.json end ids
    compiler = GrammarCompiler(tok.hf, tok.eos_token_ids + [128001])
    matcher = compiler.matcher(grammar_spec({"type": "regex", "regex": "ab"}))
    assert _walk(matcher, tok, "ab") and matcher.done


def test_requests_take_turns_over_one_prototype_per_mask_thread(tok):
    # copies of one prototype share its lexer cache behind a lock: masks of copies of different
    # prototypes are computed in parallel
    compiler = GrammarCompiler(tok.hf, tok.eos_token_ids, lanes=3)
    spec = grammar_spec({"type": "regex", "regex": "[a-z]+"})
    matchers = [compiler.matcher(spec) for _ in range(7)]
    assert len(compiler._compiled[spec].matchers) == 3
    assert all(_walk(m, tok, "abc") for m in matchers)
