"""Runs one scheduled batch through the model: flat tensors in, logits out.

Owns the paged KV cache tensors. Free of globals so one runner can exist per
device (and, later, per tensor-parallel rank).
"""
from __future__ import annotations

import logging
import os

import torch

from lmdeploy_sdk.engine.cuda_graphs import DecodeGraphs
from lmdeploy_sdk.engine.graph_sizes import choose_graph_sizes
from lmdeploy_sdk.ops.transfer import to_device
from lmdeploy_sdk.engine.scheduler import ScheduledBatch
from lmdeploy_sdk.engine.sequence import Sequence
from lmdeploy_sdk.models.config import ModelConfig
from lmdeploy_sdk.models.decoder import Embeds
from lmdeploy_sdk.quant.kv_cache import QuantizedKVCache
from lmdeploy_sdk.ops import AttentionMetadata

log = logging.getLogger(__name__)

# (source tokens [S] on the device, [(flat input row, index into source)])
TokenFill = tuple[torch.Tensor, list[tuple[int, int]]]
# (input rows [F], their tokens [F]) on the device
DeviceFill = tuple[torch.Tensor, torch.Tensor]

# Rows of the vocabulary projection computed at once when scoring whole sequences.
_SCORE_ROWS = 512
# Set to 1 to run decode eagerly (debugging, profiling).
DISABLE_GRAPHS_ENV = "LMDEPLOY_SDK_DISABLE_CUDA_GRAPHS"


def native_kernels_run(device: torch.device, dtype: torch.dtype) -> bool:
    """Our kernels serve this runner's ops: a CUDA device, a dtype they have, and native_available()."""
    if device.type != "cuda":
        return False
    from lmdeploy_sdk import native
    from lmdeploy_sdk.native.layout import SUPPORTED_DTYPES

    return dtype in SUPPORTED_DTYPES and native.native_available()


def graphs_supported(model: torch.nn.Module, dtype: torch.dtype, device: torch.device) -> bool:
    """Decode graphs need every op of the model on our kernels (the reference ops read host lengths);
    the attention kernels, 16-bit and int8/int4 cache alike, take head dims 64 and 128."""
    if os.environ.get(DISABLE_GRAPHS_ENV) == "1":
        return False
    return native_kernels_run(device, dtype) and model.config.head_dim in (64, 128)


def preload_native_modules(device: torch.device, dtype: torch.dtype) -> None:
    """Load every kernel module on the GPU now rather than inside the first step that uses it.

    The driver compiles our PTX for the GPU at load time (cached on disk only
    after the first run on a machine); loaded lazily, that stalled the first prompt step
    of a fresh machine's first run. Only where our kernels run (native_kernels_run);
    raises NativeKernelError if a module fails to load.
    """
    if native_kernels_run(device, dtype):
        from lmdeploy_sdk import native
        from lmdeploy_sdk.native import int4_gemm
        from lmdeploy_sdk.native.driver import device_index

        native.load_all_modules(device_index(device))
        int4_gemm.prepare(device)  # its split-K counters: allocated before any graph capture


