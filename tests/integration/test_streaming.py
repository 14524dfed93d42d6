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


def test_infer_hands_over_one_result_per_request(tiny_llama, make_pipeline, monkeypatch):
    """infer folds deltas on the engine thread: one handover per request, not one per token."""
    import queue
    from types import SimpleNamespace

    from lmdeploy_sdk import sync_pipeline

    handed_over = []

    class CountingQueue(queue.Queue):
        def put(self, item, *args, **kwargs):
            handed_over.append(item[0])
            super().put(item, *args, **kwargs)

    pipe = make_pipeline(tiny_llama)
    monkeypatch.setattr(sync_pipeline, "queue", SimpleNamespace(Queue=CountingQueue))
    out = pipe(PROMPTS, gen_config=GEN)
    assert [r.generate_token_len for r in out] == [20] * 3
    assert len(handed_over) == 3 and len(set(handed_over)) == 3


def test_infer_folds_logprobs_like_the_stream(tiny_llama, make_pipeline):
    pipe = make_pipeline(tiny_llama)
    gen = GEN.replace(logprobs=2)
    streamed = {i: [] for i in range(len(PROMPTS))}
    for delta in pipe.stream_infer(PROMPTS, gen_config=gen):
        streamed[delta.index] += delta.logprobs or []
    for i, r in enumerate(pipe(PROMPTS, gen_config=gen)):
        assert len(r.logprobs) == len(r.token_ids) == 20
        assert [sorted(d) for d in r.logprobs] == [sorted(d) for d in streamed[i]]


def test_infer_keeps_samples_in_seed_order(tiny_llama, make_pipeline):
    pipe = make_pipeline(tiny_llama)
    gen = GenerationConfig(max_new_tokens=12, do_sample=True, temperature=1.0, top_k=0, random_seed=7)
    both = pipe(["sample me", "and me"], gen_config=gen.replace(n=2))
    assert [r.index for r in both] == [0, 0, 1, 1]
    # sample j of a prompt draws from seed 7 + j: the same four rows, each seeded by hand, give
    # the same tokens (the same batch: a CPU matmul of 2 rows may round unlike one of 4)
    seeded = pipe(["sample me", "sample me", "and me", "and me"],
                  gen_config=[gen.replace(random_seed=7 + j) for j in (0, 1, 0, 1)])
    assert [r.token_ids for r in both] == [r.token_ids for r in seeded]
    assert both[0].token_ids != both[1].token_ids  # the two samples differ


def test_token_id_prompts(tiny_llama, make_pipeline):
    pipe = make_pipeline(tiny_llama)
    ids = [pipe.tokenizer.encode_prompt(p, do_preprocess=True) for p in PROMPTS]
    by_text = pipe(PROMPTS, gen_config=GEN)
    by_ids = pipe(ids, gen_config=GEN)
    assert [r.token_ids for r in by_ids] == [r.token_ids for r in by_text]
    one = pipe(ids[0], gen_config=GEN)  # one list of ints is one prompt
    assert one.token_ids == by_text[0].token_ids and one.input_token_len == len(ids[0])


def test_pipeline_on_a_borrowed_model(tiny_llama, make_pipeline):
    from lmdeploy_sdk import Pipeline

    owner = make_pipeline(tiny_llama)
    borrower = Pipeline(loaded=owner._loaded)
    assert borrower("hi", max_new_tokens=2).generate_token_len == 2
    borrower.close()  # not its model to close
    assert owner("hi", max_new_tokens=2).generate_token_len == 2
