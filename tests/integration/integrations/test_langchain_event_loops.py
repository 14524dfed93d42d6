"""Async calls from successive event loops (asyncio.run per call, notebook cells, tests)
must not leave HTTP connections that a later loop then has to close."""
from __future__ import annotations

import asyncio
import gc

from lmdeploy_sdk.integrations.langchain import LMDeploy, LMDeployChat


def run_collecting_loop_errors(coro_fn) -> list:
    errors = []

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx))
        gc.collect()  # finalizers of earlier loops' clients run here, on this loop
        await coro_fn()

    asyncio.run(main())
    return errors


def test_remote_models_across_event_loops(tiny_server):
    chat = LMDeployChat(base_url=tiny_server, max_tokens=4)
    llm = LMDeploy(base_url=tiny_server, max_tokens=4)

    async def chat_call():
        await chat.ainvoke("hi")
        async for _ in chat.astream("hi"):
            pass

    async def llm_call():
        await llm.ainvoke("hi")
        async for _ in llm.astream("hi"):
            pass

    errors = []
    for _ in range(3):
        errors += run_collecting_loop_errors(chat_call)
        errors += run_collecting_loop_errors(llm_call)
    assert errors == []
    chat.close()
    llm.close()
