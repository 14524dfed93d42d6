from __future__ import annotations

import asyncio

import pytest

from lmdeploy_sdk.server.admission import AdmissionLimiter
from lmdeploy_sdk.server.drain import DrainController
from lmdeploy_sdk.server.errors import APIError


def test_limiter_counts_sequences_and_refuses_past_capacity():
    lim = AdmissionLimiter(capacity=4, retry_after_s=7)
    lim.acquire(3)
    with pytest.raises(APIError) as busy:
        lim.acquire(2)
    assert busy.value.status == 429 and busy.value.headers == {"Retry-After": "7"}
    lim.acquire(1)
    assert lim.in_flight == 4
    lim.release(3)
    lim.acquire(3)
    assert lim.in_flight == 4


def test_limiter_rejects_what_can_never_fit_with_400():
    lim = AdmissionLimiter(capacity=4)
    with pytest.raises(APIError) as err:
        lim.acquire(5)
    assert err.value.status == 400 and err.value.param == "n"
    assert lim.in_flight == 0


def test_limiter_capacity_must_be_positive():
    with pytest.raises(ValueError, match="max_concurrent_requests=0"):
        AdmissionLimiter(0)


def test_drain_refuses_new_work_and_wakes_running_after_grace():
    async def run():
        drain = DrainController()
        woken = []
        drain.register(lambda: woken.append("a"))
        drain.register(lambda: woken.append("b"))
        drain.check_accepting()
        drain.begin(0.05)
        with pytest.raises(APIError) as err:
            drain.check_accepting()
        assert err.value.status == 503
        assert woken == []  # still in the grace period
        await asyncio.sleep(0.1)
        assert sorted(woken) == ["a", "b"] and drain.stopped
        drain.close()

    asyncio.run(run())


def test_unregistered_requests_are_not_woken():
    async def run():
        drain = DrainController()
        woken = []

        def wake():
            woken.append(1)

        drain.register(wake)
        drain.unregister(wake)
        drain.begin(0)
        await asyncio.sleep(0.01)
        assert woken == []

    asyncio.run(run())
