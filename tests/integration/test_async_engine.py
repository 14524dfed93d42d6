"""AsyncEngine: streamed deltas, concurrency, abort on early exit, sessions."""
from __future__ import annotations

import asyncio

import pytest

from lmdeploy_sdk import AsyncEngine, GenerationConfig, TurbomindEngineConfig
from lmdeploy_sdk.errors import ErrorCode

GEN = GenerationConfig(max_new_tokens=8, ignore_eos=True)


@pytest.fixture
def engine(tiny_llama):
    eng = AsyncEngine(str(tiny_llama), TurbomindEngineConfig(device="cpu", cache_max_entry_count=128,
                                                              cache_block_seq_len=4))
    yield eng
    inner = eng._loaded.engine
    inner.call(lambda e: e.check_invariants()).result()
    for sid in list(inner.sessions):
        inner.end_session(sid)
    stats = inner.call(lambda e: e.stats()).result()
    assert stats.blocks_free == stats.blocks_total, f"leaked KV blocks: {stats}"
    eng.close()


async def collect(engine, prompt, gen=GEN, **kw):
    parts = [r async for r in engine.generate(prompt, gen, **kw)]
    return parts


def test_deltas_add_up_and_match_the_pipeline(engine, tiny_llama, make_pipeline):
    parts = asyncio.run(collect(engine, "Hello there"))
    assert parts[-1].finish_reason == "length"
    assert all(p.finish_reason is None for p in parts[:-1])
    ids = [t for p in parts for t in p.token_ids]
    assert parts[-1].generate_token_len == len(ids) == 8
    pipe = make_pipeline(tiny_llama)
    ref = pipe("Hello there", gen_config=GEN)
    assert ids == ref.token_ids and "".join(p.text for p in parts) == ref.text


def test_concurrent_requests_and_early_exit_free_blocks(engine):
    async def main():
        long = GenerationConfig(max_new_tokens=200, ignore_eos=True)
        results = await asyncio.gather(*[collect(engine, f"prompt {i}") for i in range(6)])
        agen = engine.generate("this one leaves early", long)
        async for _ in agen:
            break
        await agen.aclose()
        for _ in range(200):
            s = engine.stats()
            if s.running == 0 and s.waiting == 0:
                break
            await asyncio.sleep(0.01)
        return results, engine.stats()

    results, stats = asyncio.run(main())
    assert all(r[-1].finish_reason == "length" for r in results)
    assert stats.running == 0 and stats.blocks_free == stats.blocks_total


def test_abort_by_request_id(engine):
    async def main():
        long = GenerationConfig(max_new_tokens=500, ignore_eos=True)
        parts = []
        async for r in engine.generate("abort me", long, request_id="r1"):
            parts.append(r)
            if len(parts) == 2:
                assert await engine.abort("r1")
        return parts

    parts = asyncio.run(main())
    assert parts[-1].finish_reason == "abort" and len(parts) < 100


def test_session_reuse_and_busy_session(engine):
    async def main():
        first = await collect(engine, [{"role": "user", "content": "hi"}], session_id=7)
        text = "".join(p.text for p in first)
        convo = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": text},
                 {"role": "user", "content": "more"}]
        second = await collect(engine, convo, session_id=7)
        # two requests at once on one session: the second is refused
        slow = GenerationConfig(max_new_tokens=50, ignore_eos=True)
        a = engine.generate(convo, slow, session_id=8)
        first_a = await a.__anext__()
        busy = await collect(engine, convo, session_id=8)
        await a.aclose()
        await engine.end_session(7)
        await engine.end_session(8)
        return first, second, busy, first_a

    first, second, busy, _ = asyncio.run(main())
    assert second[-1].cached_tokens >= first[-1].input_token_len
    assert busy[-1].finish_reason == "error" and busy[-1].error_code == ErrorCode.SESSION_BUSY


def test_invalid_prompt_comes_back_as_error(engine):
    parts = asyncio.run(collect(engine, [{"role": "nobody", "content": 3}]))
    assert parts[-1].finish_reason == "error" and parts[-1].error_code == ErrorCode.INVALID_REQUEST
