"""CUDA graphs of the decode forward, one per padded batch size, replayed each step.

The sizes are graph_sizes.choose_graph_sizes's: a step replays the smallest that fits.

A decode step of a large model is hundreds of small kernel launches; replaying a
captured graph removes their CPU cost. The graphs read static input buffers that
each step fills in place: token ids, positions, cache slots, context lengths and
block tables. Rows past the real batch are padding: their slot is -1 (store_kv
skips it) and their context is 1 token, so they cost next to nothing.

The decode attention kernel fixes its split-K count at capture, from the longest
context (session_len); a replay is correct for any shorter context.
"""
from __future__ import annotations

import logging
import time

import torch

from lmdeploy_sdk.ops.transfer import padded_rows, pinned, to_device
from lmdeploy_sdk.ops import AttentionMetadata
from lmdeploy_sdk.models.decoder import KVCache

log = logging.getLogger(__name__)

# Up to this many block-table entries (bs * max_blocks) a step sends the table padded to
# max_blocks columns in the same host-to-device copy as kv_lens (small batches: the GPU
# waits on each extra copy); larger batches send only the columns in use.
WIDE_TABLE_ENTRIES = 16384


class DecodeGraphs:
    def __init__(
        self,
        model: torch.nn.Module,
        kv_caches: list[KVCache],
        sizes: list[int],
        max_context: int,
        block_size: int,
        device: torch.device,
    ):
        self.model = model
        self.kv_caches = kv_caches
        self.block_size = block_size
        self.device = device
        self.max_context = max_context
        if not sizes or sorted(set(sizes)) != list(sizes) or sizes[0] < 1:
            raise ValueError(f"graph batch sizes must be distinct, ascending and >= 1, got {sizes}")
        self.sizes = list(sizes)  # ascending; the last is the largest batch a step may have
        n = self.sizes[-1]
        self.max_blocks = -(-max_context // block_size)
        # Static inputs, laid out per graph size bs so that one host-to-device copy fills
        # each buffer (a step's copies and launches before the first layer idle the GPU):
        # inputs64[:3 bs] = ids | positions | slots, inputs32[:bs] = kv_lens, then the block
        # table [bs, max_blocks]. See _views.
        self.inputs64 = torch.zeros(3 * n, dtype=torch.int64, device=device)
        self.inputs32 = torch.zeros(n * (1 + self.max_blocks), dtype=torch.int32, device=device)
        self.cu_seqlens = torch.arange(n + 1, dtype=torch.int32, device=device)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        self.pool = None

    def _views(self, bs: int) -> dict[str, torch.Tensor]:
        """The static inputs of graph `bs`: ids, positions, slots [bs] int64; kv_lens [bs] and
        block_tables [bs, max_blocks] int32."""
        return {
            "input_ids": self.inputs64[:bs],
            "positions": self.inputs64[bs : 2 * bs],
            "slots": self.inputs64[2 * bs : 3 * bs],
            "kv_lens": self.inputs32[:bs],
            "block_tables": self.inputs32[bs : bs * (1 + self.max_blocks)].view(bs, self.max_blocks),
        }

    def _meta(self, bs: int) -> AttentionMetadata:
        v = self._views(bs)
        return AttentionMetadata(
            cu_seqlens_q=self.cu_seqlens[: bs + 1],
            kv_lens=v["kv_lens"],
            block_tables=v["block_tables"],
            slot_mapping=v["slots"],
            q_lens_cpu=[1] * bs,
            kv_lens_cpu=[self.max_context] * bs,
            max_q_len=1,
            max_kv_len=self.max_context,
            block_size=self.block_size,
        )

    def _forward(self, bs: int) -> torch.Tensor:
        v = self._views(bs)
        return self.model(v["input_ids"], v["positions"], self.kv_caches, self._meta(bs))

    @torch.inference_mode()
    def capture(self) -> None:
        """Capture every batch size, largest first so the smaller graphs reuse its memory pool."""
        torch.cuda.synchronize(self.device)
        started = time.perf_counter()
        for bs in reversed(self.sizes):
            v = self._views(bs)  # padding inputs while capturing: no cache write, 1-token contexts
            v["input_ids"].zero_()
            v["positions"].zero_()
            v["slots"].fill_(-1)
            v["kv_lens"].fill_(1)
            v["block_tables"].zero_()
            self._forward(bs)  # warm up: loads modules, settles allocations
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                self.outputs[bs] = self._forward(bs)
            if self.pool is None:
                self.pool = graph.pool()
            self.graphs[bs] = graph
        torch.cuda.synchronize(self.device)
        log.info("captured %d decode CUDA graphs in %.1f s, batch sizes %s",
                 len(self.sizes), time.perf_counter() - started, self.sizes)

    def padded_size(self, n: int) -> int | None:
        return next((s for s in self.sizes if s >= n), None)

    @torch.inference_mode()
    def run(
        self,
        input_ids: list[int],
        positions: list[int],
        slots: list[int],
        kv_lens: list[int],
        tables: list[list[int]],
        fill: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Replay the graph for len(input_ids) decodes; returns hidden [n, H] (a view, valid until next run).

        fill: (rows, tokens) on the device that overwrite those rows of input_ids.
        """
        n = len(input_ids)
        bs = self.padded_size(n)
        assert bs is not None and bs in self.graphs, f"no graph for batch {n}"
        pad = bs - n
        # pinned host buffers copied straight into the static inputs, queued behind the
        # previous step (see transfer.to_device), which may still be reading them
        ids_pos_slots = pinned(input_ids + [0] * pad + positions + [0] * pad + slots + [-1] * pad, torch.int64)
        self.inputs64[: 3 * bs].copy_(ids_pos_slots, non_blocking=True)
        if bs * self.max_blocks <= WIDE_TABLE_ENTRIES:  # the whole table rides along with kv_lens
            lens_tables = pinned(kv_lens + [1] * pad + padded_rows(tables, self.max_blocks, bs), torch.int32)
            self.inputs32[: bs * (1 + self.max_blocks)].copy_(lens_tables, non_blocking=True)
        else:  # only the columns in use: padding every row to max_blocks would cost the host more
            width = max(len(t) for t in tables)
            lens_tables = to_device(kv_lens + [1] * pad + padded_rows(tables, width, bs), torch.int32, self.device)
            views = self._views(bs)
            views["kv_lens"].copy_(lens_tables[:bs])
            views["block_tables"][:, :width].copy_(lens_tables[bs:].view(bs, width))
        if fill is not None:
            self.inputs64[:bs].index_copy_(0, *fill)
        self.graphs[bs].replay()
        return self.outputs[bs][:n]
