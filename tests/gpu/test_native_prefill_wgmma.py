"""The Hopper (wgmma, sm_90a) prefill kernel: chosen on compute capability 9.0, right there.

test_native_attention's prefill cases run through ops.paged_attention, so on an H100/H200
they exercise the wgmma kernel; this module re-runs them with LMDEPLOY_SDK_DISABLE_WGMMA=1
so the mma.sync kernel stays covered there too, and adds wgmma-specific cases (block sizes
around its 64/128-key tiles, both warpgroups' diagonals, long contexts). Everything here
is skipped on other GPUs, where both runs would be the same mma.sync kernel.
"""
from __future__ import annotations

import pytest
import torch

from lmdeploy_sdk import ops
from lmdeploy_sdk.native import driver
from lmdeploy_sdk.native import paged_attention as native_attention
from native_attention_cases import make_paged_batch, poison_allocator
from test_native_attention import _check
# Collected here again, under the fixture below that disables the wgmma kernel.
from test_native_attention import test_mixed_batch_runs_decodes_on_the_decode_kernel  # noqa: F401
from test_native_attention import test_prefill  # noqa: F401
from test_native_attention import test_prefill_long_context  # noqa: F401
from test_native_attention import test_prefill_non_power_of_two_blocks_and_strided_query  # noqa: F401

pytestmark = pytest.mark.gpu

DTYPES = [torch.float16, torch.bfloat16]


def _on_sm90() -> bool:
    return torch.cuda.is_available() and driver.device_runs_sm90a(0)


@pytest.fixture(autouse=True)
def wgmma_mode(request, monkeypatch):
    """Imported cases run with the wgmma kernel disabled; this module's own with it enabled."""
    if not _on_sm90():
        pytest.skip("the wgmma prefill runs on compute capability 9.0 only")
    if request.function.__module__ != __name__:
        monkeypatch.setenv(driver.DISABLE_SM90A_ENV, "1")
    else:
        monkeypatch.delenv(driver.DISABLE_SM90A_ENV, raising=False)


def _launched_kernels(monkeypatch) -> list[str]:
    kernels: list[str] = []
    launch = driver.launch
    monkeypatch.setattr(driver, "launch", lambda device, module, kernel, *a, **kw: kernels.append(kernel)
                        or launch(device, module, kernel, *a, **kw))
    return kernels


@pytest.mark.parametrize("head_dim", [64, 128])
def test_sm90_runs_the_wgmma_kernel_unless_disabled(head_dim, monkeypatch):
    batch = make_paged_batch([40, 200], [40, 300], 16, 4, head_dim, 16, torch.bfloat16, seed=1)
    kernels = _launched_kernels(monkeypatch)
    _check(batch, 0.1, ops.paged_attention(batch.q, batch.k_cache, batch.v_cache, batch.meta, 0.1))
    monkeypatch.setenv(driver.DISABLE_SM90A_ENV, "1")
    _check(batch, 0.1, ops.paged_attention(batch.q, batch.k_cache, batch.v_cache, batch.meta, 0.1))
    assert kernels == [f"paged_prefill_wgmma_bf16_d{head_dim}", f"paged_prefill_bf16_d{head_dim}"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("block_size", [16, 48, 64, 256])
@pytest.mark.parametrize("heads", [(8, 8), (32, 8), (32, 4)])
def test_wgmma_prefill_block_sizes_and_tile_edges(dtype, head_dim, block_size, heads):
    # q_len 1..300 around the 64-row warpgroup and 128-row CTA tiles, fresh and on cached prefixes
    q_lens = [1, 63, 64, 65, 127, 128, 129, 300, 17, 200]
    kv_lens = [1, 63, 64, 65, 127, 128, 129, 300, 1000, 777]
    batch = make_paged_batch(q_lens, kv_lens, *heads, head_dim, block_size, dtype, seed=block_size + head_dim)
    scale = head_dim**-0.5
    poison_allocator()
    _check(batch, scale, native_attention.paged_prefill(batch.q, batch.k_cache, batch.v_cache, batch.meta, scale))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [64, 128])
def test_wgmma_prefill_long_context_matches_the_mma_sync_kernel(dtype, head_dim, monkeypatch):
    batch = make_paged_batch([4096, 1000], [4096, 3100], 32, 8, head_dim, 64, dtype, seed=head_dim)
    poison_allocator()
    ours = native_attention.paged_prefill(batch.q, batch.k_cache, batch.v_cache, batch.meta, 0.088)
    _check(batch, 0.088, ours)
    monkeypatch.setenv(driver.DISABLE_SM90A_ENV, "1")
    theirs = native_attention.paged_prefill(batch.q, batch.k_cache, batch.v_cache, batch.meta, 0.088)
    torch.testing.assert_close(ours, theirs, atol=2e-2, rtol=0)  # both fp32-accumulated; P rounds alike


def test_wgmma_prefill_under_cuda_graph_replay():
    batch = make_paged_batch([300, 5], [300, 900], 32, 8, 128, 64, torch.bfloat16, seed=4)
    static_q = batch.q.clone()
    native_attention.paged_prefill(static_q, batch.k_cache, batch.v_cache, batch.meta, 0.088)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = native_attention.paged_prefill(static_q, batch.k_cache, batch.v_cache, batch.meta, 0.088)
    static_q.copy_(torch.randn_like(static_q))
    batch.q = static_q
    graph.replay()
    _check(batch, 0.088, static_out)
