from hypothesis import given, settings
from hypothesis import strategies as st
import pytest

from lmdeploy_sdk.engine.block_manager import BlockManager, OutOfBlocks
from lmdeploy_sdk.engine.sequence import Sequence


def seq(tokens, sid=0):
    return Sequence(seq_id=sid, token_ids=list(tokens))


def compute(bm, s, n):
    """What the runner does: allocate, 'write', advance, register."""
    copies = bm.append_slots(s, n)
    s.num_computed += n
    bm.register_full_blocks(s)
    return copies


def test_allocate_and_free_returns_every_block():
    bm = BlockManager(8, 4)
    s = seq(range(10))
    compute(bm, s, 10)
    assert len(s.block_table) == 3 and bm.num_free_blocks == 5
    bm.check_invariants([s])
    bm.free(s)
    assert bm.num_free_blocks == 8
    bm.check_invariants([])


def test_out_of_blocks_is_refused_not_corrupting():
    bm = BlockManager(2, 4)
    s = seq(range(12))
    assert not bm.can_append(s, 12)
    with pytest.raises(OutOfBlocks):
        bm.append_slots(s, 12)
    bm.check_invariants([s])


def test_prefix_cache_shares_full_blocks_and_leaves_a_token_to_compute():
    bm = BlockManager(16, 4, enable_prefix_caching=True)
    a = seq(range(12))
    compute(bm, a, 12)
    b = seq(list(range(8)) + [99, 98, 97])
    assert bm.match_prefix(b) == 8
    assert b.block_table == a.block_table[:2]
    compute(bm, b, b.num_uncomputed)
    bm.check_invariants([a, b])
    # an identical prompt reuses all but the block holding its last token
    c = seq(range(12))
    assert bm.match_prefix(c) == 8
    bm.free(a)
    bm.free(b)
    bm.check_invariants([c])
    bm.free(c)
    bm.check_invariants([])
    assert bm.num_free_blocks == 16


def test_freed_cached_blocks_are_reused_after_release():
    bm = BlockManager(16, 4, enable_prefix_caching=True)
    a = seq(range(9))
    compute(bm, a, 9)
    first = list(a.block_table[:2])
    bm.free(a)
    b = seq(range(9))
    assert bm.match_prefix(b) == 8
    assert b.block_table == first


def test_eviction_prefers_unhashed_blocks_and_drops_stale_hashes():
    bm = BlockManager(3, 2, enable_prefix_caching=True)
    a = seq([1, 2, 3, 4, 5])
    compute(bm, a, 5)  # blocks: [1,2] [3,4] hashed, [5] plain
    bm.free(a)
    b = seq([7, 8, 9, 10, 11])
    compute(bm, b, 5)  # needs all 3 blocks: evicts both hashed ones
    c = seq([1, 2, 3, 4, 6])
    assert bm.match_prefix(c) == 0
    bm.check_invariants([b, c])


def test_fork_then_write_copies_on_write():
    bm = BlockManager(8, 4)
    parent = seq(range(6))
    compute(bm, parent, 6)
    child = seq(range(6), sid=1)
    bm.fork(parent, child)
    bm.check_invariants([parent, child])
    child.token_ids.append(42)
    copies = compute(bm, child, 1)
    assert copies == [(parent.block_table[1], child.block_table[1])]
    assert child.block_table[0] == parent.block_table[0]
    bm.check_invariants([parent, child])


def test_truncate_keeps_prefix_and_unregisters_rewritten_block():
    bm = BlockManager(8, 4, enable_prefix_caching=True)
    a = seq(range(12))
    compute(bm, a, 12)
    bm.truncate(a, 6)
    assert a.num_computed == 6 and len(a.block_table) == 2 and len(a.block_hashes) == 1
    a.token_ids = list(range(6)) + [50, 51, 52]
    compute(bm, a, 3)
    # the block that held tokens 4..7 was rewritten: a new prompt must not match it
    b = seq(range(12))
    assert bm.match_prefix(b) == 4
    bm.check_invariants([a, b])


ops = st.lists(
    st.tuples(st.sampled_from(["new", "extend", "free", "truncate", "fork", "match"]),
              st.integers(0, 7), st.integers(1, 9)),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops=ops, caching=st.booleans())
def test_random_operation_sequences_keep_invariants(ops, caching):
    """Any sequence of operations leaves consistent ref counts and no leaked block."""
    bm = BlockManager(12, 3, enable_prefix_caching=caching)
    live: list[Sequence] = []
    next_id = 0
    for op, pick, n in ops:
        target = live[pick % len(live)] if live else None
        if op == "new" or target is None:
            s = seq([(next_id * 7 + i) % 5 for i in range(n)], next_id)
            next_id += 1
            if bm.can_append(s, n):
                compute(bm, s, n)
                live.append(s)
        elif op == "extend":
            target.token_ids += [pick % 3] * n
            k = target.num_uncomputed
            if bm.can_append(target, k):
                compute(bm, target, k)
            else:
                del target.token_ids[target.num_computed:]
        elif op == "free":
            bm.free(target)
            live.remove(target)
        elif op == "truncate":
            bm.truncate(target, n)
            del target.token_ids[target.num_computed:]
        elif op == "fork":
            child = seq(target.token_ids[: target.num_computed], next_id)
            next_id += 1
            bm.fork(target, child)
            live.append(child)
        elif op == "match":
            s = seq([(pick + i) % 5 for i in range(n + 3)], next_id)
            next_id += 1
            bm.match_prefix(s)
            live.append(s)
        bm.check_invariants(live)
    for s in live:
        bm.free(s)
    bm.check_invariants([])
    assert bm.num_free_blocks == bm.num_blocks
