"""asyncio front end of the engine, used by the server and the shims.

Nothing here blocks the event loop on the GPU: requests go to the engine thread
and outputs come back through an asyncio.Queue per request. The engine thread
hands them over through one mailbox per event loop, so a step that produces a
token for each of hundreds of requests wakes the loop once, not once per token.
"""
from __future__ import annotations

import asyncio
import collections
import threading
import uuid
import weakref
from pathlib import Path
from typing import AsyncIterator

from lmdeploy_sdk import prompts
from lmdeploy_sdk.engine.engine import EngineStats
from lmdeploy_sdk.engine.factory import LoadedModel, load
from lmdeploy_sdk.engine.request import Request, error_response
from lmdeploy_sdk.errors import ErrorCode
from lmdeploy_sdk.guided import grammar_spec
from lmdeploy_sdk.messages import ChatTemplateConfig, GenerationConfig, Response, TurbomindEngineConfig


class _LoopMailbox:
    """Responses from the engine thread for the queues of one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: collections.deque[tuple[asyncio.Queue, Response]] = collections.deque()
        self._lock = threading.Lock()
        self._wakeup_pending = False

    def post(self, queue: asyncio.Queue, resp: Response) -> None:
        """Engine thread: queue `resp`; the first post since the last drain wakes the loop."""
        with self._lock:
            self._items.append((queue, resp))
            if self._wakeup_pending:
                return
            self._wakeup_pending = True
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed; its requests are aborted by their generators
            pass

    def _drain(self) -> None:
        with self._lock:
            items, self._items = self._items, collections.deque()
            self._wakeup_pending = False
        for queue, resp in items:
            queue.put_nowait(resp)


class AsyncEngine:
    def __init__(
        self,
        model_path: str | Path | None = None,
        backend_config: TurbomindEngineConfig | None = None,
        chat_template_config: ChatTemplateConfig | None = None,
        model_name: str | None = None,
        *,
        loaded: LoadedModel | None = None,
    ):
        """Load a model, or (loaded=...) share the one a Pipeline already holds."""
        self._loaded = loaded or load(model_path, backend_config, chat_template_config, model_name)
        self._owns = loaded is None
        self.model_name = model_name or self._loaded.model_name
        self.tokenizer = self._loaded.tokenizer
        self.session_len = self._loaded.session_len
        self.backend_config = self._loaded.backend_config
        self._mailboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopMailbox] = (
            weakref.WeakKeyDictionary()
        )
        self._mailboxes_lock = threading.Lock()  # loops in several threads may share this engine

    @property
    def vision(self):
        """A vision-language model's VisionModel (lmdeploy_sdk.vl.model), else None."""
        return self._loaded.vision

    def _mailbox(self, loop: asyncio.AbstractEventLoop) -> _LoopMailbox:
        with self._mailboxes_lock:
            box = self._mailboxes.get(loop)
            if box is None:
                box = self._mailboxes[loop] = _LoopMailbox(loop)
            return box

    async def generate(
        self,
        prompt: prompts.Prompt,
        gen_config: GenerationConfig | None = None,
        *,
        session_id: int | None = None,
        request_id: str | None = None,
        do_preprocess: bool = True,
        embedding_spans: list | None = None,
    ) -> AsyncIterator[Response]:
        """Yield Response deltas; the last one carries finish_reason. Errors come back as responses.
        embedding_spans: for a prompt of token ids, the image features they take (VisionModel.encode)."""
        gen_config = gen_config or GenerationConfig()
        if gen_config.n != 1:
            raise ValueError(f"AsyncEngine.generate runs one sequence; got n={gen_config.n} (fan out n yourself)")
        try:
            vision = self._loaded.vision
            if prompts.is_token_ids(prompt):
                ids, spans = list(prompt), list(embedding_spans or [])
            elif vision is None:
                ids, spans = prompts.encode_inputs(self.tokenizer, None, prompt, do_preprocess)
            else:  # the processor and the vision tower: not on the event loop
                ids, spans = await asyncio.to_thread(
                    prompts.encode_inputs, self.tokenizer, vision, prompt, do_preprocess, self.session_len)
            spec = grammar_spec(gen_config.response_format)
            # compiling a new grammar takes milliseconds: not on the event loop
            grammar = None if spec is None else await asyncio.to_thread(self.tokenizer.grammars.matcher, spec)
        except (ValueError, TypeError) as e:
            yield error_response(ErrorCode.INVALID_REQUEST, str(e))
            return
        mailbox = self._mailbox(asyncio.get_running_loop())
        queue: asyncio.Queue[Response] = asyncio.Queue()
        rid = request_id or uuid.uuid4().hex

        def emit(resp: Response) -> None:
            mailbox.post(queue, resp)

        self._loaded.engine.submit(Request(rid, ids, gen_config, emit, session_id, grammar, spans))
        finished = False
        try:
            while not finished:
                resp = await queue.get()
                finished = resp.finish_reason is not None
                yield resp
        finally:
            if not finished:  # consumer left early: stop the sequence and free its KV
                self._loaded.engine.abort(rid)

    async def abort(self, request_id: str) -> bool:
        known = request_id in self._loaded.engine.states
        self._loaded.engine.abort(request_id)
        return known

    async def end_session(self, session_id: int) -> None:
        self._loaded.engine.end_session(session_id)

    def end_session_nowait(self, session_id: int) -> None:
        """end_session for synchronous code: the engine ends the session between its steps
        (a request still running on it is aborted first)."""
        self._loaded.engine.end_session(session_id)

    def stats(self) -> EngineStats:
        return self._loaded.engine.stats()

    def close(self) -> None:
        if self._owns:
            self._loaded.close()

    async def __aenter__(self) -> "AsyncEngine":
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()
