"""Acceptance (AWQ): on the embedded SmolLM2-135M, AWQ w4 g64 keeps at most two thirds of the
held-out perplexity increase that plain round-to-nearest w4 g64 causes. Both checkpoints are
written in AutoAWQ's layout and scored by the engine's scorer (what Pipeline.get_ppl runs), as
`python -m lmdeploy_sdk.lite.compare` does (docs/quantization.md has its full-size numbers)."""
from __future__ import annotations

import pytest

from lmdeploy_sdk.lite.compare import compare


@pytest.mark.slow
def test_awq_keeps_at_most_two_thirds_of_rtns_perplexity_increase(smollm2_dir, tmp_path):
    result = compare(str(smollm2_dir), w_group_size=64, calib_samples=32, calib_seqlen=512, eval_tokens=4096,
                     eval_seqlen=1024, work_dir=tmp_path)
    print(result)
    assert {p.name for p in tmp_path.iterdir()} == {"rtn", "awq"}
    assert result.rtn_ppl > 1.1 * result.float_ppl  # plain rounding at g64 does cost something
    assert result.ratio <= 2 / 3, result
