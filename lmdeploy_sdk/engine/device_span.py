"""CUDA events around one engine step's device work, for `bench throughput --step-times`.

A step's wall-clock period says how long the loop took; these say how long the GPU
worked on the step and how long it sat idle before starting it (the loop launched
it late), which the period alone cannot tell apart.
"""
from __future__ import annotations

import torch


class DeviceSpan:
    """Marks the stream where a step's work starts; `close` marks where it ends.

    step: the step's launch number, so idle time is only taken between consecutive steps.
    """

    def __init__(self, step: int) -> None:
        self.step = step
        self._start = torch.cuda.Event(enable_timing=True)
        self._start.record()
        self._end: torch.cuda.Event | None = None

    def close(self) -> None:
        self._end = torch.cuda.Event(enable_timing=True)
        self._end.record()

    def seconds(self) -> float:
        """Device time from the start mark to the end mark (waits for the end mark)."""
        assert self._end is not None, "close() the span first"
        self._end.synchronize()
        return self._start.elapsed_time(self._end) / 1e3

    def idle_after(self, earlier: "DeviceSpan") -> float:
        """Seconds the device spent between `earlier`'s end and this span's start."""
        assert earlier._end is not None and self._end is not None
        self._end.synchronize()
        return max(0.0, earlier._end.elapsed_time(self._start) / 1e3)


def device_span(device: torch.device, step: int) -> DeviceSpan | None:
    """A span of launch number `step` started now on the current stream, or None off CUDA."""
    return DeviceSpan(step) if device.type == "cuda" else None
