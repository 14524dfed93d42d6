"""One token bitmask per step: filled on the host for the rows that have a grammar, applied on
the logits' device just before sampling. Bit t of a row (word t // 32, bit t % 32) allows token t."""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import llguidance
import torch

from lmdeploy_sdk.guided.compiler import MASK_THREADS, GrammarMatcher


class BitmaskFiller:
    """Computes many rows' masks in parallel (llguidance's own thread pool; the GIL is released),
    now or in the background while the engine thread does other host work."""

    def __init__(self) -> None:
        self._executor = llguidance.LLExecutor(MASK_THREADS)
        self._background = ThreadPoolExecutor(1, thread_name_prefix="lmdeploy-sdk-masks")

    def fill_async(self, matchers: list[GrammarMatcher], words: int) -> Future:
        """fill() in the background; the Future's result is the mask."""
        return self._background.submit(self.fill, matchers, words)

    def close(self) -> None:
        self._background.shutdown(wait=True)

    def fill(self, matchers: list[GrammarMatcher], words: int) -> torch.Tensor:
        # -> [G, words] int32 on the host, row g for matchers[g]
        pin = torch.cuda.is_available()
        mask = torch.empty((len(matchers), words), dtype=torch.int32, pin_memory=pin)
        self._executor.unsafe_compute_mask_ptr(
            [(m.matcher, g) for g, m in enumerate(matchers)], mask.data_ptr(), words * 4, len(matchers)
        )
        return mask


def apply_bitmask(logits: torch.Tensor, rows: torch.Tensor, mask: torch.Tensor) -> None:
    """logits [S, V] float (in place): rows [G] int64 of S get -inf where mask [G, W] int32 has a 0 bit;
    tokens past W * 32 (a padded vocabulary) are never allowed."""
    vocab = logits.shape[1]
    shifts = torch.arange(32, dtype=torch.int32, device=mask.device)
    allowed = ((mask.unsqueeze(-1) >> shifts) & 1).bool().flatten(1)  # [G, W*32]
    width = min(vocab, allowed.shape[1])
    sub = logits.index_select(0, rows)  # [G, V]
    sub[:, :width].masked_fill_(~allowed[:, :width], float("-inf"))
    sub[:, width:] = float("-inf")
    logits.index_copy_(0, rows, sub)
