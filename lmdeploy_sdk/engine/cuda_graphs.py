"""CUDA graphs of the decode forward, one per padded batch size, replayed each step.

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

import torch

from lmdeploy_sdk.ops.transfer import padded_rows, to_device
from lmdeploy_sdk.ops import AttentionMetadata

log = logging.getLogger(__name__)

GRAPH_BATCH_SIZES = (
    1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024
)


class DecodeGraphs:
    def __init__(
        self,
        model: torch.nn.Module,
        kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
        max_batch_size: int,
        max_context: int,
        block_size: int,
        device: torch.device,
    ):
        self.model = model
        self.kv_caches = kv_caches
        self.block_size = block_size
        self.device = device
        self.max_context = max_context
        self.sizes = [s for s in GRAPH_BATCH_SIZES if s <= max_batch_size]
        if not self.sizes or self.sizes[-1] < max_batch_size:
            self.sizes.append(max_batch_size)
        n = self.sizes[-1]
        max_blocks = -(-max_context // block_size)
        i32, i64 = dict(dtype=torch.int32, device=device), dict(dtype=torch.int64, device=device)
        # static inputs, [n] or [n, max_blocks]
        self.input_ids = torch.zeros(n, **i64)
        self.positions = torch.zeros(n, **i64)
        self.slots = torch.full((n,), -1, **i64)
        self.kv_lens = torch.ones(n, **i32)
        self.block_tables = torch.zeros(n, max_blocks, **i32)
        self.cu_seqlens = torch.arange(n + 1, **i32)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        self.pool = None

    def _meta(self, bs: int) -> AttentionMetadata:
        return AttentionMetadata(
            cu_seqlens_q=self.cu_seqlens[: bs + 1],
            kv_lens=self.kv_lens[:bs],
            block_tables=self.block_tables[:bs],
            slot_mapping=self.slots[:bs],
            q_lens_cpu=[1] * bs,
            kv_lens_cpu=[self.max_context] * bs,
            max_q_len=1,
            max_kv_len=self.max_context,
            block_size=self.block_size,
        )

    def _forward(self, bs: int) -> torch.Tensor:
        return self.model(self.input_ids[:bs], self.positions[:bs], self.kv_caches, self._meta(bs))

    @torch.inference_mode()
    def capture(self) -> None:
        """Capture every batch size, largest first so the smaller graphs reuse its memory pool."""
        torch.cuda.synchronize(self.device)
        for bs in reversed(self.sizes):
            self._forward(bs)  # warm up: loads modules, settles allocations
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                self.outputs[bs] = self._forward(bs)
            if self.pool is None:
                self.pool = graph.pool()
            self.graphs[bs] = graph
        torch.cuda.synchronize(self.device)
        log.info("captured decode CUDA graphs for batch sizes %s", self.sizes)

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
        width = max(len(t) for t in tables)
        pad = bs - n
        # one pinned host buffer per dtype, queued behind the previous step (see runner.to_device)
        host = to_device(
            input_ids + [0] * pad + positions + [0] * pad + slots + [-1] * pad + kv_lens + [1] * pad,
            torch.int64, self.device,
        ).view(4, bs)
        table = to_device(padded_rows(tables, width, bs), torch.int32, self.device).view(bs, width)
        self.input_ids[:bs].copy_(host[0])
        if fill is not None:
            self.input_ids.index_copy_(0, *fill)
        self.positions[:bs].copy_(host[1])
        self.slots[:bs].copy_(host[2])
        self.kv_lens[:bs].copy_(host[3])
        self.block_tables[:bs, :width].copy_(table)
        self.graphs[bs].replay()
        return self.outputs[bs][:n]
