"""Guided decoding in the engine: grammars hold under run-ahead (the sampling of a step with a
grammar row waits for the previous tokens, its forward does not), rows without a grammar are
unaffected by rows with one, and bad formats fail only their own request."""
from __future__ import annotations

import json
import re

from lmdeploy_sdk import GenerationConfig

PROMPTS = ["The sea is", "Tell me a story about a cat.", "1 2 3 4", "Hello"]
REGEX = {"type": "regex_schema", "regex_schema": "(cat|dog)s? [0-9]{2,4}!"}
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}, "w": {"enum": ["a", "b"]}},
          "required": ["n", "w"], "additionalProperties": False}


def _configs() -> list[GenerationConfig]:
    return [
        GenerationConfig(max_new_tokens=12, ignore_eos=True),  # no grammar, runs ahead
        GenerationConfig(max_new_tokens=24, response_format=REGEX),
        GenerationConfig(do_sample=True, temperature=1.0, random_seed=3, max_new_tokens=40, n=2,
                         response_format={"type": "json_schema", "json_schema": {"schema": SCHEMA}}),
        GenerationConfig(do_sample=True, temperature=0.9, random_seed=5, max_new_tokens=12, ignore_eos=True),
    ]


def _outputs(pipe):
    return [(r.token_ids, r.text, r.finish_reason) for r in pipe(PROMPTS, gen_config=_configs())]


def test_grammars_hold_with_run_ahead_and_match_waiting(tiny_llama, make_pipeline, monkeypatch):
    pipe = make_pipeline(tiny_llama, max_prefill_token_num=6)
    deferred = []
    launch = pipe._engine._launch

    def spy(prev, fills, defer_guided=False):
        forward = launch(prev, fills, defer_guided)
        deferred.append(forward is not None)
        return forward

    monkeypatch.setattr(pipe._engine, "_launch", spy)
    ahead = _outputs(pipe)
    assert sum(deferred) > 5  # forwards were launched before the grammars saw the last tokens
    assert re.fullmatch("(cat|dog)s? [0-9]{2,4}!", ahead[1][1]) and ahead[1][2] == "stop"
    for tokens, text, finish in ahead[2:4]:
        assert finish == "stop" and json.loads(text)["w"] in ("a", "b")

    pipe._engine.run_ahead = False
    assert _outputs(pipe) == ahead


def test_rows_without_a_grammar_are_unaffected(tiny_llama, make_pipeline):
    pipe = make_pipeline(tiny_llama)
    plain = [c for i, c in enumerate(_configs()) if i in (0, 3)]
    alone = pipe([PROMPTS[0], PROMPTS[3]], gen_config=plain)
    mixed = _outputs(pipe)
    assert [r.token_ids for r in alone] == [mixed[0][0], mixed[4][0]]


def test_a_bad_grammar_fails_only_its_request(tiny_llama, make_pipeline):
    pipe = make_pipeline(tiny_llama)
    bad = GenerationConfig(max_new_tokens=4, response_format={"type": "grammar", "grammar": "start: nothing_here"})
    good = GenerationConfig(max_new_tokens=4, ignore_eos=True)
    out_bad, out_good = pipe(["a", "b"], gen_config=[bad, good])
    assert out_bad.finish_reason == "error" and "cannot use this grammar" in out_bad.error_message
    assert out_good.finish_reason == "length" and len(out_good.token_ids) == 4


def test_logit_bias_is_honoured(tiny_llama, make_pipeline):
    pipe = make_pipeline(tiny_llama)
    token = pipe.tokenizer.encode(" sea", add_special_tokens=False)[0]
    out = pipe("Hello", gen_config=GenerationConfig(max_new_tokens=5, ignore_eos=True, logit_bias={token: 100}))
    assert out.token_ids == [token] * 5
    bad = pipe("Hello", gen_config=GenerationConfig(max_new_tokens=5, logit_bias={10**7: 1}))
    assert bad.finish_reason == "error" and "logit_bias" in bad.error_message
