"""`lmdeploy-sdk chat MODEL`: a streaming REPL on one stateful session."""
from __future__ import annotations

import argparse
import sys

from lmdeploy_sdk.cli.engine_args import BACKENDS, add_engine_args, engine_config, note

HELP = "Type a message. 'end' starts a new conversation, 'exit' quits; Ctrl-C stops an answer."
STOP_HINT = "Ctrl-C again or 'exit' quits"


def register(sub) -> None:
    p = sub.add_parser("chat", help="chat with a model in the terminal")
    p.add_argument("model", nargs="?", default=None, help="HF model directory or embedded model name "
                   "(default: the embedded smollm2-135m-instruct)")
    p.add_argument("model_path", nargs="?", default=None, metavar="[MODEL]",
                   help="LMDeploy's old form `chat turbomind DIR`: the model after the backend name")
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


def resolve_model(args: argparse.Namespace) -> str | None:
    """The model to chat with; LMDeploy's old `chat turbomind DIR` names the backend first."""
    if args.model in BACKENDS:
        note("chat", f"'{args.model}' is LMDeploy's backend name; lmdeploy-sdk has one engine")
        return args.model_path
    if args.model_path is not None:
        raise ValueError(f"unexpected second model argument {args.model_path!r} (only `chat turbomind MODEL` "
                         "takes two)")
    return args.model


def _answer(stream) -> None:
    """Print one streamed answer. Ctrl-C stops it (the request is aborted and the turn is not
    kept) and returns to the prompt; Ctrl-C at the prompt quits."""
    try:
        for delta in stream:
            sys.stdout.write(delta.text)
            sys.stdout.flush()
            if delta.finish_reason == "error":
                print(f"\n[error] {delta.error_message}")
        print()
    except KeyboardInterrupt:
        stream.close()
        print(f"\n(stopped; {STOP_HINT})")


def run(args: argparse.Namespace) -> int:
    from lmdeploy_sdk import ChatTemplateConfig, GenerationConfig, pipeline

    template = ChatTemplateConfig(meta_instruction=args.system) if args.system else None
    pipe = pipeline(resolve_model(args), backend_config=engine_config(args), chat_template_config=template)
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
            _answer(pipe.chat(text, session=session, gen_config=gen, stream_response=True))
    except KeyboardInterrupt:
        print()
    finally:
        session.close()
        pipe.close()
    return 0
