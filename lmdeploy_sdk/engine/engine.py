"""The engine loop: one thread that admits requests, steps the batch and emits outputs.

Callers never touch engine state directly: they post commands (add, abort,
end_session, call) to a queue; the loop applies them between steps. Outputs
leave through each request's `emit` callback, called on the engine thread.

Each step overlaps CPU and GPU work. While step N runs on the device, the loop
already launches step N+1: sequences that continue get a placeholder as their next
input, filled on the device from step N's sampled tokens (they never visit the
host first). Only then does it wait for step N's tokens, record them and the
finishes they cause (end token, length), and turn them into text, stop-string
checks and emitted deltas, all while step N+1 computes. A request that ends at
step N (end token, stop string, abort) has a wasted row in step N+1: its KV
writes land in stream order before any later use of the freed blocks, and its
token is dropped. Rows whose sampling needs the host to know the previous token
(repetition penalty, multi-token bad words, min_new_tokens) make that step wait
instead (`run_ahead=False` makes every step wait). Rows with a grammar (guided
decoding) need it only to choose: step N+1's forward is launched as usual, and its
sampling waits until step N's tokens have advanced the grammars and the next masks
are filled, so the device keeps computing while the host works.
"""
from __future__ import annotations

import itertools
import logging
import queue
import secrets
import threading
import time
import traceback
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from lmdeploy_sdk.engine.block_manager import BlockManager
from lmdeploy_sdk.engine.device_span import DeviceSpan, device_span
from lmdeploy_sdk.engine.request import Request, RequestState, error_response
from lmdeploy_sdk.engine.runner import ModelRunner, TokenFill
from lmdeploy_sdk.engine.sampler import GrammarMasks, SampledTokens, Sampler, SamplingParams, SamplingRow
from lmdeploy_sdk.engine.scheduler import Scheduler
from lmdeploy_sdk.engine.sequence import Sequence, SequenceStatus, check_spans, first_span_change
from lmdeploy_sdk.engine.step_times import StepRecord, StepTimes
from lmdeploy_sdk.errors import ErrorCode
from lmdeploy_sdk.guided import grammar_spec
from lmdeploy_sdk.stop_strings import StopStringMatcher
from lmdeploy_sdk.tokenizer import Tokenizer

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass
class EngineStats:
    running: int
    waiting: int
    blocks_total: int
    blocks_free: int
    blocks_used: int
    prompt_tokens_total: int
    generated_tokens_total: int
    sessions: int
    preemptions_total: int
    kv_cache_bits: int  # bits of a cached K or V element: 8 or 4 (quant_policy), else the model dtype's


# Host value of an input token that is still being sampled on the device.
PLACEHOLDER = -1


@dataclass
class InFlightStep:
    """A launched step: the sequences whose next token it samples, their owners then, and the tokens."""

    done: list[tuple[Sequence, RequestState]]
    sampled: SampledTokens  # row i belongs to done[i]
    timing: StepRecord | None = None  # filled while step timings are recorded
    span: DeviceSpan | None = None  # the step's device work, timed with timing on CUDA


@dataclass
class LaunchedForward:
    """A step's forward, launched; its sampling may wait for the previous step's tokens (grammars)."""

    done: list[tuple[Sequence, RequestState]]  # who samples at this step (owners at launch), in row order
    rows: list[SamplingRow]
    logits: "torch.Tensor"  # [S, V]
    timing: StepRecord | None
    span: DeviceSpan | None


# (request, sampled token, its logprobs, finish reason from accept)
Accepted = tuple[RequestState, int, dict[int, float] | None, str | None]


