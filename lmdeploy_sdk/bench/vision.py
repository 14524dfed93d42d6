"""`bench vision --shape llava-1.5-7b`: a llava-1.5-7b-shaped model (CLIP ViT-L/14 at 336 px, a
Llama-2-7B text model) with random weights: time to first token for one 336x336 image and a
32-token question, offline throughput of N image requests, and the vision part's share of it."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image

from lmdeploy_sdk.engine.factory import LoadedModel
from lmdeploy_sdk.messages import GenerationConfig
from lmdeploy_sdk.sync_pipeline import Pipeline
from lmdeploy_sdk.vl.inputs import from_text

# shape -> (vision tower, text model) sizes; llava-tiny is for smoke tests on a CPU
SHAPES = {
    "llava-1.5-7b": (dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16),
                     dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                          num_key_value_heads=32)),
    "llava-tiny": (dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
                   dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2)),
}
# Renders image parts as the placeholder, ChatML turns (the tokenizer lent is SmolLM2's).
_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>\n' }}{% elif part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# 32 tokens with SmolLM2's tokenizer
QUESTION = ("Look at this picture carefully and tell me what you see in it, which colours stand out, "
            "and what the scene might be, in two short sentences, please")


def _image_processor():
    pil = getattr(transformers, "CLIPImageProcessorPil", None)  # transformers >= 5.20 without torchvision
    cls = pil or transformers.CLIPImageProcessor
    return cls(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})


def write_llava_shape(shape: str, tokenizer_src: Path, out: Path) -> Path:
    """config.json and processor files of `shape` (no weights: load with random_weights)."""
    if shape not in SHAPES:
        raise ValueError(f"--shape {shape}: vision shapes are {', '.join(SHAPES)}")
    tok = transformers.AutoTokenizer.from_pretrained(tokenizer_src, extra_special_tokens={"image_token": "<image>"})
    vision_sizes, text_sizes = SHAPES[shape]
    vision = transformers.CLIPVisionConfig(**vision_sizes, image_size=336, patch_size=14, projection_dim=768,
                                           hidden_act="quick_gelu")
    text = transformers.LlamaConfig(**text_sizes, vocab_size=len(tok), max_position_embeddings=4096,
                                    rms_norm_eps=1e-5, tie_word_embeddings=False,
                                    bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    config = transformers.LlavaConfig(vision_config=vision, text_config=text,
                                      image_token_index=tok.convert_tokens_to_ids("<image>"),
                                      vision_feature_layer=-2, vision_feature_select_strategy="default",
                                      projector_hidden_act="gelu")
    config.architectures = ["LlavaForConditionalGeneration"]
    config.dtype = torch.bfloat16
    config.save_pretrained(out)
    tok.chat_template = _CHAT_TEMPLATE
    processor = transformers.LlavaProcessor(image_processor=_image_processor(), tokenizer=tok, patch_size=14,
                                            vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                            chat_template=_CHAT_TEMPLATE)
    processor.save_pretrained(out)
    return out


def _images(n: int, seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (336, 336, 3), dtype=np.uint8)) for _ in range(n)]


class _Timed:
    """Wall time spent in a function (the GPU synchronised at both ends)."""

    def __init__(self, fn, device: torch.device) -> None:
        self.fn, self.device, self.seconds = fn, device, 0.0

    def __call__(self, *args, **kw):
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda *_: None)
        sync(self.device)
        t = time.perf_counter()
        out = self.fn(*args, **kw)
        sync(self.device)
        self.seconds += time.perf_counter() - t
        return out


def vision_bench(loaded: LoadedModel, num_requests: int, output_len: int, seed: int = 0) -> dict:
    pipe = Pipeline(loaded=loaded)
    vision = loaded.vision
    device = loaded.engine.runner.device
    question_tokens = len(loaded.tokenizer.encode_prompt(QUESTION, do_preprocess=False))
    image_tokens = sum(s.end - s.start for s in vision.encode(from_text(QUESTION, _images(1, seed)[0]))[1])
    first = GenerationConfig(max_new_tokens=1, do_sample=False)
    images = _images(num_requests + 4, seed)
    for image in images[:2]:  # warm-up: kernels, graphs, the processor
        pipe((QUESTION, image), gen_config=first)
    ttfts, towers = [], []
    for image in images[2:4]:
        tower = _Timed(vision.encoder.features, device)
        vision.encoder.features = tower
        t = time.perf_counter()
        out = pipe((QUESTION, image), gen_config=first)
        ttfts.append(time.perf_counter() - t)
        towers.append(tower.seconds)
        vision.encoder.features = tower.fn
    prompt_tokens = out.input_token_len
    encode = _Timed(vision.encode_many, device)
    tower = _Timed(vision.encoder.features, device)
    vision.encode_many, vision.encoder.features = encode, tower
    cfg = GenerationConfig(max_new_tokens=output_len, do_sample=False, ignore_eos=True)
    t = time.perf_counter()
    outs = pipe([(QUESTION, image) for image in images[4:]], gen_config=cfg)
    wall = time.perf_counter() - t
    vision.encode_many, vision.encoder.features = encode.fn, tower.fn
    generated = sum(len(o.token_ids) for o in outs)
    return {
        "prompt_tokens": prompt_tokens,
        "question_tokens": question_tokens,
        "image_tokens": image_tokens,
        "ttft_s": min(ttfts),
        "ttft_vision_tower_s": towers[ttfts.index(min(ttfts))],
        "requests": num_requests,
        "output_len": output_len,
        "wall_s": wall,
        "requests_per_s": num_requests / wall,
        "output_tok_s": generated / wall,
        "vision_encode_s": encode.seconds,  # processor + tower, all requests
        "vision_tower_s": tower.seconds,
        "vision_share_of_wall": encode.seconds / wall,
        "vision_max_batch_size": vision.config.max_batch_size,
    }
