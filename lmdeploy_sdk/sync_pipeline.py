"""The synchronous front end: batch inference, streaming and stateful chat.

Requests go to the engine thread; results come back through a thread-safe queue,
so a Pipeline works from plain scripts and notebooks without an event loop.
`infer` folds each request's deltas on the engine thread and hands over only the
finished response: a per-token handover wakes the caller's thread once per token
of every request, and at hundreds of requests that thread's share of the GIL
delayed the engine's next launch enough to leave the GPU idle.
"""
from __future__ import annotations

import logging
import queue
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from tqdm.auto import tqdm

from lmdeploy_sdk import prompts
from lmdeploy_sdk.engine.factory import LoadedModel, load
from lmdeploy_sdk.engine.request import Request, error_response
from lmdeploy_sdk.engine.scoring import score
from lmdeploy_sdk.errors import ErrorCode
from lmdeploy_sdk.guided import grammar_spec
from lmdeploy_sdk.messages import ChatTemplateConfig, GenerationConfig, Response, TurbomindEngineConfig
from lmdeploy_sdk.session import Session

GenConfigs = GenerationConfig | list[GenerationConfig] | None


def _merge(acc: Response, delta: Response) -> None:
    """Fold a streamed delta into the accumulated response of the same request."""
    acc.text += delta.text
    _merge_all_but_text(acc, delta)


def _merge_all_but_text(acc: Response, delta: Response) -> None:
    """`_merge` without the text, for callers that join the text pieces once at the end."""
    acc.token_ids += delta.token_ids
    if delta.logprobs is not None:
        if acc.logprobs is None:
            acc.logprobs = []
        acc.logprobs += delta.logprobs
    acc.generate_token_len = delta.generate_token_len
    acc.input_token_len = delta.input_token_len
    acc.cached_tokens = delta.cached_tokens
    acc.finish_reason = delta.finish_reason
    acc.error_code = delta.error_code
    acc.error_message = delta.error_message


class _FoldDeltas:
    """An engine-thread emit that folds a request's deltas and puts (rid, index, response)
    on `out` once, when it finishes. Text pieces are joined at the end (no quadratic +=)."""

    def __init__(self, rid: str, index: int, out: queue.Queue) -> None:
        self._rid, self._index, self._out = rid, index, out
        self._text: list[str] = []
        self._acc = Response(index=index, token_ids=[])

    def __call__(self, delta: Response) -> None:
        self._text.append(delta.text)
        _merge_all_but_text(self._acc, delta)
        if delta.finish_reason is not None:
            self._acc.text = "".join(self._text)
            self._out.put((self._rid, self._index, self._acc))


@dataclass(frozen=True)
class _Encoded:
    """A prompt already turned into token ids and image spans."""

    ids: list[int]
    spans: list


def _prompts_argument(given: Any, kw: dict) -> Any:
    """The prompts, also when passed as `prompts=` (LMDeploy's name) or `prompt=` (its tutorials')."""
    for name in ("prompts", "prompt"):
        if name in kw:
            if given is not None:
                raise TypeError(f"pass the prompts once: positionally or as {name}=")
            given = kw.pop(name)
    if given is None:
        raise TypeError("no prompts given")
    return given


