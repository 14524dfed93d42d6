import torch

from lmdeploy_sdk.engine.sampler import Sampler, SamplingParams, SamplingRow
from lmdeploy_sdk.messages import GenerationConfig

CPU = torch.device("cpu")


def params(**kw):
    return SamplingParams.from_config(GenerationConfig(**kw), [], [9], CPU, seed=0)


def test_repetition_penalty_follows_hf_rule():
    from transformers import RepetitionPenaltyLogitsProcessor

    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    ours, _ = Sampler()(logits.clone(), [SamplingRow(params(repetition_penalty=4.0), [3, 1], 0)])
    ref = RepetitionPenaltyLogitsProcessor(4.0)(torch.tensor([[3, 1]]), logits.clone())
    assert ours == [int(ref.argmax())] == [0]


def test_extreme_values_do_not_break_a_row():
    logits = torch.randn(3, 50)
    rows = [
        SamplingRow(params(do_sample=True, temperature=1e-30), [1], 0),
        SamplingRow(params(do_sample=True, repetition_penalty=5e-324), list(range(50)), 0),
        SamplingRow(params(do_sample=True, bad_token_ids=list(range(50))), [1], 0),
    ]
    tokens, _ = Sampler()(logits.clone(), rows)
    assert tokens[0] == int(logits[0].argmax())
    assert all(0 <= t < 50 for t in tokens)


def test_min_p_top_p_top_k_restrict_the_support():
    logits = torch.tensor([[5.0, 4.9, 0.0, -5.0]]).repeat(200, 1)
    for kw, allowed in [(dict(top_k=2), {0, 1}), (dict(top_p=0.5), {0}), (dict(min_p=0.5), {0, 1})]:
        p = params(do_sample=True, temperature=1.0, **kw)
        seen = set(Sampler()(logits.clone(), [SamplingRow(p, [], 0)] * 200)[0])
        assert seen <= allowed, (kw, seen)


def test_min_new_tokens_bans_end_ids_until_reached():
    logits = torch.zeros(1, 12)
    logits[0, 9] = 10.0  # the end id wins greedy
    p = params(min_new_tokens=2)
    assert Sampler()(logits.clone(), [SamplingRow(p, [], 0)])[0] != [9]
    assert Sampler()(logits.clone(), [SamplingRow(p, [], 2)])[0] == [9]


def test_logit_bias_moves_tokens_up_and_down():
    logits = torch.tensor([[3.0, 0.0, 1.0, 2.0]])
    up = params(logit_bias={1: 100})
    down = params(logit_bias={0: -100, 3: -100})
    tokens, _ = Sampler()(logits.repeat(3, 1), [SamplingRow(up, [], 0), SamplingRow(down, [], 0),
                                                SamplingRow(params(), [], 0)])
    assert tokens == [1, 2, 0]
    sampled = params(do_sample=True, temperature=1.0, logit_bias={2: 100})
    assert set(Sampler()(logits.repeat(50, 1), [SamplingRow(sampled, [], 0)] * 50)[0]) == {2}


def test_a_grammar_row_only_gets_tokens_its_grammar_allows(tokenizer_dir):
    from lmdeploy_sdk.guided import grammar_spec
    from lmdeploy_sdk.tokenizer import Tokenizer

    tok = Tokenizer(tokenizer_dir)
    vocab = len(tok.hf)
    spec = grammar_spec({"type": "regex", "regex": "[0-9]+"})
    logits = torch.randn(64, vocab)
    logits[:, tok.encode("hello", add_special_tokens=False)[0]] = 1e4  # what the model "wants"
    rows = [SamplingRow(SamplingParams.from_config(GenerationConfig(do_sample=i % 2 == 1, temperature=1.0),
                                                   [], [0], CPU, seed=i, grammar=tok.grammars.matcher(spec)), [], 0)
            for i in range(63)]
    rows.append(SamplingRow(params(), [], 0))  # no grammar: keeps its argmax
    tokens, _ = Sampler()(logits, rows)
    assert all(tok.decode([t]).isdigit() for t in tokens[:63])
    assert tokens[63] == tok.encode("hello", add_special_tokens=False)[0]
