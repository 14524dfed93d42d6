"""Vision-language models: images in prompts.

image_io.py  load_image (path, URL, data URL, bytes, PIL) and the content key of an image
inputs.py    the prompt forms that carry images -> messages + images
encoder.py   the vision tower and projector (transformers' own modules)
model.py     VisionModel: processor + encoder -> token ids and the image features' spans
config.py    VisionConfig (LMDeploy's name)
"""
from __future__ import annotations

from lmdeploy_sdk.vl.config import VisionConfig
from lmdeploy_sdk.vl.image_io import load_image

__all__ = ["VisionConfig", "load_image"]
