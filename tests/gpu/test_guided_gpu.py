"""Guided decoding on CUDA: the bitmask applied on the device equals the host's, and grammars hold
with run-ahead and decode CUDA graphs (sampling waits for the grammars, forwards do not)."""
from __future__ import annotations

import json
import re

import pytest
import torch

from lmdeploy_sdk import GenerationConfig, TurbomindEngineConfig, pipeline
from lmdeploy_sdk.guided.bitmask import apply_bitmask

pytestmark = pytest.mark.gpu

REGEX = "(cat|dog)s? [0-9]{2,4}!"
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}, "w": {"enum": ["a", "b"]},
                                           "s": {"type": "string", "maxLength": 12}},
          "required": ["n", "w", "s"], "additionalProperties": False}
PROMPTS = [f"Prompt {i}: tell me something." for i in range(12)]


@pytest.mark.parametrize("vocab", [1000, 49152, 128256 + 7])
def test_device_bitmask_equals_host(vocab):
    words = (min(vocab, 128256) + 31) // 32
    mask = torch.randint(-2**31, 2**31 - 1, (5, words), dtype=torch.int32)
    logits = torch.randn(9, vocab)
    rows = torch.tensor([0, 3, 4, 7, 8])
    host = logits.clone()
    apply_bitmask(host, rows, mask)
    dev = logits.cuda()
    apply_bitmask(dev, rows.cuda(), mask.cuda())
    assert torch.equal(torch.isinf(dev.cpu()), torch.isinf(host))


def _configs() -> list[GenerationConfig]:
    out = []
    for i in range(len(PROMPTS)):
        if i % 3 == 0:
            out.append(GenerationConfig(max_new_tokens=16, ignore_eos=True))
        elif i % 3 == 1:
            out.append(GenerationConfig(max_new_tokens=24, response_format={"type": "regex_schema",
                                                                            "regex_schema": REGEX}))
        else:
            out.append(GenerationConfig(do_sample=True, temperature=1.0, random_seed=i, max_new_tokens=60,
                                        response_format={"type": "json_schema", "json_schema": {"schema": SCHEMA}}))
    return out


def _outputs(path, run_ahead: bool, plain_only: bool = False):
    cfg = TurbomindEngineConfig(device="cuda", dtype="float16", cache_max_entry_count=512, cache_block_seq_len=16,
                                max_batch_size=16)
    with pipeline(str(path), backend_config=cfg) as pipe:
        pipe._engine.run_ahead = run_ahead
        configs = _configs()
        if plain_only:
            picked = [i for i in range(len(PROMPTS)) if i % 3 == 0]
            res = pipe([PROMPTS[i] for i in picked], gen_config=[configs[i] for i in picked])
        else:
            res = pipe(PROMPTS, gen_config=configs)
        return [(r.token_ids, r.text, r.finish_reason) for r in res]


def test_grammars_hold_on_cuda_with_run_ahead(tiny_llama):
    ahead = _outputs(tiny_llama, run_ahead=True)
    for i, (tokens, text, finish) in enumerate(ahead):
        if i % 3 == 1:
            assert finish == "stop" and re.fullmatch(REGEX, text), text
        elif i % 3 == 2:
            assert finish == "stop" and json.loads(text)["w"] in ("a", "b"), text
    assert _outputs(tiny_llama, run_ahead=False) == ahead
    alone = _outputs(tiny_llama, run_ahead=True, plain_only=True)
    assert [t for t, _, _ in alone] == [ahead[i][0] for i in range(len(PROMPTS)) if i % 3 == 0]
