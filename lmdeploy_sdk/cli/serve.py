"""`lmdeploy-sdk serve api_server | api_client | gradio | ray` (LMDeploy's subcommands and flags)."""
from __future__ import annotations

import argparse
import logging
import os
import random
import sys
from pathlib import Path

from lmdeploy_sdk.cli.engine_args import add_engine_args, engine_config
from lmdeploy_sdk.model_source import DEFAULT_MODEL

LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
API_KEYS_ENV = "LMDEPLOY_SDK_API_KEYS"
CLIENT_HELP = "Type a message. 'end' starts a new conversation, 'exit' quits."


def register(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="serve a model over HTTP, or chat with a server")
    kinds = serve.add_subparsers(dest="serve_command", metavar="{api_server,api_client,gradio,ray}",
                                 parser_class=type(serve))
    serve.set_defaults(func=_help_of(serve))

    api = kinds.add_parser("api_server", help="OpenAI-compatible API server")
    add_api_server_args(api)
    api.set_defaults(func=run_api_server)

    client = kinds.add_parser("api_client", help="chat in the terminal with a running api_server")
    client.add_argument("url", help="the server, e.g. http://127.0.0.1:23333")
    client.add_argument("--api-key", default=None)
    client.add_argument("--session-id", type=int, default=None, help="default: a random one")
    client.add_argument("--max-new-tokens", type=int, default=None)
    client.add_argument("--temperature", type=float, default=0.8)
    client.set_defaults(func=run_api_client)

    page = kinds.add_parser("gradio", help="the chat web page, for a running server URL or a model")
    page.add_argument("url_or_model", nargs="?", default=DEFAULT_MODEL,
                      help="http(s)://... of a running api_server, or a model to load")
    _add_listen_args(page, default_port=6006)
    page.add_argument("--api-key", default=None, help="key for the upstream api_server")
    page.add_argument("--model-name", default=None)
    _add_session_args(page)
    add_engine_args(page)
    page.set_defaults(func=run_gradio)

    from lmdeploy_sdk.cli import serve_ray  # it builds on this module's flags

    serve_ray.register(kinds)


def add_api_server_args(api: argparse.ArgumentParser) -> None:
    """The model, listening, auth, CORS, limits, sessions and engine flags (also `serve ray`'s)."""
    api.add_argument("model", nargs="?", default=DEFAULT_MODEL,
                     help=f"HF model directory or embedded model name (default: {DEFAULT_MODEL})")
    _add_listen_args(api, default_port=23333)
    api.add_argument("--model-name", default=None, help="the name clients use (default: from the model path)")
    api.add_argument("--api-keys", nargs="+", default=None,
                     help=f"accept only these Bearer keys (also from --api-keys-file and ${API_KEYS_ENV})")
    api.add_argument("--api-keys-file", default=None,
                     help="a file of keys, one per line (keeps them out of the process list)")
    api.add_argument("--allow-origins", nargs="+", default=None, help="CORS: allowed origins ('*' for any)")
    api.add_argument("--allow-credentials", action="store_true", help="CORS: allow credentials")
    api.add_argument("--allow-methods", nargs="+", default=["*"], help="CORS: allowed methods")
    api.add_argument("--allow-headers", nargs="+", default=["*"], help="CORS: allowed headers")
    api.add_argument("--max-concurrent-requests", type=int, default=256,
                     help="sequences in flight before new requests get 429 (default 256)")
    api.add_argument("--shutdown-grace", type=float, default=30.0,
                     help="seconds running requests may take after SIGTERM (default 30)")
    api.add_argument("--disable-metrics", action="store_true", help="do not serve /metrics")
    _add_session_args(api)
    add_engine_args(api)