class Pipeline:
    def __init__(
        self,
        model_path: str | Path | None = None,
        backend_config: TurbomindEngineConfig | None = None,
        chat_template_config: ChatTemplateConfig | None = None,
        log_level: str = "WARNING",
        model_name: str | None = None,
        *,
        loaded: LoadedModel | None = None,
        vision_config: Any = None,
    ):
        """Load a model, or (loaded=...) run on one already loaded (closed by its owner, not here).
        vision_config: a lmdeploy_sdk.vl.VisionConfig, for a vision-language model."""
        logging.getLogger("lmdeploy_sdk").setLevel(log_level)
        self._loaded: LoadedModel = loaded or load(model_path, backend_config, chat_template_config, model_name,
                                                   vision_config=vision_config)
        self._owns = loaded is None
        self.model_name = self._loaded.model_name
        self.tokenizer = self._loaded.tokenizer
        self.session_len = self._loaded.session_len
        self.backend_config = self._loaded.backend_config
        self._engine = self._loaded.engine
        self._async_engine = None

    @property
    def async_engine(self):
        """An AsyncEngine over this pipeline's engine (shares the model and its KV cache)."""
        if self._async_engine is None:
            from lmdeploy_sdk.async_engine import AsyncEngine

            self._async_engine = AsyncEngine(loaded=self._loaded)
        return self._async_engine

    # ---- requests ---------------------------------------------------------------------
    def _gen_configs(self, gen_config: GenConfigs, count: int, kw: dict) -> list[GenerationConfig]:
        if isinstance(gen_config, (list, tuple)):
            if len(gen_config) != count:
                raise ValueError(f"got {len(gen_config)} gen_configs for {count} prompts; lengths must match")
            cfgs = list(gen_config)
        elif gen_config is None:
            cfgs = [GenerationConfig(**kw)] * count
            kw = {}
        elif isinstance(gen_config, GenerationConfig):
            cfgs = [gen_config] * count
        else:
            raise TypeError(f"gen_config must be a GenerationConfig or a list of them, got {type(gen_config).__name__}")
        for c in cfgs:
            if not isinstance(c, GenerationConfig):
                raise TypeError(f"gen_config entries must be GenerationConfig, got {type(c).__name__}")
        return [c.replace(**kw) if kw else c for c in cfgs]

    def _encode_images(self, items: list[Any], do_preprocess: bool) -> dict[int, Any]:
        """index -> _Encoded for the prompts with images: their images go through the vision
        tower together (VisionConfig.max_batch_size at a time), not one prompt at a time."""
        vision = self._loaded.vision
        if vision is None:
            return {}
        from lmdeploy_sdk.vl.inputs import vision_prompt

        found: dict[int, Any] = {}
        for i, p in enumerate(items):
            try:
                vp = vision_prompt(p)
            except ValueError:
                continue  # _submit reports it for this prompt alone
            if vp is not None:
                found[i] = vp
        if not found:
            return {}
        try:
            results = vision.encode_many(list(found.values()), do_preprocess, self.session_len)
        except ValueError:
            return {}  # one prompt is bad: encode one by one, so the error lands on that prompt alone
        return {i: _Encoded(*r) for i, r in zip(found, results)}

    def _submit(
        self, prompt: Any, cfg: GenerationConfig, index: int, out: queue.Queue, do_preprocess: bool,
        session_id: int | None = None, stream: bool = True,
    ) -> list[str]:
        """Submit n requests for one prompt; outputs go to `out` as (request_id, index, delta),
        or with stream=False as (request_id, index, whole response) once each finishes."""
        rids = []
        spec = grammar_spec(cfg.response_format)
        spans: list = []
        try:
            if isinstance(prompt, _Encoded):
                ids, spans = prompt.ids, prompt.spans
            else:
                ids, spans = prompts.encode_inputs(self.tokenizer, self._loaded.vision, prompt, do_preprocess,
                                                   self.session_len)
            if spec is not None:
                self.tokenizer.grammars.matcher(spec)  # compile (or find) it here, not on the engine thread
        except (ValueError, TypeError) as e:
            ids, err = None, str(e)
        for j in range(cfg.n):
            rid = uuid.uuid4().hex
            rids.append(rid)
            if ids is None:
                out.put((rid, index, error_response(ErrorCode.INVALID_REQUEST, err)))
                continue
            seed = None if cfg.random_seed is None else cfg.random_seed + j
            one = cfg.replace(n=1, random_seed=seed)

            def emit(resp: Response, rid=rid) -> None:
                out.put((rid, index, resp))

            grammar = self.tokenizer.grammars.matcher(spec) if spec is not None else None
            sink = emit if stream else _FoldDeltas(rid, index, out)
            self._engine.submit(Request(rid, ids, one, sink, session_id, grammar, spans))
        return rids

    def _run(self, items: list[Any], cfgs: list[GenerationConfig], do_preprocess: bool,
             session_id: int | None = None, stream: bool = True,
             submitted: list[str] | None = None) -> Iterator[tuple[str, int, Response]]:
        """Submit everything, then yield (request_id, prompt index, delta) until all finish
        (stream=False: one whole response per request). `submitted` gets the request ids in
        submission order."""
        out: queue.Queue = queue.Queue()
        pending: set[str] = set()
        encoded = self._encode_images(items, do_preprocess)
        for i, (p, c) in enumerate(zip(items, cfgs)):
            rids = self._submit(encoded.get(i, p), c, i, out, do_preprocess, session_id, stream)
            pending.update(rids)
            if submitted is not None:
                submitted += rids
        try:
            while pending:
                rid, index, delta = out.get()
                if delta.finish_reason is not None:
                    pending.discard(rid)
                yield rid, index, delta
        finally:
            for rid in pending:  # caller stopped early (break, exception, Ctrl-C)
                self._engine.abort(rid)

    def infer(
        self,
        prompts_: Any = None,
        gen_config: GenConfigs = None,
        do_preprocess: bool = True,
        use_tqdm: bool = False,
        *,
        images: Any = None,
        **kw,
    ) -> Response | list[Response]:
        """Generate for one prompt or a batch. n > 1 gives n responses per prompt, in prompt order.
        images: one image or a list (path, URL, data URL, PIL) for a single text prompt; a batch
        takes [(prompt, images), ...]. `prompts=` and `prompt=` are accepted for prompts_."""
        prompts_ = _prompts_argument(prompts_, kw)
        items, single = prompts.split_batch(prompts.with_images(prompts_, images))
        cfgs = self._gen_configs(gen_config, len(items), kw)
        order: list[str] = []  # request ids as submitted: prompt order, samples in order
        results: dict[str, Response] = {}
        bar = tqdm(total=sum(c.n for c in cfgs), desc="generating", disable=not use_tqdm)
        for rid, index, response in self._run(items, cfgs, do_preprocess, stream=False, submitted=order):
            response.index = index
            results[rid] = response
            bar.update(1)
        bar.close()
        responses = [results[r] for r in order]
        return responses[0] if single and len(responses) == 1 else responses

    __call__ = infer

    def stream_infer(
        self, prompts_: Any = None, gen_config: GenConfigs = None, do_preprocess: bool = True, *,
        images: Any = None, **kw
    ) -> Iterator[Response]:
        """Yield Response deltas as they are generated; `.index` says which prompt each is for."""
        prompts_ = _prompts_argument(prompts_, kw)
        items, _ = prompts.split_batch(prompts.with_images(prompts_, images))
        cfgs = self._gen_configs(gen_config, len(items), kw)
        for _, index, delta in self._run(items, cfgs, do_preprocess):
            delta.index = index
            yield delta

    # ---- stateful chat ----------------------------------------------------------------
    def session(self) -> Session:
        return Session(session_id=self._engine.new_session_id(), _engine=self._engine)

    def chat(
        self,
        prompt: str | list[dict] | tuple,
        session: Session | None = None,
        gen_config: GenerationConfig | None = None,
        stream_response: bool = False,
        **kw,
    ) -> Session | Iterator[Response]:
        """One turn of a conversation; the session's KV is reused, only new tokens are prefilled.

        Returns the session (its .response is this turn's); with stream_response, an
        iterator of deltas that updates the session when it ends.
        """
        session = session or self.session()
        if session._engine is None:
            raise ValueError(f"session {session.session_id} is closed")
        cfg = self._gen_configs(gen_config, 1, kw)[0]
        if cfg.n != 1:
            raise ValueError(f"chat generates one reply per turn; got n={cfg.n}")
        if prompts.is_image_tuple(prompt):  # (text, image or [images]): one user turn with them
            from lmdeploy_sdk.vl.inputs import user_turn

            prompt = [user_turn(*prompt)]
        turn = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        messages = session.messages + turn
        it = self._chat_turn(session, messages, turn, cfg)
        if stream_response:
            return it
        for _ in it:
            pass
        return session

    def _chat_turn(self, session: Session, messages: list[dict], turn: list[dict], cfg: GenerationConfig):
        acc = Response(token_ids=[])
        for _, _, delta in self._run([messages], [cfg], True, session.session_id):
            _merge(acc, delta)
            yield delta
        session.response = acc
        if acc.finish_reason != "error":
            session.messages = messages + [{"role": "assistant", "content": acc.text}]
            user = next((m["content"] for m in reversed(turn) if m.get("role") == "user"), "")
            session.history.append((user if isinstance(user, str) else str(user), acc.text))

    # ---- scoring and lifetime ---------------------------------------------------------
    def get_ppl(self, input_ids: list[int] | list[list[int]]) -> list[float]:
        """Mean cross-entropy (nats/token) of each token sequence under the model."""
        batch = [input_ids] if prompts.is_token_ids(input_ids) else list(input_ids)
        for i, ids in enumerate(batch):
            if not prompts.is_token_ids(ids):
                raise ValueError(f"get_ppl input {i} must be a non-empty list of token ids")
        return [self._engine.call(lambda e, ids=ids: score(e, ids)).result() for ids in batch]

    def close(self) -> None:
        if self._owns:
            self._loaded.close()

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def pipeline(
    model_path: str | Path | None = None,
    backend_config: TurbomindEngineConfig | None = None,
    chat_template_config: ChatTemplateConfig | None = None,
    log_level: str = "WARNING",
    **kw,
) -> Pipeline:
    """Load a model (local HF directory or embedded model name) and return a Pipeline."""
    if "config" in kw:
        if backend_config is not None:
            raise TypeError("pass backend_config or its alias config, not both")
        backend_config = kw.pop("config")
    model_name = kw.pop("model_name", None)
    vision_config = kw.pop("vision_config", None)
    if kw:
        raise TypeError(f"pipeline() got unknown keyword argument(s) {sorted(kw)}")
    return Pipeline(model_path, backend_config, chat_template_config, log_level, model_name,
                    vision_config=vision_config)
