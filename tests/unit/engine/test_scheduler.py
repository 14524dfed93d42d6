from hypothesis import given, settings
from hypothesis import strategies as st

from lmdeploy_sdk.engine.block_manager import BlockManager
from lmdeploy_sdk.engine.scheduler import Scheduler
from lmdeploy_sdk.engine.sequence import Sequence


def run_step(sched: Scheduler, bm: BlockManager, next_token=7):
    """Play the runner: advance computed counts, sample for sequences that reached their end."""
    batch = sched.schedule()
    for seq, n in batch.items:
        seq.num_computed += n
        bm.register_full_blocks(seq)
        if seq.num_computed == len(seq.token_ids):
            seq.token_ids.append(next_token)
    return batch


def finish(sched, bm, seq):
    sched.remove(seq)
    bm.free(seq)


def test_long_prompt_is_split_into_budget_sized_chunks():
    bm = BlockManager(64, 4)
    sched = Scheduler(bm, max_batch_size=8, max_prefill_tokens=5)
    s = Sequence(0, list(range(12)))
    sched.add(s)
    chunks = [run_step(sched, bm).items[0][1] for _ in range(3)]
    assert chunks == [5, 5, 2]
    assert s.is_decoding


def test_decodes_ride_along_with_prefill_chunks():
    bm = BlockManager(64, 4)
    sched = Scheduler(bm, max_batch_size=8, max_prefill_tokens=4)
    a = Sequence(0, [1, 2])
    sched.add(a)
    run_step(sched, bm)
    b = Sequence(1, list(range(10)))
    sched.add(b)
    batch = run_step(sched, bm)
    assert [(s.seq_id, n) for s, n in batch.items] == [(0, 1), (1, 4)]


def test_max_batch_size_bounds_running():
    bm = BlockManager(64, 4)
    sched = Scheduler(bm, max_batch_size=2, max_prefill_tokens=100)
    seqs = [Sequence(i, [1, 2, 3]) for i in range(5)]
    for s in seqs:
        sched.add(s)
    run_step(sched, bm)
    assert len(sched.running) == 2 and len(sched.waiting) == 3


def test_newest_sequence_is_preempted_when_blocks_run_out():
    bm = BlockManager(4, 2)
    sched = Scheduler(bm, max_batch_size=8, max_prefill_tokens=100)
    a, b = Sequence(0, [1, 2, 3]), Sequence(1, [4, 5, 6])
    sched.add(a)
    sched.add(b)
    run_step(sched, bm)  # both prefilled: 2 blocks each, cache full
    assert bm.num_free_blocks == 0
    a.token_ids += [7]  # a needs a third block at its next decode
    batch = run_step(sched, bm)
    assert batch.preempted == [b]
    assert b.num_computed == 0 and sched.waiting[0] is b
    bm.check_invariants([a])


@settings(max_examples=100, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 20), min_size=1, max_size=8),
    gen=st.integers(1, 6),
    blocks=st.integers(6, 30),
    budget=st.integers(1, 16),
    batch=st.integers(1, 4),
)
def test_every_sequence_finishes_and_no_block_leaks(lengths, gen, blocks, budget, batch):
    bm = BlockManager(blocks, 2, enable_prefix_caching=True)
    sched = Scheduler(bm, max_batch_size=batch, max_prefill_tokens=budget)
    seqs = [Sequence(i, [i % 3] * n) for i, n in enumerate(lengths)]
    targets = {s.seq_id: len(s) + gen for s in seqs}
    for s in seqs:
        if targets[s.seq_id] <= blocks * 2:  # a sequence must fit the cache alone
            sched.add(s)
    for _ in range(2000):
        if not sched.has_work:
            break
        run_step(sched, bm)
        for s in list(sched.running):
            if len(s) >= targets[s.seq_id]:
                finish(sched, bm, s)
        bm.check_invariants(list(sched.running) + list(sched.waiting))
    assert not sched.has_work
    assert bm.num_free_blocks == blocks
