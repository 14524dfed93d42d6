"""A quantized KV cache: int8 or int4 keys and values (`quant_policy=8` / `4`) on the embedded model.

    python examples/kv_cache_quant.py

Loads SmolLM2-135M-Instruct with each KV cache setting and the same memory for the cache,
and prints how many tokens the cache holds, a greedy answer and the perplexity of a short
text. The int8 cache holds about twice the tokens of a 16-bit one (four times on CPU, where
the unquantized cache is float32) and answers alike; int4 holds about twice int8's again.
"""
from __future__ import annotations

import argparse
import math

from lmdeploy_sdk import GenerationConfig, TurbomindEngineConfig, pipeline

QUESTION = "Name three planets of the solar system."
TEXT = ("The Moon is Earth's only natural satellite. It orbits at an average distance of 384,400 km, "
        "about 30 times the diameter of Earth, and always shows the same face to us.")
NAMES = {0: "unquantized", 8: "int8 (quant_policy=8)", 4: "int4 (quant_policy=4)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-new-tokens", type=int, default=40)
    args = parser.parse_args()
    greedy = GenerationConfig(max_new_tokens=args.max_new_tokens, do_sample=False)
    for policy, name in NAMES.items():
        # The same 1% of free memory for the cache each time (on CPU also capped at 2 GiB)
        config = TurbomindEngineConfig(quant_policy=policy, cache_max_entry_count=0.01, session_len=2048,
                                       max_batch_size=256)
        with pipeline("smollm2-135m-instruct", backend_config=config) as pipe:
            stats = pipe.async_engine.stats()
            answer = pipe(QUESTION, gen_config=greedy).text.strip().replace("\n", " ")
            ids = pipe.tokenizer.encode(TEXT)
            ppl = math.exp(pipe.get_ppl(ids)[0])
        tokens = stats.blocks_total * config.cache_block_seq_len
        print(f"{name}: {stats.kv_cache_bits}-bit elements, KV cache {stats.blocks_total} blocks = {tokens} tokens; "
              f"perplexity {ppl:.2f}")
        print(f"    {answer[:120]}")


if __name__ == "__main__":
    main()
