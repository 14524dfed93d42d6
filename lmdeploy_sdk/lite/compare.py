"""Perplexity of a model float, round-to-nearest int4 and AWQ int4, on the held-out text.

    python -m lmdeploy_sdk.lite.compare [MODEL] --w-group-size 64

writes the RTN and AWQ checkpoints (AutoAWQ layout) into a temp directory (or --work-dir),
loads all three into the engine, scores the held-out text
(lite/data/heldout_sotu_1961_1963.txt, never used for calibration) with the scorer `Pipeline.get_ppl` runs
in windows of --eval-seqlen tokens, and prints the three perplexities and
(awq - float) / (rtn - float): the share of RTN's perplexity increase that AWQ keeps.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lmdeploy_sdk.lite.calibration import DEFAULT_CALIB_DATASET, heldout_text
from lmdeploy_sdk.model_source import DEFAULT_MODEL


@dataclass(frozen=True)
class Comparison:
    float_ppl: float
    rtn_ppl: float
    awq_ppl: float
    eval_tokens: int
    awq_seconds: float

    @property
    def ratio(self) -> float:
        """(awq - float) / (rtn - float); below 1 AWQ loses less than plain rounding."""
        return (self.awq_ppl - self.float_ppl) / (self.rtn_ppl - self.float_ppl)


def eval_windows(tokenizer, eval_tokens: int, seqlen: int) -> list[list[int]]:
    """The held-out text's first eval_tokens tokens, in windows of seqlen (the last may be shorter)."""
    ids = tokenizer(heldout_text(), add_special_tokens=False)["input_ids"][:eval_tokens]
    return [w for w in (ids[i : i + seqlen] for i in range(0, len(ids), seqlen)) if len(w) >= 2]


def perplexity(model_dir: str | Path, windows: list[list[int]], quant_policy: int = 0, device: str = "cpu",
               top1: list[int] | None = None) -> float:
    """exp of the mean cross-entropy over all predicted tokens of the windows, by the engine (each
    window one prefill). top1, if given, gets the most likely next token at every predicted position
    (quant.kv_accuracy compares them across KV caches)."""
    from lmdeploy_sdk import TurbomindEngineConfig
    from lmdeploy_sdk.engine.factory import load
    from lmdeploy_sdk.engine.scoring import score

    longest = max(len(w) for w in windows)
    config = TurbomindEngineConfig(device=device, session_len=longest, cache_max_entry_count=-(-longest // 64) + 1,
                                   cache_block_seq_len=64, max_batch_size=1, quant_policy=quant_policy)
    total = 0.0
    loaded = load(str(model_dir), config)
    try:
        for w in windows:
            positions: list[int] | None = [] if top1 is not None else None
            total += loaded.engine.call(lambda e, w=w, out=positions: score(e, w, out)).result() * (len(w) - 1)
            if top1 is not None:
                top1 += positions[:-1]  # the last position has no next token to predict
    finally:
        loaded.close()
    return math.exp(total / sum(len(w) - 1 for w in windows))


def compare(
    model: str = DEFAULT_MODEL,
    w_group_size: int = 64,
    calib_dataset: str = DEFAULT_CALIB_DATASET,
    calib_samples: int = 64,
    calib_seqlen: int = 512,
    search_scale: bool = False,
    eval_tokens: int = 8192,
    eval_seqlen: int = 1024,
    work_dir: str | Path | None = None,
) -> Comparison:
    """Quantize `model` both ways into work_dir (default: a temp dir, removed after) and score all three."""
    from transformers import AutoTokenizer

    from lmdeploy_sdk.lite.api import auto_awq, rtn_quantize
    from lmdeploy_sdk.model_source import resolve_model_path

    model_dir = resolve_model_path(model)
    windows = eval_windows(AutoTokenizer.from_pretrained(model_dir), eval_tokens, eval_seqlen)
    with tempfile.TemporaryDirectory(prefix="lmdeploy-sdk-compare-") as tmp:
        root = Path(work_dir) if work_dir is not None else Path(tmp)
        rtn_dir = rtn_quantize(model_dir, root / "rtn", w_group_size=w_group_size)
        start = time.perf_counter()
        awq_dir = auto_awq(model_dir, root / "awq", calib_dataset=calib_dataset, calib_samples=calib_samples,
                           calib_seqlen=calib_seqlen, w_group_size=w_group_size, search_scale=search_scale,
                           device="cpu")
        awq_seconds = time.perf_counter() - start
        return Comparison(perplexity(model_dir, windows), perplexity(rtn_dir, windows), perplexity(awq_dir, windows),
                          sum(len(w) for w in windows), awq_seconds)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lmdeploy_sdk.lite.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL, help=f"HF directory or embedded name ({DEFAULT_MODEL})")
    p.add_argument("--w-group-size", type=int, default=64)
    p.add_argument("--calib-dataset", default=DEFAULT_CALIB_DATASET)
    p.add_argument("--calib-samples", type=int, default=64)
    p.add_argument("--calib-seqlen", type=int, default=512)
    p.add_argument("--search-scale", action="store_true", help="grid-search the AWQ scale exponent")
    p.add_argument("--eval-tokens", type=int, default=8192, help="held-out tokens scored (default 8192)")
    p.add_argument("--eval-seqlen", type=int, default=1024, help="tokens per scored window (default 1024)")
    p.add_argument("--work-dir", default=None, help="keep the rtn/ and awq/ checkpoints here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = compare(args.model, args.w_group_size, args.calib_dataset, args.calib_samples, args.calib_seqlen,
                         args.search_scale, args.eval_tokens, args.eval_seqlen, args.work_dir)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"compare: error: {exc}", file=sys.stderr)
        return 2
    print(f"held-out perplexity, {result.eval_tokens} tokens, w4 g{args.w_group_size}:")
    print(f"  float  {result.float_ppl:8.3f}")
    print(f"  rtn    {result.rtn_ppl:8.3f}")
    print(f"  awq    {result.awq_ppl:8.3f}   (auto_awq took {result.awq_seconds:.0f} s)")
    print(f"ratio (awq - float) / (rtn - float) = {result.ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
