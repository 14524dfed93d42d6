"""Greedy generation with transformers, the reference our engine must match."""
from __future__ import annotations

import torch

# Prompts of every kind the greedy-parity tests run: short, long, code, CJK, emoji, digits.
TEXTS = [
    "Hello",
    "The quick brown fox jumps over the lazy dog.",
    "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)",
    "北京是中国的首都，也是一座历史悠久的城市。",
    "Once upon a time, in a land far away, there lived a king who had three daughters. "
    "The youngest was the kindest of them all, and she loved to walk in the forest.",
    "1 2 3 4 5 6 7 8 9 10",
    "Emoji test 🚀🌍✨ and more text",
    "A shared system prefix: you are a helpful assistant. Question: what is two plus two?",
]


def hf_greedy(model, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    """Greedy continuation, never stopping early (our side uses ignore_eos=True)."""
    ids = torch.tensor([prompt_ids])
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
    return out[0, len(prompt_ids):].tolist()
