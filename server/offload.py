"""Run work that can take long (tokenizing, chat templates, detokenizing) in a worker thread.

A request with megabytes of text takes seconds to tokenize; on the event loop that
would stall every other request, `/health` included. The tokenizers release the GIL
while they work, so a thread keeps the loop free.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

import anyio.to_thread

T = TypeVar("T")


async def in_worker(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))
