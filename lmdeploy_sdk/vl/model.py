"""VisionModel: a vision-language checkpoint's processor and vision encoder; turns a prompt with
images into token ids (each image's placeholder expanded as the processor does) and the image
features that replace those tokens' embeddings in our engine."""
from __future__ import annotations

from pathlib import Path

import torch
import transformers

from lmdeploy_sdk.engine.sequence import EmbeddingSpan
from lmdeploy_sdk.vl.config import VisionConfig
from lmdeploy_sdk.vl.encoder import VisionEncoder
from lmdeploy_sdk.vl.image_io import image_key
from lmdeploy_sdk.vl.inputs import VisionPrompt


def _image_token_id(config: transformers.PretrainedConfig) -> int:
    for name in ("image_token_id", "image_token_index"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise ValueError("the model's config names no image token (image_token_id)")


class VisionModel:
    def __init__(self, model_dir: Path, dtype: torch.dtype, device: torch.device,
                 config: VisionConfig | None = None, random_weights: bool = False) -> None:
        self.config = config or VisionConfig()
        self.processor = transformers.AutoProcessor.from_pretrained(model_dir)
        self.encoder = VisionEncoder(model_dir, dtype, device, random_weights)
        self.image_token_id = _image_token_id(self.encoder.config)

    def prompt_text(self, prompt: VisionPrompt, do_preprocess: bool = True) -> str:
        if do_preprocess:
            return self.processor.apply_chat_template(prompt.messages, add_generation_prompt=True, tokenize=False)
        texts = [p.get("text", "") if p.get("type") == "text" else self.processor.image_token
                 for m in prompt.messages for p in (m["content"] if isinstance(m["content"], list)
                                                    else [{"type": "text", "text": m["content"]}])]
        return "".join(texts)

    def encode(self, prompt: VisionPrompt, do_preprocess: bool = True, max_tokens: int | None = None
               ) -> tuple[list[int], list[EmbeddingSpan]]:
        """(token ids, one EmbeddingSpan per image). ValueError when the text and images disagree,
        or when the prompt (images included) is longer than max_tokens: checked before the tower runs."""
        return self.encode_many([prompt], do_preprocess, max_tokens)[0]

    def encode_many(self, prompts: list[VisionPrompt], do_preprocess: bool = True, max_tokens: int | None = None
                    ) -> list[tuple[list[int], list[EmbeddingSpan]]]:
        """encode() of several prompts, their images through the tower together, up to
        max_batch_size at a time."""
        processed = [self._process(p, do_preprocess) for p in prompts]
        for prompt, (ids, _, _) in zip(prompts, processed):
            if max_tokens is not None and len(ids) > max_tokens:
                images = sum(1 for t in ids if t == self.image_token_id)
                raise ValueError(f"the prompt has {len(ids)} tokens ({images} for its {len(prompt.images)} "
                                 f"image(s)), more than session_len={max_tokens}")
        pixels = [row for _, rows, _ in processed for row in rows]  # one [..., 3, H, W] per image
        sizes = [size for _, _, sizes in processed for size in sizes]
        features = iter(self._features(pixels, sizes))
        out = []
        for prompt, (ids, rows, _) in zip(prompts, processed):
            out.append((ids, self._spans(ids, prompt, [next(features) for _ in rows]) if rows else []))
        return out

    def _process(self, prompt: VisionPrompt, do_preprocess: bool) -> tuple[list[int], list, list]:
        """(token ids, pixel values per image, image size per image or None) from the processor."""
        text = self.prompt_text(prompt, do_preprocess)
        try:
            batch = self.processor(text=[text], images=prompt.images or None, return_tensors="pt")
        except (ValueError, TypeError) as e:
            raise ValueError(f"the prompt and its {len(prompt.images)} image(s) do not fit together: {e}") from None
        ids = batch["input_ids"][0].tolist()
        if not prompt.images:
            return ids, [], []
        sizes = batch.get("image_sizes")
        return ids, list(batch["pixel_values"]), list(sizes) if sizes is not None else [None] * len(prompt.images)

    def _features(self, pixels: list[torch.Tensor], sizes: list) -> list[torch.Tensor]:
        """Per image features; consecutive images of one shape go through the tower together."""
        out: list[torch.Tensor] = []
        i = 0
        while i < len(pixels):
            j = i + 1
            while j < len(pixels) and j - i < self.config.max_batch_size and pixels[j].shape == pixels[i].shape:
                j += 1
            image_sizes = torch.stack(sizes[i:j]) if sizes[i] is not None else None
            out += self.encoder.features(torch.stack(pixels[i:j]), image_sizes)
            i = j
        return out

    def _spans(self, ids: list[int], prompt: VisionPrompt, features: list[torch.Tensor]) -> list[EmbeddingSpan]:
        positions = [i for i, t in enumerate(ids) if t == self.image_token_id]
        if len(positions) != sum(f.shape[0] for f in features):
            raise ValueError(f"the prompt has {len(positions)} image tokens but its {len(features)} image(s) give "
                             f"{sum(f.shape[0] for f in features)} features")
        spans, at = [], 0
        for image, feats in zip(prompt.images, features):
            start = positions[at]
            at += feats.shape[0]
            if positions[at - 1] != start + feats.shape[0] - 1:
                raise ValueError("an image's placeholder tokens are not contiguous in the prompt")
            spans.append(EmbeddingSpan(start, start + feats.shape[0], image_key(image), feats))
        return spans
