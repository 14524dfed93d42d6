"""Response formats -> per-request matchers, for one tokenizer (llguidance underneath).

Compiling a grammar against the vocabulary is the slow part (milliseconds for a typical
schema, up to a second for a huge one); a compiled grammar is kept as prototype matchers and
each request gets a copy of one (microseconds). Copies of one prototype share its lexer
cache behind one lock, so their masks cannot be computed in parallel: a grammar keeps up to
`lanes` prototypes (one per mask thread), built as requests come, and hands them out in turn.
Thread-safe: the server compiles in worker threads, the engine thread only steps matchers.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterator

import llguidance
import llguidance.hf

from lmdeploy_sdk.guided.spec import GrammarSpec

log = logging.getLogger(__name__)

CACHE_SIZE = 256  # compiled grammars kept (least recently used dropped)
# llguidance's mask threads: 80% of the CPUs, at most 32 (its own default)
MASK_THREADS = max(1, min(32, int(0.8 * (os.cpu_count() or 1))))


class GrammarMatcher:
    """One request's position in its grammar: which tokens may come next, and the tokens so far."""

    def __init__(self, matcher: llguidance.LLMatcher, label: str, mask_words: int) -> None:
        self._m = matcher
        self.label = label
        self.mask_words = mask_words  # int32 words per bitmask row

    def accept(self, token: int) -> bool:
        """Advance by a sampled token; False when the grammar does not allow it."""
        return self._m.consume_token(token)

    @property
    def done(self) -> bool:
        """Nothing more may follow (the output is complete, or the matcher failed)."""
        return self._m.is_stopped() or self._m.is_error()

    @property
    def matcher(self) -> llguidance.LLMatcher:
        return self._m


class GrammarCompiler:
    def __init__(self, hf_tokenizer: Any, eos_ids: list[int], vocab_size: int | None = None,
                 cache_size: int = CACHE_SIZE, lanes: int = MASK_THREADS) -> None:
        """vocab_size: the logits' width when it differs from the tokenizer's (padded embeddings)."""
        self._hf = hf_tokenizer
        self._eos = list(eos_ids)
        self._vocab_size = vocab_size
        self._cache_size = cache_size
        self._lanes = lanes
        self._lock = threading.Lock()
        self._lltok: llguidance.LLTokenizer | None = None
        self._compiled: OrderedDict[GrammarSpec, _Prototypes] = OrderedDict()

    @property
    def tokenizer(self) -> llguidance.LLTokenizer:
        """The vocabulary as llguidance sees it (built on first use: ~0.3 s for 50k tokens)."""
        with self._lock:
            if self._lltok is None:
                # an end id from config.json past the tokenizer's vocabulary (a padded embedding) is
                # masked out of guided rows anyway; a finished grammar ends the request by itself
                size = self._vocab_size or len(self._hf)
                eos = [t for t in self._eos if t < size] or None
                self._lltok = llguidance.hf.from_tokenizer(self._hf, n_vocab=self._vocab_size, eos_token=eos)
            return self._lltok

    @property
    def mask_words(self) -> int:
        """int32 words per bitmask row."""
        return (self.tokenizer.vocab_size + 31) // 32

    def matcher(self, spec: GrammarSpec) -> GrammarMatcher:
        """A fresh matcher for one request; ValueError (naming the problem) for a bad grammar."""
        with self._lock:
            protos = self._compiled.get(spec)
            if protos is not None:
                self._compiled.move_to_end(spec)
                lane = next(protos.turn)
        if protos is None:
            grammar, first = self._compile(spec)
            with self._lock:
                protos = self._compiled.setdefault(spec, _Prototypes(grammar, [first], itertools.count(1)))
                while len(self._compiled) > self._cache_size:
                    self._compiled.popitem(last=False)
            return GrammarMatcher(first.deep_copy(), spec.label, self.mask_words)
        lane %= self._lanes
        if lane >= len(protos.matchers):  # another lane: a prototype of its own (as long as a compile)
            proto = llguidance.LLMatcher(self.tokenizer, protos.grammar, log_level=0)
            with self._lock:
                protos.matchers.append(proto)
        else:
            proto = protos.matchers[lane]
        return GrammarMatcher(proto.deep_copy(), spec.label, self.mask_words)

    def _compile(self, spec: GrammarSpec) -> tuple[str, llguidance.LLMatcher]:
        t0 = time.perf_counter()
        grammar = _grammar_text(spec)
        matcher = llguidance.LLMatcher(self.tokenizer, grammar, log_level=0)  # drops the GIL while it builds
        if matcher.is_error():
            raise ValueError(f"response_format: cannot use this {spec.label}: {matcher.get_error()}")
        for warning in matcher.get_grammar_warnings():
            log.warning("response_format %s: %s (not enforced)", spec.label, warning)
        log.info("compiled the grammar for %s in %.1f ms (cached for later requests)",
                 spec.label, 1e3 * (time.perf_counter() - t0))
        return grammar, matcher


@dataclass
class _Prototypes:
    """A compiled grammar: its text and the prototype matchers handed out in turn."""

    grammar: str
    matchers: list[llguidance.LLMatcher]
    turn: Iterator[int]


# JSON as json.dumps writes it: one space after ',' and ':', no other whitespace. Free
# whitespace lets a small model pad an answer with newlines until max_tokens. pydantic writes
# unions as oneOf; they are matched as anyOf (exact for the usual discriminated unions).
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": ", "coerce_one_of": True}


def json_options(strict: bool) -> dict[str, Any]:
    """llguidance's options for a JSON schema (its "x-guidance" key); strict=False ignores keywords
    that cannot be enforced (with a warning) instead of refusing the schema."""
    return {**JSON_LAYOUT, "lenient": not strict}


def _grammar_text(spec: GrammarSpec) -> str:
    if spec.kind == "json_schema":
        schema = json.loads(spec.source)
        # the schema's own x-guidance options, if any, win
        schema = {**schema, "x-guidance": {**json_options(spec.strict), **schema.get("x-guidance", {})}}
        return llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema))
    if spec.kind == "regex":
        return llguidance.LLMatcher.grammar_from_regex(spec.source)
    return llguidance.LLMatcher.grammar_from_lark(spec.source)
