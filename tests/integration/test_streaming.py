"""stream_infer: deltas tagged by prompt index add up to the batch result, without broken UTF-8."""
from __future__ import annotations

from lmdeploy_sdk import GenerationConfig

GEN = GenerationConfig(max_new_tokens=20, ignore_eos=True)
PROMPTS = ["请用中文回答：今天天气怎么样？", "Emoji party 🎉🎈", "plain ascii"]


def test_stream_deltas_add_up_to_batch_results(tiny_llama, make_pipeline):
    pipe = make_pipeline(tiny_llama)
    texts = {i: "" for i in range(len(PROMPTS))}
    ids = {i: [] for i in range(len(PROMPTS))}
    finishes = {}
    for delta in pipe.stream_infer(PROMPTS, gen_config=GEN):
        texts[delta.index] += delta.text
        ids[delta.index] += delta.token_ids
        if delta.finish_reason:
            finishes[delta.index] = delta.finish_reason
    batch = pipe(PROMPTS, gen_config=GEN)
    for i, r in enumerate(batch):
        assert texts[i] == r.text and ids[i] == r.token_ids
        assert finishes[i] == "length"
        assert r.text == pipe.tokenizer.decode(r.token_ids)


def test_stream_stops_cleanly_when_consumer_breaks(tiny_llama, make_pipeline):
    pipe = make_pipeline(tiny_llama)
    for _ in pipe.stream_infer(["a", "b"], max_new_tokens=500, ignore_eos=True):
        break
    # the aborted requests free their KV (checked by make_pipeline at teardown)
    out = pipe("after", max_new_tokens=3)
    assert out.finish_reason == "length"


def test_use_tqdm_and_single_vs_batch_shapes(tiny_llama, make_pipeline, capsys):
    pipe = make_pipeline(tiny_llama)
    one = pipe("single", max_new_tokens=2)
    assert one.index == 0 and one.generate_token_len == 2
    many = pipe(["x", "y"], max_new_tokens=2, use_tqdm=True)
    assert [r.index for r in many] == [0, 1]
    msgs = pipe([{"role": "user", "content": "hi"}], max_new_tokens=2)
    assert msgs.finish_reason == "length"
    convs = pipe([[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]], max_new_tokens=2)
    assert len(convs) == 2
