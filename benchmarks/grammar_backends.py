"""Compare the guided-decoding backends ``xgrammar`` and ``llguidance`` on this machine (CPU).

What it measures, for each backend, at two vocabulary sizes (a synthetic ~128k byte-level BPE
vocabulary like Llama-3's, and SmolLM2's own 49,152-token vocabulary):

1. Tokenizer-info construction (one-off per model): ``xgrammar.TokenizerInfo.from_huggingface``
   vs ``llguidance.hf.from_tokenizer``; both are fed the same ``PreTrainedTokenizerFast``.
2. Compile time, "schema -> ready matcher": a nested JSON schema (cold, then again through each
   library's cache), any-JSON-object (``{"type": "object"}``) and the regex ``\\d{3}-\\d{4}``; plus
   the time of the first mask fill right after the cold compile (llguidance builds lazily).
3. Per-token cost: valid JSON instances of the schema are tokenized with the vocabulary's own
   tokenizer and a matcher is stepped through them (fill the int32 [B, ceil(V/32)] bitmask, then
   accept the token); batch 1 (one matcher) and batch 64 (64 matchers, each at its own position,
   using the libraries' parallel batch APIs).
4. Applying the bitmask to float32 logits [64, V] on CPU: each library's own function and a
   plain-torch reference (unpack bits with shifts + ``masked_fill_``).
5. Install footprint (wheel sizes from ``--wheel-dir``, Requires-Dist from the wheel METADATA,
   installed sizes of the extra dependencies beyond lmdeploy-sdk's own) and feature checks
   (Lark / GBNF, regex, JSON-schema keywords, rollback, GIL during compile, error reporting).

The ~128k vocabulary is built offline from SmolLM2's tokenizer.json: all 2- and 3-digit numbers,
then concatenations of existing punctuation tokens and of existing letter tokens (each new token
``a+b`` gets the BPE merge ``a b`` appended), so that the tokenizer really emits many of the new
tokens. Both libraries get the exact same tokenizer object.

xgrammar is not a dependency of lmdeploy-sdk: `pip install xgrammar` first (and `pip download
xgrammar llguidance --no-deps -d /tmp/whl` for the wheel sizes). Run (about 70 s on 2 CPU cores; ``--quick`` for a ~40 s smoke run). Other CPU load on the machine skews
the numbers, so the report prints the load average at start and end:

    python benchmarks/grammar_backends.py
    python benchmarks/grammar_backends.py --vocab-size 128256 --threads 2 --wheel-dir /tmp/whl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

# A fresh inductor cache, so the first call of llguidance's torch.compile'd apply is really cold.
_INDUCTOR_TMP: str | None = None
if __name__ == "__main__" and "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    _INDUCTOR_TMP = tempfile.mkdtemp(prefix="grammar_bench_inductor_")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = _INDUCTOR_TMP

import numpy as np  # noqa: E402
import torch  # noqa: E402

PUNCT = r"!-/:-@\[-`{-~"  # ASCII punctuation, as a regex character-class body

NESTED_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer", "minimum": 1, "maximum": 999999},
        "name": {"type": "string", "minLength": 1, "maxLength": 40},
        "status": {"type": "string", "enum": ["active", "inactive", "pending"]},
        "tags": {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 16},
            "minItems": 1,
            "maxItems": 5,
        },
        "owner": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 40},
                "email": {"type": "string", "maxLength": 64},
                "role": {"enum": ["admin", "editor", "viewer"]},
                "address": {
                    "type": "object",
                    "properties": {
                        "street": {"type": "string", "maxLength": 64},
                        "city": {"type": "string", "minLength": 1, "maxLength": 32},
                        "zip": {"type": "string", "minLength": 5, "maxLength": 10},
                        "country": {"type": "string", "enum": ["US", "DE", "FR", "JP", "BR"]},
                    },
                    "required": ["city", "country"],
                    "additionalProperties": False,
                },
            },
            "required": ["name", "role"],
            "additionalProperties": False,
        },
        "items": {
            "type": "array",
            "minItems": 1,
            "maxItems": 8,
            "items": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string", "minLength": 3, "maxLength": 12},
                    "quantity": {"type": "integer", "minimum": 1, "maximum": 1000},
                    "price": {"type": "number", "minimum": 0},
                    "in_stock": {"type": "boolean"},
                },
                "required": ["sku", "quantity", "price"],
                "additionalProperties": False,
            },
        },
        "notes": {"anyOf": [{"type": "string", "maxLength": 200}, {"type": "null"}]},
    },
    "required": ["id", "name", "status", "tags", "owner", "items"],
    "additionalProperties": False,
}
WARMUP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "array", "items": {"type": "string"}}},
    "required": ["a"],
    "additionalProperties": False,
}


def _drop_string_lengths(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _drop_string_lengths(v) for k, v in node.items() if k not in ("minLength", "maxLength")}
    if isinstance(node, list):
        return [_drop_string_lengths(v) for v in node]
    return node


NESTED_SCHEMA_NO_STRLEN = _drop_string_lengths(NESTED_SCHEMA)  # same instances stay valid
# ~10x NESTED_SCHEMA, only used to make one compile call long enough for the GIL check
BIG_SCHEMA: dict[str, Any] = {"type": "object", "properties": {f"p{i}": NESTED_SCHEMA for i in range(10)},
                              "required": [f"p{i}" for i in range(10)], "additionalProperties": False}
ANY_JSON_OBJECT = '{"type": "object"}'
REGEX = r"\d{3}-\d{4}"
LARK_GRAMMAR = 'start: greeting " " name\ngreeting: "hello" | "hi"\nname: /[a-z]+/\n'
GBNF_GRAMMAR = 'root ::= greeting " " name\ngreeting ::= "hello" | "hi"\nname ::= [a-z]+\n'

# (keyword, schema, a valid document, an invalid document that only this keyword rules out)
KEYWORD_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("minLength/maxLength", {"type": "string", "minLength": 3, "maxLength": 5}, '"abcd"', '"ab"'),
    ("pattern", {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}, '"ABC-12"', '"abc-12"'),
    ("pattern, unanchored (search)", {"type": "string", "pattern": "^ab"}, '"abc"', '"xbc"'),
    ("format: email", {"type": "string", "format": "email"}, '"a.b@example.com"', '"not an email"'),
    ("format: date-time", {"type": "string", "format": "date-time"}, '"2024-05-01T12:30:00Z"', '"yesterday"'),
    ("format: uuid", {"type": "string", "format": "uuid"}, '"123e4567-e89b-12d3-a456-426614174000"', '"1234"'),
    ("exclusiveMinimum", {"type": "number", "exclusiveMinimum": 0}, "1.5", "0"),
    ("multipleOf", {"type": "integer", "multipleOf": 5}, "15", "7"),
    ("uniqueItems", {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "[1,2]", "[1,1]"),
    ("const", {"const": "fixed"}, '"fixed"', '"other"'),
    ("recursive $ref", {
        "$defs": {"node": {"type": "object", "properties": {
            "v": {"type": "integer"}, "next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]}},
            "required": ["v", "next"], "additionalProperties": False}},
        "$ref": "#/$defs/node"}, '{"v":1,"next":{"v":2,"next":null}}', '{"v":1}'),
    ("patternProperties", {"type": "object", "patternProperties": {"^x_": {"type": "integer"}},
                           "additionalProperties": False}, '{"x_a":1}', '{"y":1}'),
    ("min/maxProperties", {"type": "object", "additionalProperties": {"type": "integer"}, "minProperties": 1,
                           "maxProperties": 2}, '{"a":1}', "{}"),
    ("not", {"not": {"type": "string"}}, "1", '"s"'),
    ("if/then/else", {"if": {"type": "integer"}, "then": {"minimum": 10}, "else": {"type": "string"}},
     "12", "5"),
]

WORDS = (
    "alpha beta gamma delta quick brown fox jumps over lazy dog market order shipping invoice "
    "customer priority express standard blue green red large small premium basic cotton steel "
    "wooden glass paper modern classic office garden kitchen travel summer winter north south "
    "review pending approved returned damaged fragile gift warranty refund bundle sample"
).split()
FIRST = ["Alice", "Bob", "Carla", "Dmitri", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas"]
LAST = ["Smith", "Okafor", "Novak", "Tanaka", "Garcia", "Muller", "Rossi", "Kowalski", "Silva"]
CITIES = ["Berlin", "Paris", "Tokyo", "Austin", "Recife", "Lyon", "Osaka", "Munich", "Seattle"]


class GrammarError(RuntimeError):
    """A grammar failed to compile (exception in xgrammar, error state in llguidance)."""


# ----------------------------------------------------------------------------------------------
# Vocabulary / tokenizer
# ----------------------------------------------------------------------------------------------


def extend_bpe_json(tok_json: dict[str, Any], target: int, seed: int) -> tuple[dict[str, Any], dict[str, int]]:
    """Add realistic tokens (with BPE merges) to a byte-level BPE tokenizer.json until it has ``target`` tokens."""
    model = tok_json["model"]
    vocab: dict[str, int] = dict(model["vocab"])
    merges: list[Any] = list(model["merges"])
    next_id = max(vocab.values()) + 1
    stats = {"base": len(vocab), "digits": 0, "punct": 0, "letters": 0}

    def add(a: str, b: str, kind: str) -> bool:
        nonlocal next_id
        tok = a + b
        if len(vocab) >= target or tok in vocab or a not in vocab or b not in vocab:
            return False
        vocab[tok] = next_id
        next_id += 1
        merges.append([a, b])
        stats[kind] += 1
        return True

    digits = "0123456789"
    for a in digits:  # 2-digit numbers, then 3-digit numbers (Llama-3 has all of 0..999)
        for b in digits:
            add(a, b, "digits")
    for a in digits:
        for b in digits:
            for c in digits:
                add(a + b, c, "digits")
    rng = random.Random(seed)
    punct_a = sorted(t for t in vocab if re.fullmatch(f"Ġ?[{PUNCT}]{{1,3}}", t))
    punct_b = sorted(t for t in vocab if re.fullmatch(f"[{PUNCT}]{{1,2}}", t))
    n_punct = min(6000, (target - len(vocab)) // 10)
    for _ in range(n_punct * 20):
        if stats["punct"] >= n_punct:
            break
        add(rng.choice(punct_a), rng.choice(punct_b), "punct")
    word_a = sorted(t for t in vocab if re.fullmatch("Ġ?[A-Za-z]{1,8}", t))
    word_b = sorted(t for t in vocab if re.fullmatch("[a-z]{2,5}", t))
    for _ in range((target - len(vocab)) * 20):
        if len(vocab) >= target:
            break
        add(rng.choice(word_a), rng.choice(word_b), "letters")
    if len(vocab) < target:
        raise RuntimeError(f"could only build {len(vocab)} tokens")
    out = dict(tok_json)
    out["model"] = dict(model, vocab=vocab, merges=merges)
    return out, stats


def load_tokenizer(tokenizer_dir: Path, vocab_size: int, seed: int) -> tuple[Any, dict[str, int]]:
    """Return a PreTrainedTokenizerFast with ``vocab_size`` tokens (SmolLM2's own one if it already has that many)."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    base = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    if vocab_size <= len(base):
        return base, {"base": len(base), "digits": 0, "punct": 0, "letters": 0}
    tok_json = json.loads((tokenizer_dir / "tokenizer.json").read_text())
    ext_json, stats = extend_bpe_json(tok_json, vocab_size, seed)
    backend = Tokenizer.from_str(json.dumps(ext_json))
    hf = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=base.eos_token, bos_token=base.bos_token)
    assert len(hf) == vocab_size, (len(hf), vocab_size)
    return hf, stats


