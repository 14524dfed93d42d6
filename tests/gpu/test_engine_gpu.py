"""End to end on a GPU: our kernels (and decode CUDA graphs) against the reference ops."""
from __future__ import annotations

import pytest
import torch

from engine_runs import GEN, PROMPTS, SHAPE, agreement, assert_scores_agree, run, scores

from lmdeploy_sdk import GenerationConfig, TurbomindEngineConfig, pipeline
from lmdeploy_sdk import native
from lmdeploy_sdk.engine.cuda_graphs import DecodeGraphs
from lmdeploy_sdk.engine.runner import DISABLE_GRAPHS_ENV

pytestmark = pytest.mark.gpu

@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "Qwen3ForCausalLM"])
def test_native_engine_agrees_with_reference_ops(arch, confident_model, monkeypatch):
    path = confident_model(arch, **(dict(head_dim=64) if arch == "Qwen3ForCausalLM" else {}))
    ref = run(path, monkeypatch, native_on=False, graphs_on=False)
    eager = run(path, monkeypatch, native_on=True, graphs_on=False)
    graphs = run(path, monkeypatch, native_on=True, graphs_on=True)
    scores = agreement(eager, ref), agreement(graphs, ref), agreement(graphs, eager)
    print(f"{arch}: native/reference {scores[0]:.3f}, graphs/reference {scores[1]:.3f}, graphs/eager {scores[2]:.3f}")
    assert min(scores) >= 0.95, scores


def test_decode_graphs_send_the_block_table_either_way(confident_model, monkeypatch):
    """Small batches send the block table padded to max_blocks in kv_lens' copy, larger
    ones only the columns in use through a second copy: the same tokens either way."""
    from lmdeploy_sdk.engine import cuda_graphs

    path = confident_model("LlamaForCausalLM")
    wide = run(path, monkeypatch, native_on=True, graphs_on=True)
    monkeypatch.setattr(cuda_graphs, "WIDE_TABLE_ENTRIES", 0)
    assert run(path, monkeypatch, native_on=True, graphs_on=True) == wide


def test_decode_graph_sizes_come_from_timed_projections(confident_model, monkeypatch):
    """Sizes past FIXED_SIZES are timed and kept only where no larger one is as cheap;
    steps padded to whichever were kept give the same tokens as eager decoding."""
    from lmdeploy_sdk.engine import graph_sizes

    monkeypatch.setattr(graph_sizes, "SWEEP_FROM", 4)  # sweep 4, 6, ..., 16 for this small batch
    monkeypatch.setattr(graph_sizes, "SWEEP_STEP", 2)
    timed = []
    measure = graph_sizes.projection_costs

    def recorded(model, sizes, device):
        costs = measure(model, sizes, device)
        timed.append(costs)
        return costs

    monkeypatch.setattr(graph_sizes, "projection_costs", recorded)
    captured = []
    capture = DecodeGraphs.capture
    monkeypatch.setattr(DecodeGraphs, "capture", lambda self: (captured.append(self.sizes), capture(self)))
    path = confident_model("LlamaForCausalLM")
    eager = run(path, monkeypatch, native_on=True, graphs_on=False)
    graphs = run(path, monkeypatch, native_on=True, graphs_on=True)
    (costs,), (sizes,) = timed, captured
    assert sorted(costs) == [4, 6, 8, 10, 12, 14, 16]
    assert all(0 < c < 1 for c in costs.values()), costs  # seconds
    assert sizes == [1, 2] + graph_sizes.cheapest_sizes(costs)
    assert agreement(graphs, eager) >= 0.95


def test_chunked_prefill_prefix_cache_and_preemption_on_gpu(confident_model, monkeypatch):
    path = confident_model("LlamaForCausalLM")
    ref = run(path, monkeypatch, native_on=False, graphs_on=False)
    busy = run(path, monkeypatch, native_on=True, graphs_on=True, enable_prefix_caching=True,
               max_prefill_token_num=48)
    score = agreement(busy, ref)
    print(f"prefix cache + chunked prefill vs reference: {score:.3f}")
    assert score >= 0.95


def test_kv_cache_is_sized_from_free_memory(tiny_model_factory):
    path = tiny_model_factory("LlamaForCausalLM", **SHAPE)
    free_before, _ = torch.cuda.mem_get_info()
    cfg = TurbomindEngineConfig(device="cuda", cache_max_entry_count=0.05, max_batch_size=4)
    with pipeline(str(path), backend_config=cfg) as pipe:
        k, _ = pipe._engine.runner.kv_caches[0]
        cache_bytes = 2 * len(pipe._engine.runner.kv_caches) * k.numel() * k.element_size()
        assert 0.03 * free_before < cache_bytes <= 0.05 * free_before
        assert pipe("hello", max_new_tokens=4).finish_reason == "length"


