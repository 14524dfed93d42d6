"""Images through the server, the OpenAI shim and LMDeployChat (issue 20, acceptance 2), and the
400s for bad image input, with a tiny random-weight llava: the answers equal transformers' greedy
tokens, and a bad part never disturbs the other requests."""
from __future__ import annotations

import base64
import io
from types import SimpleNamespace

import httpx
import openai
import pytest
from langchain_core.messages import HumanMessage
from langchain_tests.integration_tests import ChatModelIntegrationTests
from tiny_vl_models import hf_greedy, make_tiny_vl_model, tiny_image

from lmdeploy_sdk import TurbomindEngineConfig, pipeline
from lmdeploy_sdk.integrations.langchain import LMDeployChat
from lmdeploy_sdk.integrations.openai import OpenAI as InProcessOpenAI

pytestmark = pytest.mark.slow
NEW = 8


def png_data_url(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def image_message(image, text: str = "What is in the picture?") -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": png_data_url(image)}},
                                         {"type": "text", "text": text}]}]


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory, tokenizer_dir):
    return make_tiny_vl_model("llava", tmp_path_factory.mktemp("llava"), tokenizer_dir)


@pytest.fixture(scope="module")
def llava_pipe(llava_dir, small_engine):
    with pipeline(str(llava_dir), backend_config=TurbomindEngineConfig(**small_engine), model_name="llava") as p:
        yield p


@pytest.fixture(scope="module")
def llava_server(llava_pipe, serve_pipeline):
    with serve_pipeline(llava_pipe) as url:
        yield url


def expected(llava_dir, image, text: str = "What is in the picture?") -> list[int]:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    return hf_greedy(llava_dir, messages, [image], NEW)[1]


def test_the_server_answers_base64_image_url_parts(llava_dir, llava_server, llava_pipe):
    image = tiny_image(31)
    client = openai.OpenAI(base_url=f"{llava_server}/v1", api_key="none", max_retries=0)
    reply = client.chat.completions.create(model="llava", messages=image_message(image), max_tokens=NEW,
                                           temperature=0)
    want = expected(llava_dir, image)
    assert reply.usage.completion_tokens == len(want)
    text = llava_pipe.tokenizer.decode(want)
    assert reply.choices[0].message.content == text
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="llava", messages=image_message(image), max_tokens=NEW, temperature=0, stream=True) if c.choices)
    assert streamed == text


def test_the_shim_answers_images_in_process(llava_dir, llava_pipe):
    image = tiny_image(32)
    client = InProcessOpenAI(pipeline=llava_pipe)
    reply = client.chat.completions.create(model="llava", messages=image_message(image), max_tokens=NEW,
                                           temperature=0)
    assert reply.choices[0].message.content == llava_pipe.tokenizer.decode(expected(llava_dir, image))


def test_lmdeploy_chat_takes_langchain_image_blocks(llava_dir, llava_pipe, llava_server):
    image = tiny_image(33)
    data = png_data_url(image).split(",", 1)[1]
    message = HumanMessage(content=[{"type": "image", "base64": data, "mime_type": "image/png"},
                                    {"type": "text", "text": "What is in the picture?"}])
    want = llava_pipe.tokenizer.decode(expected(llava_dir, image))
    for params in ({"pipeline": llava_pipe}, {"base_url": llava_server, "api_key": "none"}):
        chat = LMDeployChat(max_tokens=NEW, temperature=0, **params)
        try:
            assert chat.invoke([message]).content == want
        finally:
            chat.close()


@pytest.mark.parametrize("test", ["test_image_inputs", "test_image_tool_message"])
@pytest.mark.parametrize("where", ["in_process", "remote"])
def test_langchains_standard_image_input_tests(test, where, llava_pipe, llava_server, monkeypatch, anyio_backend):
    """langchain-tests' own image tests, run as written; the picture they download comes from
    here (no network)."""
    picture = io.BytesIO()
    tiny_image(34, size=(64, 48)).save(picture, format="PNG")
    monkeypatch.setattr(httpx, "get", lambda *a, **k: SimpleNamespace(content=picture.getvalue(), status_code=200))
    params = {"pipeline": llava_pipe} if where == "in_process" else {"base_url": llava_server, "api_key": "none"}
    suite = SimpleNamespace(supports_image_inputs=True, supports_image_urls=False, supports_image_tool_message=True)
    chat = LMDeployChat(max_tokens=NEW, temperature=0, **params)
    try:
        getattr(ChatModelIntegrationTests, test)(suite, chat)
    finally:
        chat.close()


