"""The vision tower and projector of a LLaVA checkpoint, as transformers implements them.

We build transformers' LlavaModel / LlavaNextModel with an empty text model (the text model
runs on our engine) and load only the vision weights, so `get_image_features` (feature layer
and CLS selection, projector, LLaVA-NeXT's tiling and newline packing) is theirs, unchanged.
"""
from __future__ import annotations

import copy
import threading
from pathlib import Path

import torch
import transformers
from safetensors import safe_open

from lmdeploy_sdk.models.checkpoint import checkpoint_files
from lmdeploy_sdk.models.errors import CheckpointError

_MODEL_CLASSES = {
    "LlavaForConditionalGeneration": "LlavaModel",
    "LlavaNextForConditionalGeneration": "LlavaNextModel",
}
# checkpoint prefix -> the name under LlavaModel / LlavaNextModel
_PREFIXES = (("model.vision_tower.", "vision_tower."), ("model.multi_modal_projector.", "multi_modal_projector."),
             ("model.image_newline", "image_newline"), ("vision_tower.", "vision_tower."),
             ("multi_modal_projector.", "multi_modal_projector."), ("image_newline", "image_newline"))


def _vision_name(name: str) -> str | None:
    for prefix, ours in _PREFIXES:
        if name.startswith(prefix):
            return ours + name[len(prefix):]
    return None


def _known_spelling(name: str, params: dict) -> str:
    """Hub checkpoints name the tower's weights vision_tower.vision_model.*, transformers 5 saves
    vision_tower.*: take whichever this transformers' module has."""
    for candidate in (name, name.replace("vision_tower.vision_model.", "vision_tower.", 1),
                      name.replace("vision_tower.", "vision_tower.vision_model.", 1)):
        if candidate in params:
            return candidate
    return name


def _without_text_model(config: transformers.PretrainedConfig) -> transformers.PretrainedConfig:
    """The config with a text model of no layers (the projector still needs its hidden size)."""
    config = copy.deepcopy(config)
    text = config.text_config
    text.num_hidden_layers = 0
    text.vocab_size = 1
    text.pad_token_id = None
    if getattr(text, "layer_types", None) is not None:
        text.layer_types = []
    return config


class VisionEncoder:
    """images' pixel values -> one [tokens, hidden] feature tensor per image."""

    def __init__(self, model_dir: Path, dtype: torch.dtype, device: torch.device, random_weights: bool = False
                 ) -> None:
        """random_weights: keep transformers' random initialisation (benchmarks of real shapes)."""
        config = transformers.AutoConfig.from_pretrained(model_dir)
        arch = (config.architectures or [""])[0]
        if arch not in _MODEL_CLASSES:
            raise CheckpointError(f"{model_dir} is a {arch or 'model'} without a vision part we run")
        self.config = config
        self.device, self.dtype = device, dtype
        model = getattr(transformers, _MODEL_CLASSES[arch])(_without_text_model(config))
        del model.language_model
        if not random_weights:
            self._load(model, model_dir)
        self.model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
        self._lock = threading.Lock()  # one encode at a time: callers may be several threads

    @staticmethod
    @torch.no_grad()
    def _load(model: torch.nn.Module, model_dir: Path) -> None:
        params = dict(model.named_parameters())
        loaded: set[str] = set()
        for f in checkpoint_files(model_dir):
            with safe_open(f, framework="pt") as sf:
                for name in sf.keys():
                    ours = _vision_name(name)
                    if ours is None:
                        continue
                    ours = _known_spelling(ours, params)
                    if ours not in params:
                        raise CheckpointError(f"unexpected vision tensor {name} in {f.name}")
                    tensor = sf.get_tensor(name)
                    if tensor.shape != params[ours].shape:
                        raise CheckpointError(f"vision tensor {name} in {f.name} has shape {tuple(tensor.shape)}, "
                                              f"expected {tuple(params[ours].shape)}")
                    params[ours].copy_(tensor)
                    loaded.add(ours)
        missing = sorted(set(params) - loaded)
        if missing:
            raise CheckpointError(f"the checkpoint in {model_dir} lacks vision tensors: {', '.join(missing[:10])}")

    @torch.inference_mode()
    def features(self, pixel_values: torch.Tensor, image_sizes: torch.Tensor | None) -> list[torch.Tensor]:
        """pixel_values: as the model's processor makes them, one row per image -> [n_i, hidden] per image."""
        kw = {"vision_feature_layer": self.config.vision_feature_layer,
              "vision_feature_select_strategy": self.config.vision_feature_select_strategy}
        if image_sizes is not None:
            kw["image_sizes"] = image_sizes.to(self.device)
        with self._lock:
            out = self.model.get_image_features(pixel_values.to(self.device, self.dtype), **kw)
        feats = out.pooler_output if hasattr(out, "pooler_output") else out
        return [f.reshape(-1, f.shape[-1]) for f in feats]
