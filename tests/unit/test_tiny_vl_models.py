"""The tiny llava-family fixtures are what the VL tests assume: loadable by transformers, `<image>`
expanded to exactly as many tokens as the model produces image features, and `hf_greedy` usable as
the reference. Image token counts are recomputed here from the configs alone (llava_next's anyres
tiling and unpadding included), so a mismatch points at the fixture rather than at the code under test.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

from tiny_vl_models import VL_KINDS, hf_greedy, load_tiny_vl, make_tiny_vl_model, tiny_image

# Image sizes (width, height): the default odd aspect, its transpose, one tile, a very wide one.
SIZES = [(40, 32), (32, 40), (30, 30), (61, 17)]

# What the module docstring of tiny_vl_models promises for the default tiny_image.
DOCUMENTED_TOKENS = {"llava": 25, "llava_interleave": 25, "llava_next": 113}

MODEL_CLASS = {
    "llava": transformers.LlavaForConditionalGeneration,
    "llava_interleave": transformers.LlavaForConditionalGeneration,
    "llava_next": transformers.LlavaNextForConditionalGeneration,
}
PROCESSOR_CLASS = {
    "llava": transformers.LlavaProcessor,
    "llava_interleave": transformers.LlavaProcessor,
    "llava_next": transformers.LlavaNextProcessor,
}


def _one_image_messages(text: str = "What is in the picture?") -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


@pytest.fixture(scope="module")
def vl_dirs(tmp_path_factory, tokenizer_dir) -> dict[str, Path]:
    """Each kind's checkpoint, built once for this module."""
    return {k: make_tiny_vl_model(k, tmp_path_factory.mktemp(k), tokenizer_dir) for k in VL_KINDS}


@pytest.fixture(scope="module")
def loaded(vl_dirs):
    """kind -> (processor, model), loaded once per kind on first use."""
    cache: dict[str, tuple] = {}

    def get(kind: str):
        if kind not in cache:
            cache[kind] = load_tiny_vl(vl_dirs[kind])
        return cache[kind]

    return get


def _expected_image_tokens(cfg, width: int, height: int) -> int:
    """Image tokens for one image, from the model config alone (mirrors llava / llava-next)."""
    vis = cfg.vision_config
    side = vis.image_size // vis.patch_size
    # CLIP's CLS is dropped by the "default" strategy; SigLIP has none and keeps all with "full".
    base = side * side
    if cfg.model_type == "llava":
        return base
    assert cfg.model_type == "llava_next"
    best, best_key = None, None
    for ph, pw in cfg.image_grid_pinpoints:  # [height, width]
        scale = min(pw / width, ph / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        key = (effective, -(pw * ph - effective))
        if best_key is None or key > best_key:
            best, best_key = (ph, pw), key
    rows = best[0] // vis.image_size * side
    cols = best[1] // vis.image_size * side
    if width / height > cols / rows:
        pad = (rows - int(round(height * cols / width, 7))) // 2
        rows -= 2 * pad
    else:
        pad = (cols - int(round(width * rows / height, 7))) // 2
        cols -= 2 * pad
    return base + rows * cols + rows  # one image_newline after each row


def _feature_rows(model, inputs) -> list[int]:
    """Rows of `get_image_features` per image: what the model scatters into the `<image>` slots."""
    kw = {"pixel_values": inputs["pixel_values"]}
    if "image_sizes" in inputs:
        kw["image_sizes"] = inputs["image_sizes"]
    with torch.no_grad():
        out = model.get_image_features(**kw)
    feats = out.pooler_output if hasattr(out, "pooler_output") else out
    return [f.shape[0] for f in feats]


@pytest.mark.parametrize("kind", VL_KINDS)
def test_checkpoint_loads_with_image_token(kind, vl_dirs, loaded):
    files = {p.name for p in vl_dirs[kind].iterdir()}
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json"} <= files
    processor, model = loaded(kind)
    assert type(processor) is PROCESSOR_CLASS[kind]
    assert type(model) is MODEL_CLASS[kind]
    assert type(transformers.AutoProcessor.from_pretrained(vl_dirs[kind])) is PROCESSOR_CLASS[kind]
    tok = processor.tokenizer
    image_id = tok.convert_tokens_to_ids("<image>")
    assert image_id == len(tok) - 1 == model.config.text_config.vocab_size - 1
    assert model.config.image_token_id == model.config.image_token_index == image_id == processor.image_token_id
    assert tok.image_token == "<image>" and tok.image_token_id == image_id
    assert tok.encode("a<image>b", add_special_tokens=False).count(image_id) == 1
    assert tok.decode([image_id], skip_special_tokens=True) == ""
    text = model.config.text_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_key_value_heads) == (64, 2, 2)
    assert not text.tie_word_embeddings


