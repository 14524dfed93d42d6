"""get_ppl equals the mean cross-entropy transformers computes."""
from __future__ import annotations

import pytest
import torch
from tiny_models import reference_model


def test_get_ppl_matches_transformers(tiny_llama, make_pipeline):
    pipe = make_pipeline(tiny_llama, max_prefill_token_num=7)  # scored in chunks
    ids = [pipe.tokenizer.encode(t) for t in ["A first sentence to score.", "Second, longer one " * 4]]
    ours = pipe.get_ppl(ids)
    model = reference_model(tiny_llama)
    for got, seq in zip(ours, ids):
        with torch.no_grad():
            loss = model(torch.tensor([seq]), labels=torch.tensor([seq])).loss.item()
        assert got == pytest.approx(loss, rel=1e-4)
    assert pipe.get_ppl(ids[0]) == pytest.approx(ours[:1], rel=1e-6)


def test_get_ppl_rejects_bad_input(tiny_llama, make_pipeline):
    pipe = make_pipeline(tiny_llama)
    with pytest.raises(ValueError):
        pipe.get_ppl([[]])
    with pytest.raises(ValueError, match="at least 2 tokens"):
        pipe.get_ppl([5])
