"""Engine runs shared by the GPU tests: the same prompts through a pipeline with our kernels
(and decode graphs) on or off, and how far two runs' greedy tokens agree."""
from __future__ import annotations

import torch

from lmdeploy_sdk import GenerationConfig, TurbomindEngineConfig, pipeline
from lmdeploy_sdk import native
from lmdeploy_sdk.engine.runner import DISABLE_GRAPHS_ENV

# head_dim 64 so the kernels serve it
SHAPE = dict(hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2)
PROMPTS = [f"Prompt number {i}: " + "tell me something interesting. " * (1 + i % 5) for i in range(16)]
GEN = GenerationConfig(max_new_tokens=32, ignore_eos=True)


def greedy_tokens(pipe) -> list[list[int]]:
    return [r.token_ids for r in pipe(PROMPTS, gen_config=GEN, do_preprocess=False)]


def run(path, monkeypatch, *, native_on: bool, graphs_on: bool, use=greedy_tokens, **cfg):
    """use(pipe) on a pipeline with our kernels (and decode graphs) on or off."""
    monkeypatch.setenv(native.DISABLE_ENV, "0" if native_on else "1")
    monkeypatch.setenv(DISABLE_GRAPHS_ENV, "0" if graphs_on else "1")
    native.native_available.cache_clear()
    try:
        engine_cfg = TurbomindEngineConfig(device="cuda", dtype="float16", cache_max_entry_count=512,
                                           cache_block_seq_len=16, max_batch_size=16, **cfg)
        with pipeline(str(path), backend_config=engine_cfg) as pipe:
            assert (pipe._engine.runner.graphs is not None) == (native_on and graphs_on)
            return use(pipe)
    finally:
        native.native_available.cache_clear()


def agreement(a: list[list[int]], b: list[list[int]]) -> float:
    """Fraction of positions that agree before each row's first divergence."""
    same = 0
    for x, y in zip(a, b):
        for s, t in zip(x, y):
            if s != t:
                break
            same += 1
    return same / sum(len(x) for x in a)


# Fixed token sequences whose mean cross-entropy `scores` reports (prompt paths of 3..40 rows).
SCORED_SEQS = [[1000 + 37 * i + j for j in range(n)] for i, n in enumerate((3, 9, 16, 17, 40))]
LOGPROB_GEN = GenerationConfig(max_new_tokens=16, ignore_eos=True, logprobs=1)


def scores(pipe) -> tuple[list[float], list[tuple[list[int], list[dict]]]]:
    """(get_ppl of SCORED_SEQS, (greedy tokens, their logprobs) of each prompt): what two runs are
    compared by where rounding can flip a greedy decision but not move a probability much."""
    out = pipe(PROMPTS, gen_config=LOGPROB_GEN, do_preprocess=False)
    return pipe.get_ppl(SCORED_SEQS), [(r.token_ids, r.logprobs) for r in out]


def assert_scores_agree(got, want) -> None:
    """The mean cross-entropies agree, and so does the log-probability of each greedy token while
    both runs still share the context (decode steps)."""
    (ppl, runs), (ref_ppl, ref_runs) = got, want
    torch.testing.assert_close(torch.tensor(ppl), torch.tensor(ref_ppl), rtol=5e-3, atol=5e-3)
    diffs = []
    for (toks, lps), (ref_toks, ref_lps) in zip(runs, ref_runs):
        for tok, lp, ref_tok, ref_lp in zip(toks, lps, ref_toks, ref_lps):
            if tok != ref_tok:
                break  # the contexts differ from here on
            diffs.append(abs(lp[tok] - ref_lp[tok]))
    assert len(diffs) >= 0.3 * sum(len(t) for t, _ in ref_runs), len(diffs)  # decode steps were compared
    # fp16 rounding, compounded over layers and steps, moves a log-probability by up to ~0.2
    # here (fp16 against fp32 on CPU: up to 0.14); a wrong kernel moves them by whole units
    assert max(diffs) < 0.5 and sum(diffs) / len(diffs) < 0.05, (max(diffs), sum(diffs) / len(diffs))
