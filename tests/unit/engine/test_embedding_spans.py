"""Given embeddings (images' features) in sequences: prefix-cache keys, session reuse, validation."""
from __future__ import annotations

from types import SimpleNamespace

from lmdeploy_sdk.engine.block_manager import BlockManager
from lmdeploy_sdk.engine.sequence import EmbeddingSpan, Sequence, check_spans, first_span_change


def span(start: int, end: int, key: int, hidden: int = 8) -> EmbeddingSpan:
    return EmbeddingSpan(start, end, key, SimpleNamespace(shape=(end - start, hidden)))


def with_image(key: int) -> Sequence:
    """12 tokens, an image on tokens 2..6 (the same placeholder ids whatever the image)."""
    return Sequence(seq_id=key, token_ids=[1, 2, 7, 7, 7, 7, 7, 3, 4, 5, 6, 8], embedding_spans=[span(2, 7, key)])


def prefill(bm: BlockManager, s: Sequence) -> None:
    bm.append_slots(s, s.num_uncomputed)
    s.num_computed = len(s.token_ids)
    bm.register_full_blocks(s)


def test_the_same_tokens_with_another_image_do_not_hit_the_prefix_cache():
    bm = BlockManager(16, 4, enable_prefix_caching=True)
    first = with_image(key=11)
    prefill(bm, first)
    assert bm.match_prefix(with_image(key=11)) == 8  # same image: its blocks are reused
    other = with_image(key=22)
    assert bm.match_prefix(other) == 0  # block 0 holds part of the image: another key, no hit
    text_only = Sequence(seq_id=3, token_ids=list(first.token_ids))
    assert bm.match_prefix(text_only) == 0  # placeholder ids without the image are other content


def test_the_span_keys_of_a_block_name_where_each_image_starts():
    s = with_image(key=5)
    assert s.span_keys(0, 4) == ((5, 2),) and s.span_keys(4, 8) == ((5, -2),) and s.span_keys(8, 12) == ()


def test_a_session_keeps_its_kv_up_to_the_first_changed_image():
    a, b, c = span(2, 7, 1), span(10, 12, 2), span(10, 12, 3)
    assert first_span_change([a, b], [a, b]) > 10**9  # nothing changed
    assert first_span_change([a, b], [a, c]) == 10  # the second image differs
    assert first_span_change([a], [a, b]) == 10  # a new image is appended
    assert first_span_change([a, b], [a]) == 10


def test_spans_must_fit_the_prompt_and_the_model():
    assert check_spans([span(2, 7, 1), span(7, 9, 2)], 12, 8) is None
    assert "overlaps" in check_spans([span(2, 7, 1), span(6, 9, 2)], 12, 8)
    assert "outside the prompt" in check_spans([span(10, 14, 1)], 12, 8)
    assert "expected (5, 16)" in check_spans([span(2, 7, 1)], 12, 16)
