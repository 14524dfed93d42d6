"""What guided decoding costs a decode step: the same batch, sampled, with and without a JSON
schema (the schema of the structured-output acceptance test), timed step by step."""
from __future__ import annotations

import asyncio
import statistics
import time

from lmdeploy_sdk.async_engine import AsyncEngine
from lmdeploy_sdk.engine.factory import LoadedModel
from lmdeploy_sdk.engine.step_times import StepTimes
from lmdeploy_sdk.guided import grammar_spec
from lmdeploy_sdk.messages import GenerationConfig

PROMPT = "Describe a made-up person as JSON."
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 2, "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "color": {"enum": ["red", "green", "blue"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "minItems": 1, "maxItems": 3},
        "home": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                                  "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                 "required": ["city", "zip"], "additionalProperties": False},
    },
    "required": ["name", "age", "color", "tags", "home"],
    "additionalProperties": False,
}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}


def _full_batch_step_s(loaded: LoadedModel, batch: int, output_len: int, fmt: dict | None) -> list[float]:
    """Periods of the decode-only steps that carried all `batch` sequences."""
    engine = AsyncEngine(loaded=loaded)
    configs = [GenerationConfig(do_sample=True, temperature=1.0, random_seed=i, max_new_tokens=output_len,
                                ignore_eos=fmt is None, response_format=fmt) for i in range(batch)]

    async def run() -> None:
        async def one(cfg: GenerationConfig) -> None:
            async for _ in engine.generate(PROMPT, cfg):
                pass

        await asyncio.gather(*(one(c) for c in configs))

    times = StepTimes()
    loaded.engine.record_step_times(times).result()
    try:
        asyncio.run(run())
    finally:
        loaded.engine.record_step_times(None).result()
    records = times.records
    return [b.start_s - r.start_s for r, b in zip(records, records[1:])
            if not r.prefill_tokens and r.decode_rows == batch]


def guided_overhead(loaded: LoadedModel, batch: int, output_len: int) -> dict:
    t0 = time.perf_counter()
    loaded.tokenizer.grammars.tokenizer  # the vocabulary, once per model
    t1 = time.perf_counter()
    loaded.tokenizer.grammars.matcher(grammar_spec(RESPONSE_FORMAT))  # what the first request with the schema pays
    t2 = time.perf_counter()
    _full_batch_step_s(loaded, batch, 8, None)  # warm up
    plain = _full_batch_step_s(loaded, batch, output_len, None)
    guided = _full_batch_step_s(loaded, batch, output_len, RESPONSE_FORMAT)
    if not plain or not guided:
        raise ValueError(f"no decode step carried all {batch} sequences; raise --output-len")
    plain_ms, guided_ms = 1e3 * statistics.median(plain), 1e3 * statistics.median(guided)
    return {
        "batch": batch,
        "vocabulary_setup_ms": 1e3 * (t1 - t0),
        "grammar_compile_ms": 1e3 * (t2 - t1),
        "plain_step_ms": plain_ms,
        "guided_step_ms": guided_ms,
        "overhead": guided_ms / plain_ms - 1,
        "steps_timed": [len(plain), len(guided)],
    }