class ModelRunner:
    def __init__(
        self,
        model: torch.nn.Module,
        num_blocks: int,
        block_size: int,
        dtype: torch.dtype,
        device: torch.device,
        max_batch_size: int = 1,
        max_context: int = 1,
        kv_bits: int = 0,
    ):
        """kv_bits: 0 for a cache in `dtype`, 8 or 4 for an int8/int4 one (quant.kv_cache)."""
        cfg = model.config
        self.model = model
        self.device = device
        self.dtype = dtype
        self.block_size = block_size
        self.kv_bits = kv_bits
        # kv_caches[layer] = (k, v), each [num_blocks, block_size, Hkv, D] (or a QuantizedKVCache)
        self.kv_caches = [
            (self._new_cache(num_blocks, cfg), self._new_cache(num_blocks, cfg)) for _ in range(cfg.num_layers)
        ]
        self.graphs: DecodeGraphs | None = None
        preload_native_modules(device, dtype)
        if graphs_supported(model, dtype, device):
            sizes = choose_graph_sizes(model, max_batch_size, device)
            self.graphs = DecodeGraphs(model, self.kv_caches, sizes, max_context, block_size, device)
            self.graphs.capture()

    def _new_cache(self, num_blocks: int, cfg: ModelConfig) -> torch.Tensor | QuantizedKVCache:
        if self.kv_bits:
            return QuantizedKVCache.zeros(
                num_blocks, self.block_size, cfg.num_kv_heads, cfg.head_dim, self.kv_bits, self.device, self.dtype
            )
        shape = (num_blocks, self.block_size, cfg.num_kv_heads, cfg.head_dim)
        return torch.zeros(shape, dtype=self.dtype, device=self.device)

    def _copy_blocks(self, copies: list[tuple[int, int]]) -> None:
        if not copies:
            return
        src = to_device([s for s, _ in copies], torch.int64, self.device)
        dst = to_device([d for _, d in copies], torch.int64, self.device)
        for cache in (c for pair in self.kv_caches for c in pair):
            if isinstance(cache, QuantizedKVCache):
                cache.copy_blocks(src, dst)
            else:
                cache.index_copy_(0, dst, cache.index_select(0, src))

    def prepare_inputs(self, items: list[tuple[Sequence, int]], fill: TokenFill | None = None):
        """(input ids [T], positions [T], AttentionMetadata) on the device for the next n tokens
        of each (sequence, n), whose blocks are allocated; fill as in `execute`."""
        bs = self.block_size
        input_ids, positions, slots, q_lens, kv_lens = [], [], [], [], []
        for seq, n in items:
            start = seq.num_computed
            input_ids += seq.token_ids[start : start + n]
            positions += range(start, start + n)
            slots += [seq.block_table[p // bs] * bs + p % bs for p in range(start, start + n)]
            q_lens.append(n)
            kv_lens.append(start + n)
        dev = self.device
        tables = [seq.block_table for seq, _ in items]
        meta = AttentionMetadata.from_lists(q_lens, kv_lens, tables, slots, bs, dev)
        device_fill = self._with_fill(input_ids, fill)
        ids = to_device(input_ids, torch.int64, dev)
        if device_fill is not None:
            ids.index_copy_(0, *device_fill)
        pos = to_device(positions, torch.int64, dev)
        return ids, pos, meta

    @torch.inference_mode()
    def execute(
        self, batch: ScheduledBatch, fill: TokenFill | None = None
    ) -> tuple[list[Sequence], torch.Tensor | None]:
        """Compute the batch; returns the sequences that reached their last token and their logits.

        fill: input tokens still being sampled on the device (their host value is a
        placeholder), as (source tokens [S], [(flat input row, index into source)]).
        Updates num_computed of every scheduled sequence.
        """
        self._copy_blocks(batch.copies)
        if self._graph_ready(batch.items):
            input_ids = [seq.token_ids[-1] for seq, _ in batch.items]
            device_fill = self._with_fill(input_ids, fill)
            hidden = self._decode_with_graph(batch.items, input_ids, device_fill)
        else:
            ids, pos, meta = self.prepare_inputs(batch.items, fill)
            embeds = self._embeds(batch.items) if self.model.config.has_vision else None
            hidden = self.model(ids, pos, self.kv_caches, meta, embeds)  # [T, H]
        done, rows, end = [], [], 0
        for seq, n in batch.items:
            seq.num_computed += n
            end += n  # one past this sequence's last input row
            if seq.num_computed == len(seq.token_ids):
                done.append(seq)
                rows.append(end - 1)
        if not done:
            return done, None
        if len(rows) == hidden.shape[0]:  # every row ends its sequence's step (e.g. all decodes)
            last = hidden
        else:
            last = hidden.index_select(0, to_device(rows, torch.int64, self.device))
        return done, self.model.compute_logits(last)  # [S, V]

    def _embeds(self, items: list[tuple[Sequence, int]]) -> Embeds | None:
        """The input rows of this step that take given embeddings (image features), and those
        embeddings; a chunk may start or end inside an image."""
        rows: list[int] = []
        pieces: list[torch.Tensor] = []
        offset = 0
        for seq, n in items:
            start = seq.num_computed
            for span in seq.embedding_spans:
                a, b = max(span.start, start), min(span.end, start + n)
                if a < b:
                    rows += range(offset + a - start, offset + b - start)
                    pieces.append(span.embeddings[a - span.start : b - span.start])
            offset += n
        if not rows:
            return None
        values = torch.cat(pieces).to(self.device, non_blocking=True)  # [R, hidden]
        return to_device(rows, torch.int64, self.device), values

    def _with_fill(self, input_ids: list[int], fill: TokenFill | None) -> DeviceFill | None:
        """Zero the placeholders of `input_ids` in place; the device rows and values that replace them."""
        if fill is None or not fill[1]:
            assert min(input_ids) >= 0, "an input token is a placeholder with no device value"
            return None
        source, pairs = fill
        for row, _ in pairs:
            input_ids[row] = 0
        assert min(input_ids) >= 0, "an input token is a placeholder with no device value"
        rows = to_device([r for r, _ in pairs], torch.int64, self.device)
        values = source.index_select(0, to_device([i for _, i in pairs], torch.int64, self.device))
        return rows, values

    def _graph_ready(self, items: list[tuple[Sequence, int]]) -> bool:
        return (
            self.graphs is not None
            and all(n == 1 and seq.is_decoding for seq, n in items)
            and self.graphs.padded_size(len(items)) is not None
        )

    def _decode_with_graph(
        self, items: list[tuple[Sequence, int]], input_ids: list[int], fill: DeviceFill | None
    ) -> torch.Tensor:
        bs = self.block_size
        positions = [seq.num_computed for seq, _ in items]
        return self.graphs.run(
            input_ids=input_ids,
            positions=positions,
            slots=[seq.block_table[p // bs] * bs + p % bs for (seq, _), p in zip(items, positions)],
            kv_lens=[p + 1 for p in positions],
            tables=[seq.block_table for seq, _ in items],
            fill=fill,
        )  # [B, H]

    @torch.inference_mode()
    def score(self, seq: Sequence, n: int, targets: list[int], top1: list[int] | None = None) -> float:
        """Prefill the next n tokens of `seq` (blocks allocated); sum of -log p(targets[i]) at each.

        targets[i] < 0 is ignored (the last token of the sequence has no successor). top1, if
        given, gets each position's most likely next token appended (accuracy comparisons).
        """
        ids, pos, meta = self.prepare_inputs([(seq, n)])
        hidden = self.model(ids, pos, self.kv_caches, meta)  # [n, H]
        seq.num_computed += n
        tgt = torch.tensor(targets, dtype=torch.int64, device=self.device)  # [n]
        total = 0.0
        for i in range(0, n, _SCORE_ROWS):  # bounded [rows, V] logits at a time
            logits = self.model.compute_logits(hidden[i : i + _SCORE_ROWS]).float()  # [rows, V]
            loss = torch.nn.functional.cross_entropy(
                logits, tgt[i : i + _SCORE_ROWS], ignore_index=-1, reduction="sum"
            )
            total += float(loss)
            if top1 is not None:
                top1 += logits.argmax(dim=-1).tolist()
        return total
