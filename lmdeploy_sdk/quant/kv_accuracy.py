"""What an int8 and an int4 KV cache cost in accuracy, against the unquantized cache.

    python -m lmdeploy_sdk.quant.kv_accuracy [MODEL] [--eval-tokens 8192 --eval-seqlen 1024]

scores the held-out text (lmdeploy_sdk/lite/data/heldout_sotu_1961_1963.txt) in windows
of --eval-seqlen tokens with quant_policy 0, 8 and 4 (each window one prefill, so every
position attends over the quantized keys and values of all before it, as in decode) and
prints, for int8 and int4: the share of positions whose greedy (top-1) next token equals
the unquantized cache's, and the perplexity change.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from lmdeploy_sdk.model_source import DEFAULT_MODEL

POLICIES = (0, 8, 4)


@dataclass(frozen=True)
class Scores:
    perplexity: float
    top1: list[int]  # the most likely next token at every scored position, windows concatenated


@dataclass(frozen=True)
class KVAccuracy:
    scores: dict[int, Scores]  # by quant_policy
    eval_tokens: int

    def agreement(self, policy: int) -> float:
        """Share of positions whose top-1 token equals the unquantized cache's."""
        ref, got = self.scores[0].top1, self.scores[policy].top1
        return sum(a == b for a, b in zip(ref, got)) / len(ref)

    def ppl_change(self, policy: int) -> float:
        """Relative perplexity change versus the unquantized cache (0.01 = 1% higher)."""
        return self.scores[policy].perplexity / self.scores[0].perplexity - 1.0


def score_windows(model_dir: str, windows: list[list[int]], quant_policy: int, device: str) -> Scores:
    """Perplexity and per-position top-1 of the windows under one KV cache setting."""
    from lmdeploy_sdk.lite.compare import perplexity

    top1: list[int] = []
    return Scores(perplexity(model_dir, windows, quant_policy, device, top1), top1)


def measure(model: str = DEFAULT_MODEL, eval_tokens: int = 8192, eval_seqlen: int = 1024,
            device: str = "cpu") -> KVAccuracy:
    from transformers import AutoTokenizer

    from lmdeploy_sdk.lite.compare import eval_windows
    from lmdeploy_sdk.model_source import resolve_model_path

    model_dir = str(resolve_model_path(model))
    windows = eval_windows(AutoTokenizer.from_pretrained(model_dir), eval_tokens, eval_seqlen)
    scores = {p: score_windows(model_dir, windows, p, device) for p in POLICIES}
    return KVAccuracy(scores, sum(len(w) for w in windows))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lmdeploy_sdk.quant.kv_accuracy",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL, help=f"HF directory or embedded name ({DEFAULT_MODEL})")
    p.add_argument("--eval-tokens", type=int, default=8192, help="held-out tokens scored (default 8192)")
    p.add_argument("--eval-seqlen", type=int, default=1024, help="tokens per scored window (default 1024)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = measure(args.model, args.eval_tokens, args.eval_seqlen, args.device)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"kv_accuracy: error: {exc}", file=sys.stderr)
        return 2
    print(f"held-out text, {result.eval_tokens} tokens; unquantized cache perplexity "
          f"{result.scores[0].perplexity:.3f}")
    for policy, name in ((8, "int8"), (4, "int4")):
        print(f"  {name} KV: top-1 agreement {100 * result.agreement(policy):6.2f}%   perplexity "
              f"{result.scores[policy].perplexity:.3f} ({100 * result.ppl_change(policy):+.2f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
