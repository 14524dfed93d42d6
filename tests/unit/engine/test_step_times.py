"""Step timings: which rows count as decodes, what each step's period is, how buckets split."""
from lmdeploy_sdk.engine.scheduler import ScheduledBatch
from lmdeploy_sdk.engine.sequence import Sequence
from lmdeploy_sdk.engine.step_times import StepRecord, StepTimes


def decoding(seq_id: int, context: int) -> Sequence:
    """A sequence with `context` cached tokens and its last sampled token still to feed."""
    return Sequence(seq_id, list(range(context + 1)), num_computed=context)


def test_launched_tells_decodes_from_prompt_chunks():
    prompt = Sequence(0, list(range(10)), num_computed=0)
    last_chunk = Sequence(1, list(range(10)), num_computed=9)  # one prompt token left: costs like a decode
    batch = ScheduledBatch(items=[(decoding(2, 30), 1), (prompt, 6), (decoding(3, 12), 1), (last_chunk, 1)])
    times = StepTimes()
    rec = times.launched(batch)
    assert times.records == [rec]
    assert (rec.decode_rows, rec.prefill_tokens, rec.context_tokens) == (3, 6, 30 + 12 + 9)
    assert rec.host_wait_s == 0.0 and rec.start_s > 0


def test_summary_periods_and_buckets():
    times = StepTimes()
    # (start, decode rows, prompt tokens, context, wait): a prefill step, then decodes
    # shrinking from 800 rows to 3, then a last step whose period is unknown
    steps = [(0.0, 0, 500, 0, 0.0), (0.2, 800, 0, 9000, 0.01), (0.25, 800, 0, 9800, 0.03),
             (0.31, 100, 0, 2000, 0.004), (0.32, 3, 0, 90, 0.002), (0.325, 3, 0, 93, 0.0)]
    times.records = [StepRecord(s, d, p, c, w) for s, d, p, c, w in steps]
    out = times.summary()
    assert out["steps"] == 5 and abs(out["seconds"] - 0.325) < 1e-12
    assert out["with_prompt_tokens"] == {"steps": 1, "seconds": 0.2, "gpu_seconds": None, "prompt_tokens": 500,
                                         "decode_rows_mean": 0.0}
    assert out["gpu_seconds"] is None and out["gpu_idle_seconds"] is None  # no CUDA events (CPU)
    by_rows = {b["rows"]: b for b in out["decode_only"]}
    assert list(by_rows) == ["1-7", "64-255", "768+"]  # empty buckets are left out
    big = by_rows["768+"]
    assert big["steps"] == 2 and abs(big["mean_ms"] - 55.0) < 1e-9
    assert big["mean_rows"] == 800 and big["mean_context_tokens"] == 9400
    assert abs(big["mean_host_wait_ms"] - 20.0) < 1e-9
    assert big["mean_gpu_ms"] is None and big["mean_gpu_idle_before_ms"] is None
    assert by_rows["1-7"]["steps"] == 1  # the last step has no period and is not counted
    assert abs(by_rows["64-255"]["seconds"] - 0.01) < 1e-12


def test_empty_summary():
    out = StepTimes().summary()
    assert out["steps"] == 0 and out["decode_only"] == [] and out["with_prompt_tokens"]["steps"] == 0


def test_summary_of_device_times():
    times = StepTimes()
    # (gpu seconds, idle before): the first step has no predecessor; one step missed its span
    records = [StepRecord(0.0, 800, 0, 9000, 0.01, 0.040, None), StepRecord(0.05, 800, 0, 9800, 0.0, 0.030, 0.020),
               StepRecord(0.10, 800, 0, 9900, 0.0, None, None), StepRecord(0.15, 800, 0, 9900, 0.0, 0.030, 0.0)]
    times.records = records + [StepRecord(0.2, 3, 0, 10, 0.0)]
    out = times.summary()
    assert abs(out["gpu_seconds"] - 0.100) < 1e-12 and abs(out["gpu_idle_seconds"] - 0.020) < 1e-12
    big = out["decode_only"][-1]
    assert big["steps"] == 4
    assert abs(big["mean_gpu_ms"] - 100 / 3) < 1e-9  # steps without a span are left out of the mean
    assert abs(big["mean_gpu_idle_before_ms"] - 10.0) < 1e-9