# ----------------------------------------------------------------------------------------------
# JSON instances of NESTED_SCHEMA
# ----------------------------------------------------------------------------------------------


def _phrase(rng: random.Random, lo: int, hi: int, max_len: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))[:max_len].strip() or "x"


def make_instances(n: int, seed: int) -> list[str]:
    """Deterministic valid instances of NESTED_SCHEMA, keys in schema order, in three layouts."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        owner: dict[str, Any] = {"name": f"{first} {last}"}
        if rng.random() < 0.7:
            owner["email"] = f"{first.lower()}.{last.lower()}@example.com"
        owner["role"] = rng.choice(["admin", "editor", "viewer"])
        if rng.random() < 0.7:
            owner["address"] = {"street": f"{rng.randint(1, 999)} {rng.choice(WORDS).title()} Street",
                                "city": rng.choice(CITIES), "zip": f"{rng.randint(10000, 99999)}",
                                "country": rng.choice(["US", "DE", "FR", "JP", "BR"])}
        items = []
        for _ in range(rng.randint(1, 4)):
            item: dict[str, Any] = {"sku": f"SKU-{rng.randint(100, 99999)}", "quantity": rng.randint(1, 1000),
                                    "price": round(rng.uniform(0.5, 999.0), 2)}
            if rng.random() < 0.5:
                item["in_stock"] = rng.random() < 0.5
            items.append(item)
        doc: dict[str, Any] = {
            "id": rng.randint(1, 999999),
            "name": _phrase(rng, 2, 5, 40),
            "status": rng.choice(["active", "inactive", "pending"]),
            "tags": [rng.choice(WORDS) for _ in range(rng.randint(1, 5))],
            "owner": owner,
            "items": items,
        }
        if rng.random() < 0.8:
            doc["notes"] = _phrase(rng, 5, 25, 200) if rng.random() < 0.8 else None
        layout = i % 3
        if layout == 0:
            docs.append(json.dumps(doc, separators=(",", ":")))
        elif layout == 1:
            docs.append(json.dumps(doc))
        else:
            docs.append(json.dumps(doc, indent=2))
    return docs


# ----------------------------------------------------------------------------------------------
# Backends: a thin common interface over each library's public API
# ----------------------------------------------------------------------------------------------


class XGrammarBackend:
    """xgrammar: GrammarCompiler (with its own cache) -> CompiledGrammar -> GrammarMatcher."""

    name = "xgrammar"

    def __init__(self, threads: int) -> None:
        import xgrammar

        self.xgr = xgrammar
        self.threads = threads
        self.version = _dist_version("xgrammar")
        self.info: Any = None
        self.compiler: Any = None
        self.batcher: Any = None

    def build_info(self, hf_tok: Any, vocab_size: int, eos_id: int) -> int:
        self.info = self.xgr.TokenizerInfo.from_huggingface(hf_tok, vocab_size=vocab_size, stop_token_ids=[eos_id])
        return int(self.info.vocab_size)

    def new_compiler(self, threads: int | None = None) -> None:
        self.compiler = self.xgr.GrammarCompiler(self.info, max_threads=threads or self.threads, cache_enabled=True)

    def compile(self, kind: str, src: str) -> Any:
        c = self.compiler
        try:
            if kind == "json_schema":
                return c.compile_json_schema(src, any_whitespace=True, strict_mode=True)
            if kind == "any_json":  # strict_mode=False, else {"type":"object"} would only allow {}
                return c.compile_json_schema(src, any_whitespace=True, strict_mode=False)
            if kind == "regex":
                return c.compile_regex(src)
            if kind == "lark":
                return c.compile_lark(src)
            if kind == "gbnf":
                return c.compile_grammar(src)
        except Exception as e:  # noqa: BLE001 - reported, not hidden
            raise GrammarError(f"{type(e).__name__}: {e}") from e
        raise ValueError(kind)

    def matcher(self, compiled: Any) -> Any:
        return self.xgr.GrammarMatcher(compiled)

    def fill(self, m: Any, mask: torch.Tensor, idx: int = 0) -> None:
        m.fill_next_token_bitmask(mask, idx)

    def accept(self, m: Any, tok: int) -> bool:
        return bool(m.accept_token(tok))

    def reset(self, m: Any) -> None:
        m.reset()

    def rollback(self, m: Any, n: int) -> None:
        m.rollback(n)

    def new_batch(self) -> None:
        self.batcher = self.xgr.BatchGrammarMatcher(max_threads=self.threads)

    def fill_batch(self, ms: list[Any], mask: torch.Tensor) -> None:
        self.batcher.batch_fill_next_token_bitmask(ms, mask)

    def accept_batch(self, ms: list[Any], toks: list[int]) -> list[bool]:
        return self.xgr.BatchGrammarMatcher.batch_accept_token(ms, toks)

    def apply(self, logits: torch.Tensor, mask: torch.Tensor) -> None:
        self.xgr.apply_token_bitmask_inplace(logits, mask)

    apply_label = "xgrammar.apply_token_bitmask_inplace (native CPU kernel)"


class LLGuidanceBackend:
    """llguidance: grammar string -> LLMatcher (template, kept in a dict cache) -> deep_copy() per request."""

    name = "llguidance"

    def __init__(self, threads: int) -> None:
        import llguidance
        import llguidance.hf
        import llguidance.torch

        self.llg = llguidance
        self.threads = threads
        self.version = _dist_version("llguidance")
        self.tok: Any = None
        self.cache: dict[tuple[str, str], Any] = {}
        self.executor: Any = None

    def build_info(self, hf_tok: Any, vocab_size: int, eos_id: int) -> int:
        self.tok = self.llg.hf.from_tokenizer(hf_tok, n_vocab=vocab_size, eos_token=eos_id)
        return int(self.tok.vocab_size)

    def new_compiler(self, threads: int | None = None) -> None:
        self.cache = {}  # llguidance has no compiler object / grammar cache; a dict of template matchers

    def grammar(self, kind: str, src: str) -> str:
        mk = self.llg.LLMatcher
        if kind in ("json_schema", "any_json"):
            return mk.grammar_from_json_schema(src, overrides={"whitespace_flexible": True})
        if kind == "regex":
            return mk.grammar_from_regex(src)
        if kind == "lark":
            return mk.grammar_from_lark(src)
        if kind == "gbnf":
            return self.llg.grammar_from("gbnf", src)
        raise ValueError(kind)

    def compile(self, kind: str, src: str) -> Any:
        key = (kind, src)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        try:
            m = self.llg.LLMatcher(self.tok, self.grammar(kind, src), log_level=0)
        except Exception as e:  # noqa: BLE001 - reported, not hidden
            raise GrammarError(f"{type(e).__name__}: {e}") from e
        if m.is_error():
            raise GrammarError(f"error state: {m.get_error()}")
        self.cache[key] = m
        return m

    def matcher(self, compiled: Any) -> Any:
        return compiled.deep_copy()

    def fill(self, m: Any, mask: torch.Tensor, idx: int = 0) -> None:
        self.llg.torch.fill_next_token_bitmask(m, mask, idx)

    def accept(self, m: Any, tok: int) -> bool:
        return bool(m.consume_token(tok))

    def reset(self, m: Any) -> None:
        m.reset()

    def rollback(self, m: Any, n: int) -> None:
        if not m.rollback(n):
            raise RuntimeError("rollback failed")

    def new_batch(self) -> None:
        self.executor = self.llg.LLExecutor(num_threads=self.threads)

    def fill_batch(self, ms: list[Any], mask: torch.Tensor) -> None:
        self.llg.torch.fill_next_token_bitmask_par(self.executor, [(m, i) for i, m in enumerate(ms)], mask)

    def accept_batch(self, ms: list[Any], toks: list[int]) -> list[bool]:
        return self.llg.torch.consume_token_par(self.executor, list(zip(ms, toks)))

    def apply(self, logits: torch.Tensor, mask: torch.Tensor) -> None:
        self.llg.torch.apply_token_bitmask_inplace(logits, mask)

    apply_label = "llguidance.torch.apply_token_bitmask_inplace (torch.compile)"


Backend = XGrammarBackend | LLGuidanceBackend


# ----------------------------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------------------------


@dataclass
class Row:
    backend: str
    vocab: int
    tokinfo_s: float = float("nan")
    compiler_ms: float = float("nan")
    compile_ms: dict[str, float] = field(default_factory=dict)
    first_mask_ms: dict[str, float] = field(default_factory=dict)
    cached_ms: float = float("nan")
    first_ever_ms: float = float("nan")
    b1_first_us: float = float("nan")
    b1_fill_us: float = float("nan")
    b1_step_us: float = float("nan")
    b1_step_p50_us: float = float("nan")
    b1_step_p99_us: float = float("nan")
    b1_nostrlen_us: float = float("nan")
    b64_fill_ms: float = float("nan")
    b64_step_ms: float = float("nan")
    b64_step_p99_ms: float = float("nan")
    tokens: int = 0
    rejects: int = 0
    not_in_mask: int = 0
    errors: list[str] = field(default_factory=list)


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def _median(xs: Iterable[float]) -> float:
    xs = list(xs)
    return statistics.median(xs) if xs else float("nan")


def _bit(mask: torch.Tensor, row: int, tok: int) -> bool:
    return bool((int(mask[row, tok >> 5]) >> (tok & 31)) & 1)


def time_tokenizer_info(be: Backend, hf_tok: Any, vocab: int, eos: int, reps: int) -> tuple[float, int]:
    """One warm-up build, then the median of ``reps`` builds (seconds)."""
    got = be.build_info(hf_tok, vocab, eos)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        got = be.build_info(hf_tok, vocab, eos)
        times.append(time.perf_counter() - t0)
    return _median(times), got


def time_compiles(be: Backend, row: Row, reps: int, vocab: int) -> None:
    """Cold "schema -> ready matcher" (fresh compiler each rep), first mask fill, and the cached path."""
    mask = torch.full((1, (vocab + 31) // 32), -1, dtype=torch.int32)
    be.new_compiler()
    t0 = time.perf_counter()
    be.fill(be.matcher(be.compile("json_schema", json.dumps(WARMUP_SCHEMA))), mask)  # warm-up
    row.first_ever_ms = 1e3 * (time.perf_counter() - t0)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        be.new_compiler()
        ts.append(time.perf_counter() - t0)
    row.compiler_ms = 1e3 * _median(ts) if isinstance(be, XGrammarBackend) else float("nan")  # no such object
    for kind, src in (("json_schema", json.dumps(NESTED_SCHEMA)), ("any_json", ANY_JSON_OBJECT), ("regex", REGEX)):
        cold, first = [], []
        for _ in range(reps):
            be.new_compiler()
            t0 = time.perf_counter()
            m = be.matcher(be.compile(kind, src))
            t1 = time.perf_counter()
            be.fill(m, mask)
            t2 = time.perf_counter()
            cold.append(t1 - t0)
            first.append(t2 - t1)
        row.compile_ms[kind] = 1e3 * _median(cold)
        row.first_mask_ms[kind] = 1e3 * _median(first)
        if kind == "json_schema":  # same compiler: second request for the same schema
            hits = []
            for _ in range(max(reps, 5)):
                t0 = time.perf_counter()
                be.matcher(be.compile(kind, src))
                hits.append(time.perf_counter() - t0)
            row.cached_ms = 1e3 * _median(hits)


def run_batch1(be: Backend, compiled: Any, seqs: list[list[int]], vocab: int, row: Row | None,
               passes: int) -> tuple[list[float], list[float]]:
    """Step one matcher through every sequence ``passes`` times; returns (fill times, step times) in seconds."""
    mask = torch.full((1, (vocab + 31) // 32), -1, dtype=torch.int32)
    fills: list[float] = []
    steps: list[float] = []
    for _ in range(passes):
        for seq in seqs:
            m = be.matcher(compiled)
            for tok in seq:
                t0 = time.perf_counter()
                be.fill(m, mask, 0)
                t1 = time.perf_counter()
                ok = be.accept(m, tok)
                t2 = time.perf_counter()
                fills.append(t1 - t0)
                steps.append(t2 - t0)
                if row is not None:
                    row.not_in_mask += not _bit(mask, 0, tok)
                if not ok:
                    if row is not None:
                        row.rejects += 1
                    break
    return fills, steps


def run_batch(be: Backend, compiled: Any, seqs: list[list[int]], vocab: int, batch: int, steps: int,
              warmup: int, row: Row) -> tuple[list[float], list[float], torch.Tensor]:
    """``batch`` matchers, each on its own instance and offset; per batch step: fill all masks, accept all tokens."""
    mask = torch.full((batch, (vocab + 31) // 32), -1, dtype=torch.int32)
    be.new_batch()
    ms, which, pos = [], [], []
    for i in range(batch):
        s = i % len(seqs)
        m = be.matcher(compiled)
        off = (i * 7) % (len(seqs[s]) - 1)
        for tok in seqs[s][:off]:
            be.accept(m, tok)
        ms.append(m)
        which.append(s)
        pos.append(off)
    fills: list[float] = []
    totals: list[float] = []
    for step in range(warmup + steps):
        toks = [seqs[which[i]][pos[i]] for i in range(batch)]
        t0 = time.perf_counter()
        be.fill_batch(ms, mask)
        t1 = time.perf_counter()
        oks = be.accept_batch(ms, toks)
        t2 = time.perf_counter()
        if step >= warmup:
            fills.append(t1 - t0)
            totals.append(t2 - t0)
        for i in range(batch):
            pos[i] += 1
            if not oks[i]:
                row.rejects += 1
                ms[i], pos[i] = be.matcher(compiled), 0
            elif pos[i] == len(seqs[which[i]]):
                be.reset(ms[i])
                pos[i] = 0
    return fills, totals, mask


def apply_plain_torch(logits: torch.Tensor, mask: torch.Tensor, shifts: torch.Tensor) -> None:
    """Reference: unpack the int32 bitmask with shifts and masked_fill_ the disallowed logits with -inf."""
    b, v = logits.shape
    allowed = ((mask.unsqueeze(-1) >> shifts) & 1).view(b, -1)[:, :v].to(torch.bool)
    logits.masked_fill_(~allowed, float("-inf"))


@dataclass
class ApplyResult:
    first_s: float
    mean_ms: float
    median_ms: float
    p99_ms: float
    result: torch.Tensor
    same: str = "yes"


def time_apply(fn: Callable[[torch.Tensor, torch.Tensor], None], base: torch.Tensor, mask: torch.Tensor,
               reps: int) -> ApplyResult:
    """First call (includes any JIT compile), then ``reps`` timed calls on fresh copies of the logits."""
    logits = base.clone()
    t0 = time.perf_counter()
    fn(logits, mask)
    first = time.perf_counter() - t0
    result = logits.clone()
    for _ in range(2):
        logits.copy_(base)
        fn(logits, mask)
    ts = []
    for _ in range(reps):
        logits.copy_(base)
        t0 = time.perf_counter()
        fn(logits, mask)
        ts.append(time.perf_counter() - t0)
    arr = np.array(ts) * 1e3
    return ApplyResult(first, float(arr.mean()), float(np.median(arr)), float(np.percentile(arr, 99)), result)


def accepts_document(be: Backend, compiled: Any, toks: list[int], eos: int) -> bool:
    m = be.matcher(compiled)
    return all(be.accept(m, t) for t in toks) and be.accept(m, eos)


def check_keywords(be: Backend, hf_tok: Any, eos: int) -> dict[str, str]:
    out = {}
    for name, schema, good, bad in KEYWORD_CASES:
        be.new_compiler()
        try:
            compiled = be.compile("json_schema", json.dumps(schema))
        except GrammarError as e:
            out[name] = "ERROR: " + _short(str(e), 70)
            continue
        ok_good = accepts_document(be, compiled, hf_tok.encode(good, add_special_tokens=False), eos)
        ok_bad = accepts_document(be, compiled, hf_tok.encode(bad, add_special_tokens=False), eos)
        out[name] = ("enforced" if ok_good and not ok_bad else
                     "compiles, NOT enforced" if ok_good else "rejects valid doc")
    return out


def check_grammar(be: Backend, kind: str, src: str, text: str, hf_tok: Any, eos: int) -> str:
    be.new_compiler()
    try:
        t0 = time.perf_counter()
        compiled = be.compile(kind, src)
        dt = (time.perf_counter() - t0) * 1e3
    except GrammarError as e:
        return "ERROR: " + _short(str(e), 60)
    ok = accepts_document(be, compiled, hf_tok.encode(text, add_special_tokens=False), eos)
    return f"yes ({dt:.1f} ms)" if ok else "compiles, rejects valid text"


def check_errors(be: Backend) -> str:
    """How a broken JSON schema and a broken regex are reported."""
    parts = []
    for kind, src in (("json_schema", '{"type": "nosuchtype"}'), ("regex", "(abc")):
        be.new_compiler()
        try:
            if isinstance(be, LLGuidanceBackend):
                m = be.llg.LLMatcher(be.tok, be.grammar(kind, src), log_level=0)  # never raises
                parts.append(f"{kind}: no exception, is_error()={m.is_error()}" if m.is_error()
                             else f"{kind}: accepted")
            else:
                be.compile(kind, src)
                parts.append(f"{kind}: accepted")
        except GrammarError as e:
            parts.append(f"{kind}: raises {str(e).split(':')[0]}")
        except Exception as e:  # noqa: BLE001
            parts.append(f"{kind}: raises {type(e).__name__}")
    return "; ".join(parts)


def check_rollback(be: Backend, seq: list[int], vocab: int) -> str:
    be.new_compiler()
    compiled = be.compile("json_schema", json.dumps(NESTED_SCHEMA))
    m = be.matcher(compiled)
    a = torch.zeros((1, (vocab + 31) // 32), dtype=torch.int32)
    b = torch.zeros_like(a)
    body, k = seq[:-1], min(10, len(seq) - 2)
    for t in body[:-k]:
        be.accept(m, t)
    be.fill(m, a)
    for t in body[-k:]:
        be.accept(m, t)
    try:
        t0 = time.perf_counter()
        be.rollback(m, k)
        dt = (time.perf_counter() - t0) * 1e6
    except Exception as e:  # noqa: BLE001
        return f"FAILED: {type(e).__name__}"
    be.fill(m, b)
    same = torch.equal(a, b)
    ok = all(be.accept(m, t) for t in body[-k:]) and be.accept(m, seq[-1])
    return f"rollback({k}) {'ok' if same and ok else 'MISMATCH'} ({dt:.0f} us)"


def _blocked_fraction(work: Callable[[], None], calls: int) -> tuple[float, float]:
    """Run ``work`` ``calls`` times in a thread; return (fraction of that time the main thread, sleeping in
    0.5 ms steps, could not get the GIL back for > 2 ms at a stretch, median call duration in seconds)."""
    durations: list[float] = []
    done = threading.Event()

    def loop() -> None:
        for _ in range(calls):
            t0 = time.perf_counter()
            work()
            durations.append(time.perf_counter() - t0)
        done.set()

    th = threading.Thread(target=loop)
    blocked = 0.0
    start = last = time.perf_counter()
    th.start()
    while not done.is_set():
        time.sleep(0.0005)  # mostly idle: waking up needs the GIL, hardly any CPU
        now = time.perf_counter()
        if now - last > 0.0025:
            blocked += now - last
        last = now
    total = time.perf_counter() - start
    th.join()
    return blocked / total, _median(durations)


def gil_check(work: Callable[[], None], calls: int) -> str:
    """Does a long compile call let other Python threads run? Compared with a CPU-bound C call that releases
    the GIL (sha256 of 16 MB: same core contention, no GIL) and one that holds it (sum over a range)."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    buf = bytes(16 << 20)
    try:
        floor, _ = _blocked_fraction(lambda: hashlib.sha256(buf).digest(), 10)
        held, _ = _blocked_fraction(lambda: sum(range(2_000_000)), 5)
        frac, call = _blocked_fraction(work, calls)
    finally:
        sys.setswitchinterval(old)
    rel = (frac - floor) / max(held - floor, 1e-9)
    verdict = "released" if rel < 0.25 else "HELD" if rel > 0.75 else "partly held"
    return (f"{verdict}: main thread blocked {100 * frac:.0f}% during {1e3 * call:.0f} ms calls "
            f"(GIL-free C call {100 * floor:.0f}%, GIL-holding C call {100 * held:.0f}%)")


