"""Per-request state on the engine thread: sampling policy and output processing.

A request's output passes token -> end check -> detokenizer -> stop-string
matcher -> a `Response` delta handed to its `emit` callback.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from lmdeploy_sdk.engine.sampler import SamplingParams
from lmdeploy_sdk.guided.compiler import GrammarMatcher
from lmdeploy_sdk.engine.sequence import EmbeddingSpan, Sequence
from lmdeploy_sdk.errors import ErrorCode
from lmdeploy_sdk.messages import GenerationConfig, Response
from lmdeploy_sdk.stop_strings import StopStringMatcher
from lmdeploy_sdk.tokenizer import IncrementalDetokenizer

Emit = Callable[[Response], None]


@dataclass
class Request:
    """What a caller submits: full prompt tokens plus policy; the engine does the rest."""

    request_id: str
    prompt_ids: list[int]
    gen_config: GenerationConfig
    emit: Emit
    session_id: int | None = None
    # gen_config.response_format's matcher, made by the submitter (compiling off the engine
    # thread); the engine makes it when it is missing
    grammar: GrammarMatcher | None = None
    # Prompt tokens fed as given embeddings (images' features; lmdeploy_sdk.vl makes them)
    embedding_spans: list[EmbeddingSpan] = field(default_factory=list)


@dataclass(eq=False)
class RequestState:
    request: Request
    seq: Sequence
    sampling: SamplingParams
    detok: IncrementalDetokenizer
    stops: StopStringMatcher
    end_ids: frozenset[int]
    input_len: int
    cached_tokens: int = 0
    num_generated: int = 0
    output_ids: list[int] = field(default_factory=list)
    finished: bool = False
    scheduled: bool = False

    def _delta(self, text: str, ids: list[int], logprobs, finish: str | None) -> Response:
        return Response(
            text=text,
            token_ids=ids,
            logprobs=logprobs,
            generate_token_len=len(self.output_ids),
            input_token_len=self.input_len,
            cached_tokens=self.cached_tokens,
            finish_reason=finish,
        )

    def accept(self, token: int) -> str | None:
        """Count a sampled token (the engine has put it in the sequence); the finish reason it
        causes at once (end token, length) or None.

        Cheap on purpose: the engine calls it right after sampling and launches the next
        step before `publish` works out the token's text.
        """
        self.num_generated += 1
        finish = None
        grammar = self.sampling.grammar
        if token in self.end_ids:
            finish = "stop"
        elif grammar is not None and (not grammar.accept(token) or grammar.done):
            finish = "stop"  # the output is complete (a refused token only follows a fully banned row)
        elif self.num_generated >= self.request.gen_config.max_new_tokens or len(self.seq) >= self.seq.max_len:
            finish = "length"
        if finish is not None:
            self.finished = True
        return finish

    def publish(self, token: int, logprobs: dict[int, float] | None, finish: str | None) -> bool:
        """Emit the delta of an accepted token (`finish` as `accept` returned it).

        Returns True when a stop string ended the request here, so the engine must release it.
        """
        text, ids, lps = "", [], None
        stopped = False
        if not (finish == "stop" and token in self.end_ids):  # an end token is not part of the output
            ids = [token]
            self.output_ids.append(token)
            lps = [logprobs] if logprobs is not None else None
            text, stopped = self.stops.update(self.detok.step(ids))
        ended_here = stopped and finish is None
        if stopped:
            finish = "stop"
        if finish is not None:
            if not stopped:  # release what the detokenizer and the matcher held back
                tail, stopped = self.stops.update(self.detok.flush())
                text += tail if stopped else tail + self.stops.flush()
            self.finished = True
        if text or ids or finish:
            self.request.emit(self._delta(text, ids, lps, finish))
        return ended_here

    def finish_now(self, reason: str, code: ErrorCode | None = None, message: str | None = None) -> None:
        """End without a new token (abort, error, or nothing to generate)."""
        if self.finished:
            return
        self.finished = True
        resp = self._delta("", [], None, reason)
        resp.error_code = int(code) if code is not None else None
        resp.error_message = message
        self.request.emit(resp)


def error_response(code: ErrorCode, message: str, input_len: int = 0) -> Response:
    return Response(
        finish_reason="error", error_code=int(code), error_message=message, input_token_len=input_len
    )
