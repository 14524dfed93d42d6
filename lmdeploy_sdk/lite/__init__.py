"""Offline quantization (LMDeploy's `lmdeploy.lite`): `auto_awq` calibrates a float model
layer by layer and writes 4-bit weights in AutoAWQ's layout, which `pipeline()` loads.

Modules: calibration (offline calibration and held-out text), model (architectures, scaling
groups, layer inputs), awq (the per-layer search), writer (AutoAWQ layout), api (auto_awq, the
RTN baseline), compare (the perplexity comparison command).
"""
from lmdeploy_sdk.lite.api import auto_awq, rtn_quantize
from lmdeploy_sdk.lite.calibration import DEFAULT_CALIB_DATASET

__all__ = ["auto_awq", "rtn_quantize", "DEFAULT_CALIB_DATASET"]
