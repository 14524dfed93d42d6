"""The guided-decoding fields of an API request (response_format, logit_bias) -> engine terms.

Compiling a response format here, in the request's worker thread, puts the grammar in the
tokenizer's cache, so the engine's per-request copy is cheap, and a bad schema is a 400
that names `response_format` before anything is queued.
"""
from __future__ import annotations

from typing import Any, Protocol

import msgspec

from lmdeploy_sdk.guided import grammar_spec
from lmdeploy_sdk.guided.compiler import GrammarCompiler
from lmdeploy_sdk.server.invalid_request import InvalidRequest
from lmdeploy_sdk.server.schemas.chat import ResponseFormat


class GrammarTokenizer(Protocol):
    @property
    def grammars(self) -> GrammarCompiler: ...


def response_format_dict(fmt: ResponseFormat | None) -> dict[str, Any] | None:
    """The request's response_format as GenerationConfig takes it (None: plain text)."""
    if fmt is None or fmt.type == "text":
        return None
    return msgspec.to_builtins(fmt)


def compile_response_format(fmt: dict[str, Any] | None, tokenizer: GrammarTokenizer, param: str) -> None:
    """Check and compile it now (cached for the engine); InvalidRequest naming `param` if it cannot be used."""
    try:
        spec = grammar_spec(fmt)
        if spec is not None:
            tokenizer.grammars.matcher(spec)
    except ValueError as e:
        raise InvalidRequest(str(e), param) from e


def logit_bias_ids(bias: dict[str, float] | None) -> dict[int, float] | None:
    """OpenAI's {"token id": bias} with string keys -> {token id: bias}."""
    if not bias:
        return None
    out = {}
    for key, value in bias.items():
        if not key.isdigit():
            raise InvalidRequest(f"logit_bias keys must be token ids (digits), got {key!r}", "logit_bias")
        out[int(key)] = float(value)
    return out