@pytest.mark.parametrize("url, status, code, param", [
    ("data:image/png;base64,bm90IGFuIGltYWdl", 400, "invalid_image", "messages"),
    ("data:image/png;base64,@@@", 400, "invalid_image", "messages"),
    ("/etc/passwd", 400, "invalid_image_url", "messages[0].content[0].image_url"),
    ("file:///etc/passwd", 400, "invalid_image_url", "messages[0].content[0].image_url"),
])
def test_bad_images_are_a_400_naming_the_part(url, status, code, param, llava_server, llava_dir):
    body = {"model": "llava", "max_tokens": 4, "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "?"}]}]}
    with httpx.Client(base_url=llava_server, timeout=60) as http:
        bad = http.post("/v1/chat/completions", json=body)
        assert bad.status_code == status, bad.text
        error = bad.json()["error"]
        assert (error["code"], error["param"]) == (code, param), error
        good = http.post("/v1/chat/completions", json={"model": "llava", "max_tokens": 4, "temperature": 0,
                                                        "messages": image_message(tiny_image(35))})
        assert good.status_code == 200  # the next request is unaffected


def test_a_text_only_model_refuses_images(tiny_server):
    body = {"model": "tiny-llama", "max_tokens": 4, "messages": image_message(tiny_image(36))}
    r = httpx.post(f"{tiny_server}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "image_input_not_supported" and error["param"] == "messages[0].content[0]"
    assert "text-only" in error["message"]


def test_too_many_images_are_refused_before_the_tower_runs(llava_server, llava_pipe):
    """Images count toward session_len; a prompt over it is a 400 without encoding any image."""
    encoder = llava_pipe._loaded.vision.encoder
    calls = []
    features = encoder.features
    encoder.features = lambda pv, sizes: calls.append(1) or features(pv, sizes)
    try:
        count = llava_pipe.session_len // 25 + 1  # the tiny llava gives 25 tokens per image
        parts = [{"type": "image_url", "image_url": {"url": png_data_url(tiny_image(50))}}] * count
        body = {"model": "llava", "max_tokens": 4, "messages": [{"role": "user", "content": parts}]}
        r = httpx.post(f"{llava_server}/v1/chat/completions", json=body, timeout=60)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "context_length_exceeded" and f"its {count} image(s)" in error["message"]
        out = llava_pipe(("Too many?", [tiny_image(51)] * count))
        assert out.finish_reason == "error" and "more than session_len" in out.text + str(out.error_message)
        assert not calls
    finally:
        encoder.features = features


def test_interactive_sessions_keep_an_image(llava_dir, llava_server, llava_pipe):
    """/v1/chat/interactive: an image in the first turn; the second turn reuses its KV and gives
    transformers' answer to the whole conversation."""
    image = tiny_image(52)
    first_turn = image_message(image, "Describe it.")
    with httpx.Client(base_url=llava_server, timeout=60) as http:
        turn = {"session_id": 77, "interactive_mode": True, "request_output_len": NEW, "temperature": 0}
        one = http.post("/v1/chat/interactive", json={**turn, "prompt": first_turn})
        assert one.status_code == 200, one.text
        assert one.json()["text"] == llava_pipe.tokenizer.decode(expected(llava_dir, image, "Describe it."))
        two = http.post("/v1/chat/interactive", json={**turn, "prompt": "And then?"})
        assert two.status_code == 200 and two.json()["history_tokens"] > 0
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe it."}]},
                    {"role": "assistant", "content": one.json()["text"]},
                    {"role": "user", "content": "And then?"}]
        assert two.json()["text"] == llava_pipe.tokenizer.decode(hf_greedy(llava_dir, messages, [image], NEW)[1])
        http.post("/v1/chat/interactive", json={"session_id": 77, "prompt": ""})  # end it


def test_interactive_on_a_text_only_model_refuses_images(tiny_server):
    r = httpx.post(f"{tiny_server}/v1/chat/interactive", timeout=60, json={
        "prompt": image_message(tiny_image(53)), "interactive_mode": True, "request_output_len": 4})
    assert r.status_code == 400
    error = r.json()["error"]
    assert (error["code"], error["param"]) == ("image_input_not_supported", "prompt[0].content[0]")
