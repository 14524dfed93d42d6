"""VisionConfig: LMDeploy's knob for the vision part of a vision-language model."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VisionConfig:
    """max_batch_size: images the vision tower encodes at once (more takes more memory at
    peak). thread_safe: accepted for LMDeploy's spelling; encoding here is always safe to call
    from several threads (it holds a lock)."""

    max_batch_size: int = 1
    thread_safe: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.max_batch_size, int) or self.max_batch_size < 1:
            raise ValueError(f"max_batch_size={self.max_batch_size!r} must be an int >= 1")