def common_prefix_len(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class Engine:
    def __init__(
        self,
        runner: ModelRunner,
        tokenizer: Tokenizer,
        block_manager: BlockManager,
        max_batch_size: int,
        max_prefill_tokens: int,
        session_len: int,
        vocab_size: int,
        run_ahead: bool = True,
    ):
        """run_ahead: launch each step before the previous one's tokens reach the host (see above)."""
        self.runner = runner
        self.tokenizer = tokenizer
        self.bm = block_manager
        self.session_len = session_len
        self.vocab_size = vocab_size
        self.run_ahead = run_ahead
        self.scheduler = Scheduler(block_manager, max_batch_size, max_prefill_tokens, self.evict_idle)
        self.sampler = Sampler()
        self.states: dict[str, RequestState] = {}  # request_id -> live request
        self.sessions: dict[int, Sequence] = {}  # session_id -> its sequence (kept between requests)
        self._seq_ids = 0
        # Ids handed to Pipeline sessions; high so they don't meet ids that API users pick.
        self._session_ids = itertools.count(1 << 40)
        self._prompt_tokens = 0
        self._generated_tokens = 0
        self._inflight: InFlightStep | None = None
        self._step_times: StepTimes | None = None
        self._last_span: DeviceSpan | None = None  # the last collected step's, while timing
        self._launches = 0  # steps launched so far (orders the spans)
        self._commands: queue.Queue = queue.Queue()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lmdeploy-sdk-engine", daemon=True)
        self._thread.start()

    # ---- thread-safe API --------------------------------------------------------------
    def submit(self, request: Request) -> None:
        if self._closed.is_set():
            request.emit(error_response(ErrorCode.ENGINE_CLOSED, "the engine is closed"))
            return
        self._commands.put(("add", request))

    def abort(self, request_id: str) -> None:
        self._commands.put(("abort", request_id))

    def end_session(self, session_id: int) -> None:
        self._commands.put(("end_session", session_id))

    def call(self, fn: Callable[["Engine"], Any]) -> Future:
        """Run fn(engine) on the engine thread between steps."""
        fut: Future = Future()
        if self._closed.is_set():
            fut.set_exception(RuntimeError("the engine is closed"))
        else:
            self._commands.put(("call", (fn, fut)))
        return fut

    def record_step_times(self, times: StepTimes | None) -> Future:
        """Record every following step into `times` (None stops); applied between steps."""
        def apply(engine: "Engine") -> None:
            engine._step_times, engine._last_span = times, None

        return self.call(apply)

    def new_session_id(self) -> int:
        return next(self._session_ids)

    def check_invariants(self) -> None:
        """Block-manager invariants over every sequence the engine holds (engine thread only)."""
        live = {id(s): s for s in self.sessions.values()}
        for s in list(self.scheduler.running) + list(self.scheduler.waiting):
            live[id(s)] = s
        self.bm.check_invariants(list(live.values()))

    def stats(self) -> EngineStats:
        return EngineStats(
            running=len(self.scheduler.running),
            waiting=len(self.scheduler.waiting),
            blocks_total=self.bm.num_blocks,
            blocks_free=self.bm.num_free_blocks,
            blocks_used=self.bm.num_used_blocks,
            prompt_tokens_total=self._prompt_tokens,
            generated_tokens_total=self._generated_tokens,
            sessions=len(self.sessions),
            preemptions_total=self.scheduler.num_preemptions,
            kv_cache_bits=self.runner.kv_bits or self.runner.dtype.itemsize * 8,
        )

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self._commands.put(("close", None))
        if threading.current_thread() is not self._thread:
            self._thread.join()

    # ---- engine thread ----------------------------------------------------------------
    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work or self._inflight is not None

    def _loop(self) -> None:
        while True:
            block = not self.has_work
            try:
                while True:
                    kind, arg = self._commands.get(block=block, timeout=None)
                    block = False
                    if kind == "close":
                        self._shutdown()
                        return
                    self._apply(kind, arg)
            except queue.Empty:
                pass
            if self.has_work:
                self._step_safely()

    def _apply(self, kind: str, arg: Any) -> None:
        if kind == "add":
            self._add(arg)
        elif kind == "abort":
            state = self.states.get(arg)
            if state is not None:
                self._finish(state, "abort")
        elif kind == "end_session":
            seq = self.sessions.get(arg)
            if seq is not None:
                state = seq.owner
                if state is not None and not state.finished:
                    self._finish(state, "abort")
                self.bm.free(seq)
                del self.sessions[arg]
        elif kind == "call":
            fn, fut = arg
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn(self))
                except BaseException as e:  # handed to the caller
                    fut.set_exception(e)

    def _add(self, req: Request) -> None:
        ids = req.prompt_ids
        err = self._validate(req)
        if err is None and req.grammar is None and req.gen_config.response_format is not None:
            err = self._make_grammar(req)
        if err is not None:
            req.emit(error_response(err[0], err[1], len(ids)))
            return
        cfg = req.gen_config
        if req.session_id is not None and req.session_id in self.sessions:
            seq = self.sessions[req.session_id]
            keep = common_prefix_len(seq.token_ids[: seq.num_computed], ids)
            keep = min(keep, first_span_change(seq.embedding_spans, req.embedding_spans))
            self.bm.truncate(seq, min(keep, len(ids) - 1))
            seq.token_ids = list(ids)
        else:
            seq = Sequence(seq_id=self.next_seq_id(), token_ids=list(ids))
            if req.session_id is not None:
                self.sessions[req.session_id] = seq
        seq.embedding_spans = list(req.embedding_spans)
        seq.max_len = min(len(ids) + cfg.max_new_tokens, self.session_len)
        end_ids = set(cfg.stop_token_ids or [])
        if not cfg.ignore_eos:
            end_ids |= set(self.tokenizer.eos_token_ids)
        seed = cfg.random_seed if cfg.random_seed is not None else secrets.randbits(63)
        sampling = SamplingParams.from_config(
            cfg,
            self.tokenizer.bad_word_sequences(cfg.bad_words) if cfg.bad_words else [],
            sorted(end_ids | set(self.tokenizer.eos_token_ids)),
            self.runner.device,
            seed,
            req.grammar,
        )
        state = RequestState(
            request=req,
            seq=seq,
            sampling=sampling,
            detok=self.tokenizer.detokenizer(cfg.skip_special_tokens),
            stops=StopStringMatcher(cfg.stop_words or [], cfg.include_stop_str_in_output),
            end_ids=frozenset(end_ids),
            input_len=len(ids),
            cached_tokens=seq.num_computed,
        )
        seq.owner = state
        self.states[req.request_id] = state
        self._prompt_tokens += len(ids)
        if cfg.max_new_tokens == 0 or len(ids) >= self.session_len:
            self._finish(state, "length")
            return
        self.scheduler.add(seq)

    def _validate(self, req: Request) -> tuple[ErrorCode, str] | None:
        ids = req.prompt_ids
        if req.request_id in self.states:
            return ErrorCode.INVALID_REQUEST, f"request_id {req.request_id!r} is already running"
        if not ids:
            return ErrorCode.INVALID_REQUEST, "empty prompt"
        if len(ids) > self.session_len:
            return (
                ErrorCode.INPUT_TOO_LONG,
                f"prompt has {len(ids)} tokens, more than session_len={self.session_len}",
            )
        bad = [t for t in ids if not 0 <= t < self.vocab_size]
        if bad:
            return ErrorCode.INVALID_REQUEST, f"token ids {bad[:5]} are outside the vocabulary [0, {self.vocab_size})"
        bad = [t for t in req.gen_config.logit_bias or {} if t >= self.vocab_size]
        if bad:
            return ErrorCode.INVALID_REQUEST, (
                f"logit_bias token ids {bad[:5]} are outside the vocabulary [0, {self.vocab_size})")
        bad_span = check_spans(req.embedding_spans, len(ids), self.runner.model.config.hidden_size)
        if bad_span is not None:
            return ErrorCode.INVALID_REQUEST, bad_span
        if req.session_id is not None:
            seq = self.sessions.get(req.session_id)
            if seq is not None and seq.status != SequenceStatus.IDLE:
                return ErrorCode.SESSION_BUSY, f"session {req.session_id} already has a running request"
        return None

    def _make_grammar(self, req: Request) -> tuple[ErrorCode, str] | None:
        """For callers that did not compile the request's response_format themselves."""
        try:
            spec = grammar_spec(req.gen_config.response_format)
            if spec is not None:
                req.grammar = self.tokenizer.grammars.matcher(spec)
        except ValueError as e:
            return ErrorCode.INVALID_REQUEST, str(e)
        return None

    def next_seq_id(self) -> int:
        self._seq_ids += 1
        return self._seq_ids

    def _finish(self, state: RequestState, reason: str, code: ErrorCode | None = None, msg: str | None = None):
        """End a request now (abort, error, nothing to generate): emit its last delta and release it."""
        state.finish_now(reason, code, msg)
        self._release(state)

    def _release(self, state: RequestState) -> None:
        """Take a finished request's sequence off the scheduler; free its KV, or keep it for its session."""
        seq = state.seq
        self.scheduler.remove(seq)
        self.states.pop(state.request.request_id, None)
        seq.owner = None
        if state.request.session_id is not None and self.sessions.get(state.request.session_id) is seq:
            seq.status = SequenceStatus.IDLE
        else:
            seq.status = SequenceStatus.FINISHED
            self.bm.free(seq)

    def evict_idle(self, deficit: int) -> bool:
        """Drop idle sessions' KV, least recently used first, until `deficit` more blocks are free.

        The sessions keep their token history and recompute it on their next request.
        """
        target = self.bm.num_free_blocks + deficit
        idle = [s for s in self.sessions.values() if s.status == SequenceStatus.IDLE and s.block_table]
        freed = False
        for seq in sorted(idle, key=lambda s: s.arrival):
            if freed and self.bm.num_free_blocks >= target:
                break
            self.bm.free(seq)
            freed = True
        return freed

    def _step_safely(self) -> None:
        try:
            self._step()
        except Exception as e:  # keep serving: fail what was in flight, not the engine
            log.error("engine step failed:\n%s", traceback.format_exc())
            self._inflight = None
            for state in list(self.states.values()):
                self._finish(state, "error", ErrorCode.ENGINE_ERROR, f"engine error: {e}")
            for seq in self.sessions.values():  # their KV may be half-written
                self.bm.free(seq)

    def _step(self) -> None:
        step, self._inflight = self._inflight, None
        fills = self._reserve_inputs(step) if step is not None and self._may_run_ahead(step) else None
        if fills is None:  # wait for step N, then launch N+1
            accepted = self._collect(step, {})
            try:
                self._launch(step, {})
            finally:  # a request that accept() finished must get its last delta even if the launch failed
                self._publish(accepted)
            return
        forward = None
        try:  # launch N+1, then wait for step N
            forward = self._launch(step, fills, defer_guided=True)
        finally:
            accepted = self._collect(step, fills)
            # a deferred sampling: its grammars have seen step N's tokens now; their masks are
            # filled in the background while step N's outputs are published
            masks = self.sampler.grammar_masks(forward.rows) if forward is not None else None
            try:
                self._publish(accepted)
            finally:
                if forward is not None:
                    self._sample(forward, masks)

    @staticmethod
    def _live(step: InFlightStep) -> list[tuple[int, Sequence, RequestState]]:
        """(row, sequence, request) of the step's rows whose request has not ended since the launch."""
        return [(i, seq, st) for i, (seq, st) in enumerate(step.done) if seq.owner is st and not st.finished]

    def _may_run_ahead(self, step: InFlightStep) -> bool:
        return self.run_ahead and not any(st.sampling.needs_history for _, _, st in self._live(step))

    def _reserve_inputs(self, step: InFlightStep) -> dict[Sequence, tuple[int, int]]:
        """Give each continuing sequence of `step` a placeholder next token: {seq: (position, row in step)}."""
        fills = {}
        for row, seq, st in self._live(step):
            if st.num_generated + 1 >= st.request.gen_config.max_new_tokens or len(seq) + 1 >= seq.max_len:
                continue  # this token is its last: nothing to feed
            seq.token_ids.append(PLACEHOLDER)
            fills[seq] = (len(seq.token_ids) - 1, row)
        return fills

    def _collect(self, step: InFlightStep | None, fills: dict[Sequence, tuple[int, int]]) -> list[Accepted]:
        """Wait for a step's tokens and accept them; release requests that end on them."""
        if step is None:
            return []
        t0 = time.perf_counter()
        tokens, logprobs = step.sampled.to_host()
        if step.timing is not None:
            step.timing.host_wait_s = time.perf_counter() - t0
            if step.span is not None:
                step.timing.gpu_s = step.span.seconds()
                last = self._last_span
                if last is not None and last.step + 1 == step.span.step:  # launched back to back
                    step.timing.gpu_idle_before_s = step.span.idle_after(last)
                self._last_span = step.span
        accepted = []
        for row, seq, state in self._live(step):
            token = tokens[row]
            if seq in fills:
                seq.token_ids[fills[seq][0]] = token
            else:
                seq.token_ids.append(token)
            finish = state.accept(token)
            self._generated_tokens += 1
            if finish is not None:
                self._release(state)
            accepted.append((state, token, logprobs[row], finish))
        for seq in fills:  # blocks that waited for their last token
            self.bm.register_full_blocks(seq)
        return accepted

    def _launch(self, prev: InFlightStep | None, fills: dict[Sequence, tuple[int, int]],
                defer_guided: bool = False) -> LaunchedForward | None:
        """Schedule the next step, start it on the device and sample it there (no wait).

        defer_guided: when a row has a grammar, return the launched forward unsampled instead,
        for `_sample` once the previous step's tokens have advanced the grammars."""
        batch = self.scheduler.schedule()
        if not batch:
            if not self.scheduler.running and self.scheduler.waiting:
                seq = self.scheduler.waiting[0]  # cannot fit even in an empty cache
                self._finish(seq.owner, "error", ErrorCode.INPUT_TOO_LONG, "the KV cache is too small for this request")
            return
        timing = self._step_times.launched(batch) if self._step_times is not None else None
        pairs, offset = [], 0
        for seq, n in batch.items:
            state = seq.owner
            if not state.scheduled:  # KV reused from the session or the prefix cache
                state.cached_tokens = seq.num_computed
                state.scheduled = True
            if seq in fills:
                pos, row = fills[seq]
                if seq.num_computed <= pos < seq.num_computed + n:
                    pairs.append((offset + pos - seq.num_computed, row))
            offset += n
        fill: TokenFill | None = (prev.sampled.tokens, pairs) if pairs else None
        self._launches += 1
        span = device_span(self.runner.device, self._launches) if timing is not None else None
        done, logits = self.runner.execute(batch, fill)
        for seq, _ in batch.items:
            self.bm.register_full_blocks(seq, len(seq.token_ids) - (seq in fills))
        if not done:
            return None
        rows = [SamplingRow(seq.owner.sampling, seq.token_ids, seq.owner.num_generated) for seq in done]
        forward = LaunchedForward([(seq, seq.owner) for seq in done], rows, logits, timing, span)
        if defer_guided and any(r.params.grammar is not None for r in rows):
            return forward
        self._sample(forward)
        return None

    def _sample(self, forward: LaunchedForward, masks: GrammarMasks | None = None) -> None:
        sampled = self.sampler.sample(forward.logits, forward.rows, masks)
        if forward.span is not None:
            forward.span.close()
        self._inflight = InFlightStep(forward.done, sampled, forward.timing, forward.span)

    def _publish(self, accepted: list[Accepted]) -> None:
        """Detokenize, match stop strings and emit, while the launched step runs."""
        for state, token, lp, finish in accepted:
            if state.publish(token, lp, finish):
                self._release(state)  # a stop string ended it

    def _shutdown(self) -> None:
        self._inflight = None
        self.sampler.close()
        for state in list(self.states.values()):
            self._finish(state, "error", ErrorCode.ENGINE_CLOSED, "the engine was shut down")
        for seq in self.sessions.values():
            self.bm.free(seq)
        self.sessions.clear()
        # drain commands posted before close
        while True:
            try:
                kind, arg = self._commands.get_nowait()
            except queue.Empty:
                break
            if kind == "add":
                arg.emit(error_response(ErrorCode.ENGINE_CLOSED, "the engine is closed"))
            elif kind == "call":
                arg[1].set_exception(RuntimeError("the engine is closed"))