@pytest.mark.parametrize("kind", VL_KINDS)
def test_chat_template_renders_image_parts(kind, loaded):
    processor, _ = loaded(kind)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image"}, {"type": "text", "text": "b"}]},
    ]
    want = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\na<image>b<|im_end|>\n<|im_start|>assistant\n"
    assert processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == want
    # The tokenizer alone (the text-only path) renders the same.
    assert processor.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == want


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", VL_KINDS)
def test_image_token_count_matches_config_and_features(kind, size, loaded):
    processor, model = loaded(kind)
    text = processor.apply_chat_template(_one_image_messages(), add_generation_prompt=True, tokenize=False)
    inputs = processor(text=text, images=[tiny_image(1, size=size)], return_tensors="pt")
    n = inputs["input_ids"][0].tolist().count(model.config.image_token_id)
    assert n == _expected_image_tokens(model.config, *size)
    assert _feature_rows(model, inputs) == [n]
    if size == (40, 32):
        assert n == DOCUMENTED_TOKENS[kind]


@pytest.mark.parametrize("kind", VL_KINDS)
def test_two_images_in_one_message(kind, vl_dirs, loaded):
    processor, model = loaded(kind)
    sizes = [(40, 32), (32, 40)]
    images = [tiny_image(i, size=s) for i, s in enumerate(sizes)]
    messages = [{"role": "user", "content": [
        {"type": "image"}, {"type": "text", "text": "and"}, {"type": "image"}, {"type": "text", "text": "differ?"},
    ]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=text, images=images, return_tensors="pt")
    per_image = [_expected_image_tokens(model.config, *s) for s in sizes]
    ids = inputs["input_ids"][0].tolist()
    assert ids.count(model.config.image_token_id) == sum(per_image)
    assert _feature_rows(model, inputs) == per_image
    prompt, generated = hf_greedy(vl_dirs[kind], messages, images, max_new_tokens=4)
    assert prompt == ids
    assert 1 <= len(generated) <= 4


@pytest.mark.parametrize("kind", VL_KINDS)
def test_hf_greedy_reference(kind, vl_dirs, loaded):
    processor, model = loaded(kind)
    eos = processor.tokenizer.eos_token_id
    image = tiny_image(0)
    prompt, generated = hf_greedy(vl_dirs[kind], _one_image_messages(), [image], max_new_tokens=6)
    assert len(generated) == 6 or (generated and generated[-1] == eos)
    assert prompt.count(model.config.image_token_id) == DOCUMENTED_TOKENS[kind]
    assert prompt[:3] == processor.tokenizer.encode("<|im_start|>user\n", add_special_tokens=False)
    # Deterministic, and the image matters: another image changes the first step's logits.
    assert hf_greedy(vl_dirs[kind], _one_image_messages(), [image], max_new_tokens=6) == (prompt, generated)
    logits = []
    for seed in (0, 1):
        text = processor.apply_chat_template(_one_image_messages(), add_generation_prompt=True, tokenize=False)
        inputs = processor(text=text, images=[tiny_image(seed)], return_tensors="pt")
        with torch.no_grad():
            logits.append(model(**inputs).logits[0, -1])
    assert int(logits[0].argmax()) == generated[0]
    assert not torch.allclose(logits[0], logits[1], atol=1e-3)
    # A text-only turn (string content, no images) works through the same reference.
    text_prompt, text_generated = hf_greedy(vl_dirs[kind], [{"role": "user", "content": "Hi"}], [], 3)
    assert model.config.image_token_id not in text_prompt and 1 <= len(text_generated) <= 3


def test_tiny_image_is_deterministic():
    a, b = tiny_image(3), tiny_image(3)
    assert a.size == (40, 32) and a.mode == "RGB"
    assert a.tobytes() == b.tobytes() != tiny_image(4).tobytes()
    assert tiny_image(3, size=(17, 61)).size == (17, 61)


def test_unknown_kind_is_rejected(tmp_path, tokenizer_dir):
    with pytest.raises(ValueError, match="unknown VL kind"):
        make_tiny_vl_model("llava_onevision", tmp_path, tokenizer_dir)