def _help_of(parser: argparse.ArgumentParser):
    def show_help(_: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    return show_help


def _add_listen_args(p: argparse.ArgumentParser, default_port: int) -> None:
    p.add_argument("--server-name", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--server-port", type=int, default=default_port, help=f"port (default {default_port})")
    p.add_argument("--allowed-hosts", nargs="+", default=None,
                   help="Host header values to answer ('*' any, '*.example.com'); default: the loopback "
                        "names when --server-name is a loopback address, any host otherwise")
    p.add_argument("--log-level", default="INFO", choices=LOG_LEVELS, type=str.upper)


def _add_session_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-sessions", type=int, default=10_000,
                   help="sessions kept between requests; the least recently used idle one ends first (default 10000)")
    p.add_argument("--session-ttl", type=float, default=3600.0,
                   help="seconds an idle session is kept (default 3600)")


def _listen_settings(args: argparse.Namespace) -> dict:
    """The ServerSettings fields every serving command shares."""
    from lmdeploy_sdk.server.allowed_hosts import default_allowed_hosts

    hosts = args.allowed_hosts if args.allowed_hosts is not None else default_allowed_hosts(args.server_name)
    return dict(allowed_hosts=tuple(hosts), max_sessions=args.max_sessions, session_ttl_s=args.session_ttl)


def api_keys(args: argparse.Namespace) -> tuple[str, ...]:
    """--api-keys, then the lines of --api-keys-file, then $LMDEPLOY_SDK_API_KEYS (comma or space separated)."""
    keys = list(args.api_keys or ())
    if args.api_keys_file:
        try:
            lines = Path(args.api_keys_file).read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise ValueError(f"--api-keys-file {args.api_keys_file!r}: {e.strerror or e}") from None
        keys += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    keys += os.environ.get(API_KEYS_ENV, "").replace(",", " ").split()
    return tuple(dict.fromkeys(keys))


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("lmdeploy_sdk").setLevel(level)


def _serve_engine(model: str, args: argparse.Namespace, settings) -> int:
    """Build the engine, then serve it. A bad model or option fails while building, as one
    line from the CLI (cli.main), before anything says it is serving."""
    from lmdeploy_sdk import AsyncEngine
    from lmdeploy_sdk.server import create_app, run_server

    engine = AsyncEngine(model, engine_config(args), model_name=args.model_name)
    try:
        app = create_app(engine, settings)
        logging.getLogger("lmdeploy_sdk.server").info("%s loaded; serving on http://%s:%d", model, args.server_name,
                                                      args.server_port)
        run_server(app, args.server_name, args.server_port, args.log_level)
    finally:
        engine.close()
    return 0


def api_server_settings(args: argparse.Namespace):
    """The ServerSettings of add_api_server_args' flags."""
    from lmdeploy_sdk.server import ServerSettings

    return ServerSettings(
        api_keys=api_keys(args),
        allow_origins=tuple(args.allow_origins or ()),
        allow_credentials=args.allow_credentials,
        allow_methods=tuple(args.allow_methods),
        allow_headers=tuple(args.allow_headers),
        max_concurrent_requests=args.max_concurrent_requests,
        shutdown_grace_s=args.shutdown_grace,
        disable_metrics=args.disable_metrics,
        **_listen_settings(args),
    )


def run_api_server(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    return _serve_engine(args.model, args, api_server_settings(args))


def run_gradio(args: argparse.Namespace) -> int:
    from lmdeploy_sdk.server import ServerSettings, run_server

    setup_logging(args.log_level)
    target = args.url_or_model
    if target.startswith(("http://", "https://")):
        from lmdeploy_sdk.server.page_proxy import create_page_app

        app = create_page_app(target, args.api_key)
        run_server(app, args.server_name, args.server_port, args.log_level)
        return 0
    return _serve_engine(target, args, ServerSettings(chat_page_at_root=True, **_listen_settings(args)))


def run_api_client(args: argparse.Namespace) -> int:
    from lmdeploy_sdk.server import APIClient, APIClientError

    session_id = args.session_id if args.session_id is not None else random.randint(1, 2**31 - 1)
    print(CLIENT_HELP)
    with APIClient(args.url, api_key=args.api_key) as client:
        try:
            _client_loop(client, session_id, args)
        finally:  # end the session on the server so its KV cache is freed
            try:
                next(client.chat_interactive_v1("", session_id=session_id, interactive_mode=False))
            except (APIClientError, OSError) as e:
                print(f"could not end the session: {e}", file=sys.stderr)
    return 0


def _client_loop(client, session_id: int, args: argparse.Namespace) -> None:
    from lmdeploy_sdk.server import APIClientError

    while True:
        try:
            prompt = input("\nuser> ")
        except EOFError:
            return
        command = prompt.strip()
        if command == "exit":
            return
        try:
            if command == "end":
                next(client.chat_interactive_v1("", session_id=session_id, interactive_mode=False))
                print("(new conversation)")
                continue
            print("assistant> ", end="", flush=True)
            for chunk in client.chat_interactive_v1(
                prompt, session_id=session_id, interactive_mode=True, stream=True,
                request_output_len=args.max_new_tokens, temperature=args.temperature,
            ):
                print(chunk["text"], end="", flush=True)
            print()
        except APIClientError as e:
            print(f"\nerror: {e}", file=sys.stderr)
