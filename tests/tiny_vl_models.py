"""Tiny random-weight llava-family checkpoints (vision tower + projector + text model), for tests.

Like tests/tiny_models.py, each checkpoint is written by transformers' own `save_pretrained`
(safetensors) together with a real processor: the SmolLM2 tokenizer plus an `<image>` special
token, an image processor sized to the tiny vision tower, and a chat template that renders
image parts as `<image>`. So the SDK loads it exactly as it would a hub download, and
`hf_greedy` gives transformers' own answer to compare against.

Sizes (vision tower 30x30 pixels, patch 6, so 5x5 = 25 patches) keep image token counts small:
llava and llava_interleave put 25 tokens per image; llava_next puts 113 for the default
40x32 `tiny_image` (25 base + 8 rows x 10 unpadded grid features + 8 newlines).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import transformers
from tiny_models import _COMMON

VL_KINDS = ["llava", "llava_interleave", "llava_next"]

IMAGE_TOKEN = "<image>"
IMAGE_SIZE = 30
PATCH_SIZE = 6
# [height, width] pairs; a 40x32 (w x h) image picks [60, 60], a 2x2 grid of 30x30 tiles.
GRID_PINPOINTS = [[30, 30], [30, 60], [60, 30], [60, 60]]

_TEXT = _COMMON  # the text-only tiny models' sizes: well separated logits, fast on CPU

_VISION = dict(
    image_size=IMAGE_SIZE,
    patch_size=PATCH_SIZE,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
)

# SmolLM2's im_start/im_end turns; content is a string or a list of text/image parts, and
# each image part becomes one `<image>` that the processor expands to the image's tokens.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _image_processor(kind: str):
    """The PIL-backend image processor (no torchvision needed) sized to the tiny tower."""
    common = dict(do_convert_rgb=True)
    if kind == "llava":
        return transformers.CLIPImageProcessorPil(
            size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, **common
        )
    if kind == "llava_interleave":
        return transformers.SiglipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, **common)
    if kind == "llava_next":
        return transformers.LlavaNextImageProcessorPil(
            size={"shortest_edge": IMAGE_SIZE},
            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
            image_grid_pinpoints=GRID_PINPOINTS,
            **common,
        )
    raise ValueError(f"unknown VL kind {kind!r}; expected one of {VL_KINDS}")


def _config(kind: str, vocab_size: int, bos: int, eos: int, image_token_id: int):
    text_kw = dict(_TEXT, vocab_size=vocab_size, bos_token_id=bos, eos_token_id=eos, pad_token_id=eos)
    common = dict(image_token_index=image_token_id, image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2,
                  tie_word_embeddings=False)
    if kind == "llava":
        return transformers.LlavaConfig(
            vision_config=transformers.CLIPVisionConfig(**_VISION),
            text_config=transformers.LlamaConfig(**text_kw),
            vision_feature_select_strategy="default",
            vision_feature_layer=-2,
            **common,
        )
    if kind == "llava_interleave":
        return transformers.LlavaConfig(
            # llava-interleave-qwen drops SigLIP's attention-pooling head (it uses patch features only).
            vision_config=transformers.SiglipVisionConfig(**_VISION, vision_use_head=False),
            text_config=transformers.Qwen2Config(**text_kw),
            vision_feature_select_strategy="full",
            vision_feature_layer=-1,
            **common,
        )
    if kind == "llava_next":
        return transformers.LlavaNextConfig(
            vision_config=transformers.CLIPVisionConfig(**_VISION),
            text_config=transformers.LlamaConfig(**text_kw),
            vision_feature_select_strategy="default",
            vision_feature_layer=-2,
            image_grid_pinpoints=GRID_PINPOINTS,
            **common,
        )
    raise ValueError(f"unknown VL kind {kind!r}; expected one of {VL_KINDS}")


def make_tiny_vl_model(kind: str, out: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """Write a tiny random llava-family checkpoint (float32) and its processor to `out`."""
    if kind not in VL_KINDS:
        raise ValueError(f"unknown VL kind {kind!r}; expected one of {VL_KINDS}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # A named model-specific special token: the tokenizer gets `.image_token`/`.image_token_id`
    # (what the processors read) and tokenizer_config.json keeps it across save/load.
    tok = transformers.AutoTokenizer.from_pretrained(tokenizer_dir, extra_special_tokens={"image_token": IMAGE_TOKEN})
    tok.chat_template = CHAT_TEMPLATE
    image_token_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    assert image_token_id == len(tok) - 1, "the <image> token should be the one new token"

    processor_cls = transformers.LlavaNextProcessor if kind == "llava_next" else transformers.LlavaProcessor
    clip = kind != "llava_interleave"
    processor = processor_cls(
        image_processor=_image_processor(kind),
        tokenizer=tok,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default" if clip else "full",
        # CLIP prepends a CLS position; the "default" strategy drops it again.
        num_additional_image_tokens=1 if clip else 0,
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
    )

    cfg = _config(kind, len(tok), tok.bos_token_id, tok.eos_token_id, image_token_id)
    torch.manual_seed(seed)
    model_cls = (transformers.LlavaNextForConditionalGeneration if kind == "llava_next"
                 else transformers.LlavaForConditionalGeneration)
    model = model_cls(cfg).to(torch.float32).eval()
    model.generation_config.pad_token_id = tok.eos_token_id
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return out


def tiny_image(seed: int, size: tuple[int, int] = (40, 32)):
    """A deterministic random RGB image of `size` (width, height); odd aspect so anyres tiling matters."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    width, height = size
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, mode="RGB")


def load_tiny_vl(model_dir: Path):
    """(processor, model) for a tiny VL checkpoint, float32 and eval, as transformers loads them.

    The PIL image backend is forced so pixel values don't depend on whether torchvision is installed.
    """
    model_dir = Path(model_dir)
    processor = transformers.AutoProcessor.from_pretrained(model_dir, backend="pil")
    model = transformers.AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    return processor, model.eval()


def hf_greedy(
    model_dir: Path, messages: list[dict], images: list, max_new_tokens: int
) -> tuple[list[int], list[int]]:
    """Transformers' own greedy answer: (prompt ids as the processor expands them, generated ids).

    The reference that the SDK's VL path is compared against; generation may stop early at eos.
    """
    processor, model = load_tiny_vl(model_dir)
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=text, images=images or None, return_tensors="pt")
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(torch.float32)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    prompt = inputs["input_ids"][0].tolist()
    return prompt, out[0, len(prompt):].tolist()