def apply_in_subprocess(env_overrides: dict[str, str], timeout: float) -> dict[str, str]:
    """First call of each library's apply function in a fresh Python process with the given environment."""
    code = ("import time, torch, xgrammar, llguidance.torch as lt\n"
            "x = torch.randn(2, 100); m = torch.full((2, 4), -1, dtype=torch.int32)\n"
            "for name, fn in (('xgrammar', xgrammar.apply_token_bitmask_inplace),\n"
            "                 ('llguidance', lt.apply_token_bitmask_inplace)):\n"
            "    t0 = time.perf_counter()\n"
            "    try:\n"
            "        fn(x, m); print('RESULT', name, f'ok, first call {time.perf_counter() - t0:.2f} s')\n"
            "    except Exception as e:\n"
            "        print('RESULT', name, 'FAILS', type(e).__name__ + ':', str(e).splitlines()[0][:90])\n")
    out = {"xgrammar": "no result", "llguidance": "no result"}
    try:
        stdout = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, **env_overrides),
                                capture_output=True, text=True, timeout=timeout).stdout
        for ln in stdout.splitlines():
            if ln.startswith("RESULT "):
                _, name, rest = ln.split(" ", 2)
                out[name] = rest
    except subprocess.TimeoutExpired:
        out = {k: f"timed out after {timeout:.0f} s" for k in out}
    return out


