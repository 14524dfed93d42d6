"""Acceptance: a multi-turn chat on one session equals sending the full history each
turn, while later turns prefill only their new tokens."""
from __future__ import annotations

from lmdeploy_sdk import GenerationConfig

TURNS = ["Hi there, who are you?", "Tell me a short story about a cat.", "Now make it rhyme."]
GEN = GenerationConfig(max_new_tokens=10, ignore_eos=True)


def test_three_turns_equal_full_history_and_reuse_the_cache(tiny_llama, make_pipeline):
    pipe = make_pipeline(tiny_llama)
    session = pipe.session()
    history = []
    prev_len = 0  # tokens of the previous turn's prompt and reply
    for i, text in enumerate(TURNS):
        session = pipe.chat(text, session=session, gen_config=GEN)
        resp = session.response
        history.append({"role": "user", "content": text})
        full = pipe(list(history), gen_config=GEN)  # a fresh, stateless request
        assert resp.token_ids == full.token_ids
        assert resp.text == full.text
        assert resp.input_token_len == full.input_token_len
        if i == 0:
            assert resp.cached_tokens == 0
        else:
            # everything up to the previous reply came from the session's cache
            assert resp.cached_tokens >= prev_len, (resp.cached_tokens, prev_len)
            assert resp.input_token_len - resp.cached_tokens < 40
        prev_len = resp.input_token_len + len(resp.token_ids) - 2
        history.append({"role": "assistant", "content": resp.text})
    assert [h[0] for h in session.history] == TURNS
    assert pipe._engine.stats().sessions == 1
    session.close()


def test_streamed_chat_updates_the_session(tiny_llama, make_pipeline):
    pipe = make_pipeline(tiny_llama)
    session = pipe.session()
    pieces = list(pipe.chat("Hello!", session=session, gen_config=GEN, stream_response=True))
    assert pieces[-1].finish_reason == "length"
    assert session.response.text == "".join(p.text for p in pieces)
    assert session.messages[-1] == {"role": "assistant", "content": session.response.text}
    second = pipe.chat("And again?", session=session, gen_config=GEN)
    assert second.response.cached_tokens > 0
    session.close()


def test_session_kv_is_recomputed_after_eviction(tiny_llama, make_pipeline):
    """Idle sessions give their KV up under memory pressure and still answer correctly."""
    pipe = make_pipeline(tiny_llama, cache_max_entry_count=40)
    s1 = pipe.chat("First conversation, first turn.", gen_config=GEN)
    # fill the cache with other work so s1's idle KV is evicted
    pipe(["filler text number %d " % i * 4 for i in range(6)], gen_config=GEN)
    again = pipe.chat("Second turn.", session=s1, gen_config=GEN)
    full = pipe(again.messages[:-1], gen_config=GEN)
    assert again.response.token_ids == full.token_ids
    s1.close()


def test_closed_session_frees_its_blocks(tiny_llama, make_pipeline):
    pipe = make_pipeline(tiny_llama)
    before = pipe._engine.stats().blocks_free
    session = pipe.chat("Keep this in the cache", gen_config=GEN)
    assert pipe._engine.call(lambda e: e.stats()).result().blocks_free < before
    session.close()
    assert pipe._engine.call(lambda e: e.stats()).result().blocks_free == before


def test_turns_ended_by_stop_words_keep_the_session_exact(tiny_llama, make_pipeline):
    """A stop string is found after the next step was launched; that step's extra token must not leak."""
    pipe = make_pipeline(tiny_llama)
    probe = pipe([{"role": "user", "content": TURNS[0]}], gen_config=GEN)
    stop = probe.text[4:8]  # ends the first reply mid-way
    gen = GEN.replace(stop_words=[stop])
    session = pipe.session()
    history = []
    for text in TURNS:
        session = pipe.chat(text, session=session, gen_config=gen)
        history.append({"role": "user", "content": text})
        full = pipe(list(history), gen_config=gen)
        assert session.response.text == full.text and session.response.token_ids == full.token_ids
        history.append({"role": "assistant", "content": session.response.text})
    first = session.history[0][1]
    assert stop not in first and probe.text.startswith(first)
    # in a batch, the request that stops early leaves the others' tokens untouched
    solo = pipe("Another prompt entirely", gen_config=GEN)
    both = pipe([[{"role": "user", "content": TURNS[0]}], "Another prompt entirely"],
                gen_config=[gen, GEN], do_preprocess=True)
    assert both[0].finish_reason == "stop" and both[1].token_ids == solo.token_ids
    session.close()
