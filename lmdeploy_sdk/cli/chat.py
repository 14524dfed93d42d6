"""`lmdeploy-sdk chat MODEL`: a streaming REPL on one stateful session."""
from __future__ import annotations

import argparse
import sys

from lmdeploy_sdk.cli.engine_args import add_engine_args, engine_config

HELP = "Type a message. 'end' starts a new conversation, 'exit' quits."


def register(sub) -> None:
    p = sub.add_parser("chat", help="chat with a model in the terminal")
    p.add_argument("model", nargs="?", default=None, help="HF model directory or embedded model name "
                   "(default: the embedded smollm2-135m-instruct)")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--system", default=None, help="system prompt")
    add_engine_args(p)
    p.set_defaults(func=run)


def _read(prompt: str) -> str | None:
    try:
        return input(prompt)
    except EOFError:
        return None


def run(args: argparse.Namespace) -> int:
    from lmdeploy_sdk import ChatTemplateConfig, GenerationConfig, pipeline

    template = ChatTemplateConfig(meta_instruction=args.system) if args.system else None
    pipe = pipeline(args.model, backend_config=engine_config(args), chat_template_config=template)
    gen = GenerationConfig(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
        top_k=args.top_k, do_sample=args.do_sample,
    )
    print(HELP)
    session = pipe.session()
    try:
        while True:
            text = _read("\n>>> ")
            if text is None or text.strip() == "exit":
                break
            if text.strip() == "end":
                session.close()
                session = pipe.session()
                print("(new conversation)")
                continue
            if not text.strip():
                continue
            for delta in pipe.chat(text, session=session, gen_config=gen, stream_response=True):
                sys.stdout.write(delta.text)
                sys.stdout.flush()
                if delta.finish_reason == "error":
                    print(f"\n[error] {delta.error_message}")
            print()
    except KeyboardInterrupt:
        print()
    finally:
        session.close()
        pipe.close()
    return 0
