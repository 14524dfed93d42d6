"""Vision-language models on our engine give transformers' greedy tokens (issue 20, acceptance 1):
tiny random-weight llava-1.5 (CLIP + Llama), llava-interleave (SigLIP + Qwen2) and llava-next
(anyres tiling) checkpoints, one and two images, a multi-turn chat, batches mixed with text-only
prompts, prefix caching, chunked prefill through the image tokens, and preemption."""
from __future__ import annotations

import base64
import io

import pytest
from tiny_vl_models import VL_KINDS, hf_greedy, make_tiny_vl_model, tiny_image

from lmdeploy_sdk import GenerationConfig, TurbomindEngineConfig, pipeline
from lmdeploy_sdk.vl.inputs import from_text

NEW = 10
GREEDY = GenerationConfig(max_new_tokens=NEW, do_sample=False)


def user(text: str, images: int = 1) -> dict:
    return {"role": "user", "content": [{"type": "image"}] * images + [{"type": "text", "text": text}]}


def data_url(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module", params=VL_KINDS)
def vl_model(request, tmp_path_factory, tokenizer_dir):
    return make_tiny_vl_model(request.param, tmp_path_factory.mktemp(request.param), tokenizer_dir)


def make_pipe(model_dir, **engine):
    config = dict(device="cpu", session_len=2048, cache_max_entry_count=96, cache_block_seq_len=16)
    config.update(engine)
    return pipeline(str(model_dir), TurbomindEngineConfig(**config))


@pytest.fixture(scope="module")
def pipe(vl_model):
    with make_pipe(vl_model, enable_prefix_caching=True) as p:
        yield p


def test_one_image_in_every_spelling(vl_model, pipe):
    image = tiny_image(1)
    _, expected = hf_greedy(vl_model, [user("What is this?")], [image], NEW)
    assert pipe(("What is this?", image), gen_config=GREEDY).token_ids == expected  # LMDeploy's tuple
    assert pipe(prompt="What is this?", images=image, gen_config=GREEDY).token_ids == expected  # tutorials'
    assert pipe("What is this?", images=[image], gen_config=GREEDY).token_ids == expected
    parts = [{"type": "image_url", "image_url": {"url": data_url(image)}}, {"type": "text", "text": "What is this?"}]
    assert pipe([{"role": "user", "content": parts}], gen_config=GREEDY).token_ids == expected


def test_two_images(vl_model, pipe):
    images = [tiny_image(2), tiny_image(3, size=(24, 48))]
    _, expected = hf_greedy(vl_model, [user("Compare them.", images=2)], images, NEW)
    assert pipe(("Compare them.", images), gen_config=GREEDY).token_ids == expected


def test_an_image_then_more_turns_in_a_session(vl_model, pipe):
    image = tiny_image(4)
    session = pipe.chat(("Describe it.", image), gen_config=GREEDY)
    first = session.response.text
    _, expected_first = hf_greedy(vl_model, [user("Describe it.")], [image], NEW)
    assert session.response.token_ids == expected_first
    messages = [user("Describe it."), {"role": "assistant", "content": first},
                {"role": "user", "content": [{"type": "text", "text": "And the colours?"}]}]
    _, expected = hf_greedy(vl_model, messages, [image], NEW)
    session = pipe.chat("And the colours?", session=session, gen_config=GREEDY)
    assert session.response.token_ids == expected
    assert session.response.cached_tokens > 0  # the first turn's KV, image included, was kept


def test_a_batch_mixing_images_and_text(vl_model, pipe):
    a, b, c = tiny_image(5), tiny_image(6), tiny_image(7, size=(48, 24))
    outs = pipe([("One?", a), "No image here.", ("Two?", [b, c])], gen_config=GREEDY)
    assert outs[0].token_ids == hf_greedy(vl_model, [user("One?")], [a], NEW)[1]
    assert outs[1].token_ids == hf_greedy(vl_model, [{"role": "user", "content": "No image here."}], [], NEW)[1]
    assert outs[2].token_ids == hf_greedy(vl_model, [user("Two?", images=2)], [b, c], NEW)[1]


def test_the_prefix_cache_tells_images_apart(vl_model, pipe):
    a, b = tiny_image(8), tiny_image(9)
    first = pipe(("Same words.", a), gen_config=GREEDY)
    again = pipe(("Same words.", a), gen_config=GREEDY)
    assert again.token_ids == first.token_ids and again.cached_tokens >= 16
    other = pipe(("Same words.", b), gen_config=GREEDY)
    assert other.token_ids == hf_greedy(vl_model, [user("Same words.")], [b], NEW)[1]
    image_start = pipe._loaded.vision.encode(from_text("Same words.", b))[1][0].start
    assert other.cached_tokens <= image_start  # nothing from the first image's blocks


def test_chunked_prefill_cuts_through_the_image(vl_model):
    image = tiny_image(10)
    _, expected = hf_greedy(vl_model, [user("Chunks?")], [image], NEW)
    with make_pipe(vl_model, max_prefill_token_num=7) as small_chunks:
        assert small_chunks(("Chunks?", image), gen_config=GREEDY).token_ids == expected


def test_preempted_requests_recompute_their_images(vl_model):
    images = [tiny_image(20 + i) for i in range(4)]
    prompts = [(f"Picture {i}?", image) for i, image in enumerate(images)]
    cfg = GenerationConfig(max_new_tokens=40, do_sample=False, ignore_eos=True)
    expected = [hf_greedy(vl_model, [user(p)], [img], 40)[1] for p, img in prompts]
    with make_pipe(vl_model, session_len=256, cache_max_entry_count=18) as tight:  # 288 tokens of KV for 4
        outs = tight(prompts, gen_config=cfg)
        assert tight._engine.stats().preemptions_total > 0
    assert [o.token_ids for o in outs] == expected


def test_images_of_a_batch_go_through_the_tower_together(vl_model):
    """VisionConfig(max_batch_size=4): the batch's images encoded in groups give the same tokens."""
    from lmdeploy_sdk import VisionConfig

    images = [tiny_image(40 + i) for i in range(3)] + [tiny_image(43, size=(48, 24))]
    prompts = [(f"Which {i}?", image) for i, image in enumerate(images)]
    expected = [hf_greedy(vl_model, [user(p)], [img], NEW)[1] for p, img in prompts]
    config = TurbomindEngineConfig(device="cpu", session_len=2048, cache_max_entry_count=96)
    with pipeline(str(vl_model), config, vision_config=VisionConfig(max_batch_size=4)) as p:
        calls = []
        features = p._loaded.vision.encoder.features
        p._loaded.vision.encoder.features = lambda pv, sizes: calls.append(pv.shape[0]) or features(pv, sizes)
        assert [o.token_ids for o in p(prompts, gen_config=GREEDY)] == expected
    assert max(calls) > 1 and sum(calls) == 4  # several images per tower call, each image once