# ----------------------------------------------------------------------------------------------
# Footprint
# ----------------------------------------------------------------------------------------------


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(lines: Iterable[str]) -> list[str]:
    """Names of the requirements that apply here without extras."""
    from packaging.requirements import Requirement

    names = []
    for line in lines:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            names.append(_canon(req.name))
    return names


def _closure(names: Iterable[str]) -> set[str]:
    from importlib.metadata import PackageNotFoundError, distribution

    seen: set[str] = set()
    todo = [_canon(n) for n in names]
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        try:
            todo.extend(_requirements(distribution(n).requires or []))
        except PackageNotFoundError:
            pass
    return seen


def _installed_mb(name: str) -> float:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        files = distribution(name).files or []
    except PackageNotFoundError:
        return float("nan")
    total = 0
    for f in files:
        p = Path(str(f.locate()))
        if p.is_file():
            total += p.stat().st_size
    return total / 2**20


def _sdk_requirements() -> list[str]:
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    try:
        import tomllib

        return _requirements(tomllib.loads(pyproject.read_text())["project"]["dependencies"])
    except (OSError, KeyError, ImportError):
        return ["torch", "transformers", "safetensors", "tokenizers", "jinja2", "tqdm", "numpy"]


def footprint(dist: str, wheel_dir: Path) -> dict[str, str]:
    wheels = sorted(wheel_dir.glob(f"{dist}-*.whl")) if wheel_dir.is_dir() else []
    info = {"wheel": "n/a", "requires": "n/a"}
    if wheels:
        whl = wheels[0]
        info["wheel"] = f"{whl.stat().st_size / 2**20:.2f} MB ({whl.name.split('-')[2]}-{whl.name.split('-')[3]})"
        with zipfile.ZipFile(whl) as z:
            meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
        reqs = [ln.split(":", 1)[1].strip() for ln in meta.splitlines() if ln.startswith("Requires-Dist:")]
        base = [r for r in reqs if "extra ==" not in r]
        info["requires"] = ", ".join(r.replace(" ", "") for r in base) or "none"
    sdk = _closure(n for n in _sdk_requirements() if n not in ("xgrammar", "llguidance"))  # neutral baseline
    extra = sorted(_closure([dist]) - sdk - {_canon(dist)})
    sizes = {n: _installed_mb(n) for n in extra}
    info["installed"] = f"{_installed_mb(dist):.1f} MB"
    info["extra_deps"] = ", ".join(f"{n} ({s:.0f} MB)" for n, s in sizes.items()) or "none"
    info["extra_total"] = f"{sum(s for s in sizes.values() if s == s):.0f} MB"
    return info


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------


