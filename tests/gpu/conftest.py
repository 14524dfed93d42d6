"""Fixtures of the GPU tests."""
from __future__ import annotations

import pytest
import torch
from engine_runs import SHAPE


@pytest.fixture(scope="module")
def confident_model(tiny_model_factory, tmp_path_factory):
    """make(arch) -> a tiny model whose next-token choices are clear-cut.

    Random weights put many tokens within float16 noise of the top one, so any
    two correct implementations disagree at random. Tying the embeddings and
    damping the attention/MLP outputs keeps each layer's contribution while
    leaving real margins between the top logits.
    """
    from tiny_models import reference_model

    made = {}

    def make(arch, **extra):
        if arch not in made:
            path = tiny_model_factory(arch, tie_word_embeddings=True, **SHAPE, **extra)
            model = reference_model(path)
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name.endswith(("o_proj.weight", "down_proj.weight")):
                        p.mul_(0.25)
            out = tmp_path_factory.mktemp(f"confident_{arch}")
            model.save_pretrained(out, safe_serialization=True)
            for f in path.iterdir():
                if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
                    (out / f.name).write_bytes(f.read_bytes())
            made[arch] = out
        return made[arch]

    return make
