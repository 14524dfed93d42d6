"""The engine launches step N+1 before step N's tokens reach the host; outputs must not notice."""
from __future__ import annotations

from lmdeploy_sdk import GenerationConfig

PROMPTS = ["The sea is", "Tell me a story about a cat.", "1 2 3 4", "北京是中国的首都", "Hello"]


def _configs(stop_word: str) -> list[GenerationConfig]:
    return [
        GenerationConfig(max_new_tokens=14, ignore_eos=True),
        GenerationConfig(max_new_tokens=14, stop_words=[stop_word]),  # ends mid-flight
        GenerationConfig(max_new_tokens=3, ignore_eos=True, logprobs=2, bad_token_ids=[5, 6]),  # runs ahead
        GenerationConfig(do_sample=True, temperature=0.9, top_p=0.9, random_seed=7, max_new_tokens=14,
                         ignore_eos=True, n=2),
        GenerationConfig(max_new_tokens=14, ignore_eos=True, repetition_penalty=1.3),  # waits each step
    ]


def _outputs(pipe, stop_word: str):
    res = pipe(PROMPTS, gen_config=_configs(stop_word))
    return [(r.token_ids, r.text, r.finish_reason, r.logprobs) for r in res]


def test_run_ahead_matches_waiting_for_every_step(tiny_llama, make_pipeline, monkeypatch):
    pipe = make_pipeline(tiny_llama, max_prefill_token_num=6)  # chunked prompts too
    runner = pipe._engine.runner
    fed_on_device = []
    execute = runner.execute

    def spy(batch, fill=None):
        fed_on_device.append(0 if fill is None else len(fill[1]))
        return execute(batch, fill)

    monkeypatch.setattr(runner, "execute", spy)
    probe = pipe(PROMPTS[1], max_new_tokens=14)
    stop_word = probe.text[5:9]
    ahead = _outputs(pipe, stop_word)
    assert sum(fed_on_device) > 20  # most decode inputs never visited the host first
    assert ahead[1][2] == "stop" and stop_word not in ahead[1][1]

    pipe._engine.run_ahead = False
    fed_on_device.clear()
    waiting = _outputs(pipe, stop_word)
    assert sum(fed_on_device) == 0
    assert ahead == waiting


def test_session_turn_after_a_run_ahead_stop(tiny_llama, make_pipeline):
    pipe = make_pipeline(tiny_llama)
    session = pipe.session()
    first = pipe.chat("Hi there", session=session, gen_config=GenerationConfig(max_new_tokens=10, ignore_eos=True))
    # the wasted row of the finished turn computed one more position; the next turn must still match
    again = pipe.chat("And then?", session=first, gen_config=GenerationConfig(max_new_tokens=8, ignore_eos=True))
    history = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": first.history[0][1]},
               {"role": "user", "content": "And then?"}]
    full = pipe(history, max_new_tokens=8, ignore_eos=True)
    assert again.response.token_ids == full.token_ids
    session.close()