def _short(s: str, n: int) -> str:
    s = re.sub(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ", "", " ".join(s.split()))  # xgrammar's "[time] file:line: "
    return s if len(s) <= n else s[: n - 3] + "..."


def _f(x: float, nd: int = 1) -> str:
    return "n/a" if x != x else f"{x:.{nd}f}"


def bench_vocab(backends: list[Backend], hf_tok: Any, vocab: int, args: argparse.Namespace,
                docs: list[str]) -> tuple[list[Row], dict[str, Any]]:
    eos = int(hf_tok.eos_token_id)
    seqs = [hf_tok.encode(d, add_special_tokens=False) + [eos] for d in docs]
    extra: dict[str, Any] = {"tokens_per_doc": sum(map(len, seqs)) / len(seqs),
                             "new_token_frac": sum(t >= 49152 for s in seqs for t in s) / sum(map(len, seqs))}
    rows = []
    apply_res: dict[str, ApplyResult | str] = {}
    last_mask: torch.Tensor | None = None
    for be in backends:
        row = Row(be.name, vocab)
        print(f"  [{vocab}] {be.name}: tokenizer info", flush=True)
        row.tokinfo_s, got = time_tokenizer_info(be, hf_tok, vocab, eos, args.reps)
        assert got == vocab, (be.name, got, vocab)
        print(f"  [{vocab}] {be.name}: compile", flush=True)
        time_compiles(be, row, args.reps, vocab)
        be.new_compiler()
        compiled = be.compile("json_schema", json.dumps(NESTED_SCHEMA))
        print(f"  [{vocab}] {be.name}: batch 1", flush=True)
        _, s0 = run_batch1(be, compiled, seqs, vocab, row, 1)  # first (cold) pass, with mask checks
        row.b1_first_us = 1e6 * float(np.mean(s0))
        fills, steps = run_batch1(be, compiled, seqs, vocab, None, args.passes)
        row.tokens = len(steps)
        row.b1_fill_us = 1e6 * float(np.mean(fills))
        row.b1_step_us = 1e6 * float(np.mean(steps))
        row.b1_step_p50_us = 1e6 * float(np.percentile(steps, 50))
        row.b1_step_p99_us = 1e6 * float(np.percentile(steps, 99))
        compiled2 = be.compile("json_schema", json.dumps(NESTED_SCHEMA_NO_STRLEN))
        run_batch1(be, compiled2, seqs, vocab, None, 1)  # warm-up pass
        _, steps2 = run_batch1(be, compiled2, seqs, vocab, row, 1)
        row.b1_nostrlen_us = 1e6 * float(np.mean(steps2))
        print(f"  [{vocab}] {be.name}: batch {args.batch}", flush=True)
        bf, bt, last_mask = run_batch(be, compiled, seqs, vocab, args.batch, args.batch_steps, 10, row)
        row.b64_fill_ms = 1e3 * float(np.mean(bf))
        row.b64_step_ms = 1e3 * float(np.mean(bt))
        row.b64_step_p99_ms = 1e3 * float(np.percentile(bt, 99))
        rows.append(row)
    # bitmask application on [batch, V] float32 logits, with a realistic mask from the batch run
    assert last_mask is not None
    base = torch.randn(args.batch, vocab, generator=torch.Generator().manual_seed(0))
    shifts = torch.arange(32, dtype=torch.int32)
    print(f"  [{vocab}] apply bitmask", flush=True)
    for be in backends:
        try:
            apply_res[be.apply_label] = time_apply(be.apply, base, last_mask, args.apply_reps)
        except Exception as e:  # noqa: BLE001 - e.g. torch.compile without a working C++ compiler
            apply_res[be.apply_label] = f"FAILED: {type(e).__name__}: {_short(str(e), 80)}"
    apply_res["plain torch (shifts + masked_fill_)"] = time_apply(
        lambda lg, mk: apply_plain_torch(lg, mk, shifts), base, last_mask, args.apply_reps)
    ref = apply_res["plain torch (shifts + masked_fill_)"]
    assert isinstance(ref, ApplyResult)
    for v in apply_res.values():
        if isinstance(v, ApplyResult):
            v.same = "yes" if torch.equal(torch.isinf(v.result), torch.isinf(ref.result)) else "MISMATCH"
            v.result = torch.empty(0)
    extra["apply"] = apply_res
    extra["allowed_frac"] = float(((last_mask.unsqueeze(-1) >> shifts) & 1).float().mean())
    return rows, extra


def print_report(rows: list[Row], extras: dict[int, dict[str, Any]], feats: dict[str, dict[str, str]],
                 kw: dict[str, dict[str, str]], fps: dict[str, dict[str, str]], vstats: dict[str, int],
                 args: argparse.Namespace, backends: list[Backend], wall: float) -> None:
    print("\n## Guided decoding backends on CPU "
          f"({os.cpu_count()} cores, {args.threads} threads, torch {torch.__version__}; "
          f"load average at start {args.load_start:.2f}, at end {os.getloadavg()[0]:.2f})\n")
    print("### Compile (ms unless noted; cold = fresh compiler, schema -> ready matcher; median of "
          f"{args.reps})\n")
    print("| backend | vocab | tok-info (s) | compiler init | schema cold | +1st mask | schema 2nd (cache) "
          "| any-JSON cold | +1st mask | regex cold | +1st mask |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        c, fm = r.compile_ms, r.first_mask_ms
        print(f"| {r.backend} | {r.vocab} | {_f(r.tokinfo_s, 2)} | {_f(r.compiler_ms, 2)} | {_f(c['json_schema'])} "
              f"| {_f(fm['json_schema'], 2)} | {_f(r.cached_ms, 3)} | {_f(c['any_json'])} | {_f(fm['any_json'], 2)} "
              f"| {_f(c['regex'], 2)} | {_f(fm['regex'], 2)} |")
    print(f"\n### Per-token mask (nested schema; fill int32 [B, ceil(V/32)] bitmask + accept token; "
          f"B=1: {args.passes} warm passes, B={args.batch}: {args.batch_steps} batch steps)\n")
    b = args.batch
    print(f"| backend | vocab | B=1 cold pass mean (us) | B=1 fill mean (us) | B=1 fill+accept mean (us) "
          f"| B=1 p50 (us) | B=1 p99 (us) | same, no str-length limits: mean (us) | B={b} fill (ms/step) "
          f"| B={b} fill+accept (ms/step) | B={b} p99 (ms) | tokens timed | rejected / not-in-mask |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r.backend} | {r.vocab} | {_f(r.b1_first_us)} | {_f(r.b1_fill_us)} | {_f(r.b1_step_us)} "
              f"| {_f(r.b1_step_p50_us)} | {_f(r.b1_step_p99_us)} | {_f(r.b1_nostrlen_us)} | {_f(r.b64_fill_ms, 2)} "
              f"| {_f(r.b64_step_ms, 2)} | {_f(r.b64_step_p99_ms, 2)} | {r.tokens} | {r.rejects} / {r.not_in_mask} |")
    print(f"\n### Apply bitmask to float32 logits [{args.batch}, V] on CPU (ms, {args.apply_reps} reps)\n")
    print("| implementation | vocab | first call (s) | mean (ms) | median (ms) | p99 (ms) "
          "| same -inf set as plain torch |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for vocab, ex in extras.items():
        for label, res in ex["apply"].items():
            if isinstance(res, str):
                print(f"| {label} | {vocab} | {res} | | | | |")
            else:
                print(f"| {label} | {vocab} | {res.first_s:.3f} | {res.mean_ms:.2f} | {res.median_ms:.2f} "
                      f"| {res.p99_ms:.2f} | {res.same} |")
    print("\n### Install footprint and features\n")
    names = [be.name for be in backends]
    print("| | " + " | ".join(f"{n} {be.version}" for n, be in zip(names, backends)) + " |")
    print("|---|" + "---|" * len(names))
    for key, label in (("wheel", "wheel (from --wheel-dir)"), ("requires", "Requires-Dist (no extras)"),
                       ("installed", "installed size"), ("extra_deps", "deps beyond lmdeploy-sdk's"),
                       ("extra_total", "their installed size")):
        print(f"| {label} | " + " | ".join(fps[n][key] for n in names) + " |")
    for key in feats[names[0]]:
        print(f"| {key} | " + " | ".join(feats[n][key] for n in names) + " |")
    print("\n### JSON-schema keywords (valid doc must be accepted, a doc violating only that keyword rejected)\n")
    print("| keyword | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for k in kw[names[0]]:
        print(f"| {k} | " + " | ".join(kw[n][k] for n in names) + " |")
    print("\n### Notes\n")
    big = max(extras)
    print(f"- Vocabulary: {big} tokens = SmolLM2's {vstats['base']} + {vstats['digits']} numbers (00..999) + "
          f"{vstats['punct']} punctuation pairs + {vstats['letters']} letter-token pairs, each with a BPE merge; "
          "both libraries get the same PreTrainedTokenizerFast (xgrammar.TokenizerInfo.from_huggingface, "
          "llguidance.hf.from_tokenizer).")
    for vocab, ex in extras.items():
        print(f"- V={vocab}: {ex['tokens_per_doc']:.0f} tokens per instance (incl. EOS)"
              + (f", {100 * ex['new_token_frac']:.0f}% of them from the added tokens" if vocab > 49152 else "")
              + f"; {100 * ex['allowed_frac']:.1f}% of the bits are set in the last B={args.batch} mask.")
    print("- Cold compile = fresh GrammarCompiler (xgrammar) / no cached template (llguidance), then "
          "GrammarMatcher(compiled) resp. template.deep_copy(). xgrammar precomputes token masks at compile "
          "time (scales with V); llguidance builds lazily, so its cost shows up in '+1st mask' and the "
          "'B=1 cold pass' column.")
    print("- '2nd (cache)': xgrammar = same GrammarCompiler (its built-in cache) + new GrammarMatcher; llguidance has "
          "no compile cache, so this is a dict of template LLMatchers + deep_copy() (what an engine would do).")
    print(f"- Batch: xgrammar BatchGrammarMatcher(max_threads={args.threads}).batch_fill_next_token_bitmask + "
          f"batch_accept_token; llguidance LLExecutor(num_threads={args.threads}) + fill_next_token_bitmask_par "
          "+ consume_token_par. Each matcher is at its own instance/offset.")
    print("- JSON: xgrammar any_whitespace=True, strict_mode=True (any-JSON: strict_mode=False); llguidance "
          "whitespace_flexible=True. Instances use compact, default and indent=2 layouts.")
    print("- First compile on a fresh tokenizer info (small warm-up schema, incl. first mask), ms: "
          + ", ".join(f"{r.backend}@{r.vocab} {r.first_ever_ms:.1f}" for r in rows) + ".")
    print("- 'no str-length limits' = the same schema with every minLength/maxLength removed (same instances): "
          "llguidance's per-step cost is dominated by length-bounded strings, where it walks the whole token trie.")
    print(f"- Total wall time {wall:.0f} s.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vocab-size", type=int, default=128256, help="size of the synthetic large vocabulary")
    ap.add_argument("--tokenizer-dir", type=Path, default=None,
                    help="a directory with tokenizer.json (default: the embedded SmolLM2's, converted on first use)")
    ap.add_argument("--wheel-dir", type=Path, default=Path("/tmp/whl"))
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batch-steps", type=int, default=300)
    ap.add_argument("--passes", type=int, default=3, help="timed passes over the instances at batch 1")
    ap.add_argument("--instances", type=int, default=6)
    ap.add_argument("--reps", type=int, default=5, help="repetitions of one-off timings (median)")
    ap.add_argument("--apply-reps", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smoke run: fewer repetitions")
    args = ap.parse_args()
    if args.tokenizer_dir is not None:
        tokenizer_dir = args.tokenizer_dir
    else:
        from lmdeploy_sdk.model_source import DEFAULT_MODEL, resolve_model_path
        tokenizer_dir = resolve_model_path(DEFAULT_MODEL)
    if args.quick:
        args.batch_steps, args.passes, args.reps, args.apply_reps, args.instances = 20, 1, 1, 3, 3
    t_start = time.perf_counter()
    args.load_start = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    backends: list[Backend] = [XGrammarBackend(args.threads), LLGuidanceBackend(args.threads)]
    docs = make_instances(args.instances, args.seed)
    rows: list[Row] = []
    extras: dict[int, dict[str, Any]] = {}
    vstats: dict[str, int] = {}
    big_tok: Any = None
    for vocab in sorted({args.vocab_size, 49152}, reverse=True):
        print(f"building tokenizer with {vocab} tokens", flush=True)
        hf_tok, stats = load_tokenizer(tokenizer_dir, vocab, args.seed)
        if vocab == args.vocab_size:
            vstats, big_tok = stats, hf_tok
        r, ex = bench_vocab(backends, hf_tok, vocab, args, docs)
        rows += r
        extras[vocab] = ex
    # features / keywords on the large vocabulary
    print("feature checks", flush=True)
    eos = int(big_tok.eos_token_id)
    seq0 = big_tok.encode(docs[0], add_special_tokens=False) + [eos]
    feats: dict[str, dict[str, str]] = {}
    kw: dict[str, dict[str, str]] = {}
    fps: dict[str, dict[str, str]] = {}
    for be in backends:
        be.build_info(big_tok, args.vocab_size, eos)
        schema = json.dumps(BIG_SCHEMA)
        if isinstance(be, XGrammarBackend):
            def work(b: XGrammarBackend = be) -> None:
                b.new_compiler(threads=1)
                b.compile("json_schema", schema)
        else:
            def work(b: LLGuidanceBackend = be) -> None:  # type: ignore[misc]
                b.new_compiler()
                b.compile("json_schema", schema)
        gil = gil_check(work, calls=5 if isinstance(be, XGrammarBackend) else 20)
        feats[be.name] = {
            "Lark grammar": check_grammar(be, "lark", LARK_GRAMMAR, "hi bob", big_tok, eos),
            "GBNF / EBNF grammar": check_grammar(be, "gbnf", GBNF_GRAMMAR, "hello alice", big_tok, eos),
            "regex": check_grammar(be, "regex", REGEX, "555-1234", big_tok, eos),
            "rollback": check_rollback(be, seq0, args.vocab_size),
            "GIL during compile (10x nested schema)": gil,
            "compile errors": check_errors(be),
        }
        kw[be.name] = check_keywords(be, big_tok, eos)
        fps[be.name] = footprint(be.name, args.wheel_dir)
    warm = apply_in_subprocess({}, timeout=120)  # this process filled TORCHINDUCTOR_CACHE_DIR
    cache = tempfile.mkdtemp(prefix="grammar_bench_nocc_")
    try:
        nocc = apply_in_subprocess({"CXX": "/nonexistent/g++", "CC": "/nonexistent/gcc",
                                    "TORCHINDUCTOR_CACHE_DIR": cache}, timeout=120)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    for be in backends:
        feats[be.name]["apply in a new process, warm inductor cache"] = warm[be.name]
        feats[be.name]["apply with no C++ compiler (CXX/CC point nowhere, empty cache)"] = nocc[be.name]
    print_report(rows, extras, feats, kw, fps, vstats, args, backends, time.perf_counter() - t_start)


if __name__ == "__main__":
    try:
        main()
    finally:
        if _INDUCTOR_TMP is not None:
            shutil.rmtree(_INDUCTOR_TMP, ignore_errors=True)