def test_batch_one_decode_runs_the_fused_gemv_kernels(confident_model, monkeypatch):
    """A one-sequence decode step is norm+qkv GEMV+rope+KV write, attention, o GEMV,
    norm+gate/up+SiLU GEMV and down GEMV per layer: a silent fallback to the unfused ops
    (or to cuBLAS) would still generate the right tokens, so count the launches."""
    from lmdeploy_sdk.native import driver

    path = confident_model("LlamaForCausalLM")
    monkeypatch.setenv(native.DISABLE_ENV, "0")
    monkeypatch.setenv(DISABLE_GRAPHS_ENV, "1")  # eager, so every launch goes through the driver
    native.native_available.cache_clear()
    names: list[str] = []
    real = driver.launch
    monkeypatch.setattr(driver, "launch", lambda *a, **kw: (names.append(a[2]), real(*a, **kw))[1])
    cfg = TurbomindEngineConfig(device="cuda", dtype="float16", cache_max_entry_count=64, max_batch_size=4)
    try:
        with pipeline(str(path), backend_config=cfg) as pipe:
            layers = len(pipe._engine.runner.kv_caches)
            names.clear()  # (start-up launches)
            out = pipe(PROMPTS[0], gen_config=GenerationConfig(max_new_tokens=5, ignore_eos=True),
                       do_preprocess=False)
    finally:
        native.native_available.cache_clear()
    assert len(out.token_ids) == 5
    decode_steps = 4  # the prefill samples the first token
    assert names.count("rms_norm_rope_gemv_f16_m1") >= decode_steps * layers
    assert names.count("rms_norm_gated_gemv_f16_m1") == names.count("rms_norm_rope_gemv_f16_m1")
    assert names.count("gemv_f16_m1") >= decode_steps * (2 * layers + 1)  # o, down; lm_head
    assert names.count("rope_store_kv_f16") == layers  # the prompt's step only
    assert sum(n.startswith("argmax_partial") for n in names) == decode_steps + 1  # greedy: our argmax


def test_engine_start_loads_every_kernel_module(tiny_model_factory, monkeypatch):
    """The driver compiles PTX when a module loads: that belongs to start-up, not to the
    first prompt's step (graphs off, since capturing them would load the decode modules)."""
    from lmdeploy_sdk.native import driver

    path = tiny_model_factory("LlamaForCausalLM", **SHAPE)
    monkeypatch.setenv(native.DISABLE_ENV, "0")
    monkeypatch.setenv(DISABLE_GRAPHS_ENV, "1")
    native.native_available.cache_clear()
    driver.device_kernels.cache_clear()  # a fresh loader: nothing loaded by earlier tests
    cfg = TurbomindEngineConfig(device="cuda", dtype="float16", cache_max_entry_count=64, max_batch_size=4)
    try:
        with pipeline(str(path), backend_config=cfg):
            loaded = set(driver.device_kernels(torch.cuda.current_device())._modules)
    finally:
        native.native_available.cache_clear()
    index = torch.cuda.current_device()
    assert loaded == {*native.PTX_MODULES, *(native.SM90A_PTX_MODULES if driver.device_runs_sm90a(index) else ())}


def test_step_times_measure_device_time(confident_model):
    """--step-times on CUDA: each collected step has its device time, consecutive ones the
    device's idle time between them; the device cannot be busy longer than the run."""
    from lmdeploy_sdk.engine.step_times import StepTimes

    engine_cfg = TurbomindEngineConfig(device="cuda", dtype="float16", cache_max_entry_count=512,
                                       cache_block_seq_len=16, max_batch_size=16)
    with pipeline(str(confident_model("LlamaForCausalLM")), backend_config=engine_cfg) as pipe:
        times = StepTimes()
        pipe._engine.record_step_times(times).result()
        pipe(PROMPTS, gen_config=GEN, do_preprocess=False)
        pipe._engine.record_step_times(None).result()
    gpu = [r.gpu_s for r in times.records if r.gpu_s is not None]
    idle = [r.gpu_idle_before_s for r in times.records if r.gpu_idle_before_s is not None]
    assert len(gpu) >= GEN.max_new_tokens and all(g > 0 for g in gpu)
    assert len(idle) >= len(gpu) - 2 and all(i >= 0 for i in idle)
    summary = times.summary()
    # the device may lag the host by the step in flight (run-ahead is one step deep)
    wall = times.records[-1].start_s - times.records[0].start_s + 2 * max(gpu)
    assert 0 < summary["gpu_seconds"] + summary["gpu_idle_seconds"] <= wall


@pytest.mark.parametrize("method, group", [("awq", 64), ("gptq", 128)])
def test_4bit_model_native_matches_reference_ops(method, group, confident_model, monkeypatch, tmp_path):
    """A 4-bit checkpoint on the int4 kernels against the reference ops (dequantize + matmul)
    on the same GPU, compared where rounding cannot flip a decision: the mean cross-entropy
    of fixed sequences (prompt paths: the int4 kernels up to 16 rows, dequantize + cuBLAS
    past that), and the log-probability of each greedy token while both runs still agree on
    the context (decode steps, in CUDA graphs, with prefix caching and chunked prefill).
    Greedy tokens themselves are no test here: on this tiny random model, fp16 and fp32
    references already disagree on 1 in 3 tokens of 32."""
    from quant_checkpoints import write_quantized

    path = write_quantized(confident_model("LlamaForCausalLM"), tmp_path / "q", method, group)
    ref = run(path, monkeypatch, native_on=False, graphs_on=False, use=scores)
    assert_scores_agree(run(path, monkeypatch, native_on=True, graphs_on=False, use=scores), ref)
    assert_scores_agree(run(path, monkeypatch, native_on=True, graphs_on=True, use=scores,
                            enable_prefix_caching=True, max_prefill_token_num=48), ref)
