"""Acceptance 5: the chat page in headless Chromium sends a message and shows a streamed answer.

Needs Debian's chromium (/usr/bin/chromium) and the `playwright` package (driving that
binary; no browser download). Without them the test is skipped locally but fails in CI.
The screenshot lands in $TEST_ARTIFACTS_DIR (default build/test-artifacts/).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest
from api_server_harness import running_server

from lmdeploy_sdk.server.page_proxy import create_page_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Flags for a sandboxed CI machine with no network beyond loopback.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", Path(__file__).resolve().parents[3] / "build" / "test-artifacts"))


def _playwright():
    missing = []
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("the playwright package")
    if not Path(CHROMIUM).exists():
        missing.append(f"chromium at {CHROMIUM}")
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must install {', '.join(missing)}")
        pytest.skip(f"needs {', '.join(missing)}")
    return sync_playwright


@pytest.fixture(scope="module")
def browser():
    sync_playwright = _playwright()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def _chat(page, url: str, text: str) -> str:
    """Type a message, send it, wait for the streamed answer; returns the answer's text."""
    count = page.locator(".msg.assistant").count()
    page.fill("#prompt", text)
    page.click("#send")
    page.wait_for_function(f"document.querySelectorAll('.msg.assistant:not(.streaming)').length > {count}",
                           timeout=60_000)
    return page.locator(".msg.assistant").nth(count).inner_text()


def _open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 900, "height": 700})
    page.goto(url)
    page.wait_for_function("document.getElementById('model').textContent.startsWith('model:')", timeout=30_000)
    page.click("#toggle-settings")
    page.fill("#temperature", "0")
    page.fill("#max-tokens", "12")
    page.dispatch_event("#max-tokens", "change")
    page.click("#toggle-settings")
    return page


def test_chat_page_streams_and_keeps_the_conversation(browser, server, model_name):
    page = _open_page(browser, f"{server.url}/chat")
    # count how often the answer bubble's text changes while it streams
    page.evaluate("""() => {
        window.__updates = 0;
        new MutationObserver(() => { window.__updates += 1; })
            .observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true});
    }""")
    answer = _chat(page, server.url, "Hello, who are you?")
    assert page.evaluate("window.__updates") > 3  # many small updates: it streamed
    expected = httpx.post(f"{server.url}/v1/chat/completions", timeout=30, json={
        "model": model_name, "messages": [{"role": "user", "content": "Hello, who are you?"}],
        "temperature": 0, "max_tokens": 12}).json()["choices"][0]["message"]["content"]
    assert answer == expected

    second = _chat(page, server.url, "And then?")
    history = [{"role": "user", "content": "Hello, who are you?"}, {"role": "assistant", "content": answer},
               {"role": "user", "content": "And then?"}]
    expected_second = httpx.post(f"{server.url}/v1/chat/completions", timeout=30, json={
        "model": model_name, "messages": history, "temperature": 0, "max_tokens": 12,
    }).json()["choices"][0]["message"]["content"]
    assert second == expected_second  # the page sent the whole conversation
    assert page.locator(".msg.user").count() == 2 and page.locator(".msg.error").count() == 0

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "chat_page.png"), full_page=True)

    page.reload()  # the conversation survives a reload
    page.wait_for_selector(".msg.assistant")
    assert page.locator(".msg").count() == 4
    page.click("#new-chat")
    assert page.locator(".msg").count() == 0
    page.close()


def test_page_on_its_own_in_front_of_a_server(browser, server, model_name):
    """`serve gradio URL`: the page app forwards the page's API calls to the api_server."""
    with running_server(create_page_app(server.url)) as front:
        assert httpx.get(f"{front.url}/v1/models", timeout=30).json()["data"][0]["id"] == model_name
        page = _open_page(browser, f"{front.url}/")
        page.evaluate("localStorage.clear()")
        answer = _chat(page, front.url, "Hi!")
        assert answer and page.locator(".msg.error").count() == 0
        page.close()


def test_root_is_the_docs_or_the_page(server, tiny_engine):
    from lmdeploy_sdk.server import ServerSettings, create_app

    docs = httpx.get(f"{server.url}/", follow_redirects=True, timeout=30)
    assert docs.url.path == "/docs" and "swagger" in docs.text.lower()
    with running_server(create_app(tiny_engine, ServerSettings(chat_page_at_root=True))) as s:
        page = httpx.get(f"{s.url}/", timeout=30)
        assert page.headers["content-type"].startswith("text/html") and "lmdeploy-sdk chat" in page.text
        assert httpx.get(f"{s.url}/docs/openapi.json", timeout=30).status_code == 200


def test_docs_page_renders_offline(browser, server):
    """/docs draws Swagger UI from files the package serves (it fetched them from a CDN and was
    blank offline); no request leaves the server (this machine has no network to fall back on)."""
    page = browser.new_page()
    outside: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(server.url) else outside.append(r.url))
    try:
        page.goto(f"{server.url}/docs", wait_until="networkidle")
        page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
        assert "lmdeploy-sdk API server" in page.inner_text(".swagger-ui .info .title")
        assert page.locator(".opblock").count() > 5  # the routes are listed
        assert not outside, outside
    finally:
        page.close()


def test_openapi_json_where_fastapi_servers_serve_it(server):
    ours = httpx.get(f"{server.url}/openapi.json", timeout=30)
    assert ours.status_code == 200 and ours.headers["content-type"].startswith("application/json")
    schema = ours.json()
    assert "/v1/chat/completions" in schema["paths"]
    assert schema == httpx.get(f"{server.url}/docs/openapi.json", timeout=30).json()


@pytest.fixture(scope="module")
def llava_url(tmp_path_factory, tokenizer_dir):
    """An api_server over a tiny random-weight llava (a vision-language model)."""
    from tiny_vl_models import make_tiny_vl_model

    from lmdeploy_sdk import AsyncEngine, TurbomindEngineConfig
    from lmdeploy_sdk.server import ServerSettings, create_app

    model = make_tiny_vl_model("llava", tmp_path_factory.mktemp("llava"), tokenizer_dir)
    engine = AsyncEngine(str(model), TurbomindEngineConfig(device="cpu", session_len=1024, cache_max_entry_count=64),
                         model_name="llava")
    with running_server(create_app(engine, ServerSettings())) as s:
        yield s.url
    engine.close()


def test_chat_page_sends_an_attached_image(browser, llava_url, tmp_path):
    """The Image button attaches a picture to the next message: the page sends it as an image_url
    data URL and shows it; the answer is the API's for the same picture."""
    import base64

    from tiny_vl_models import tiny_image

    picture = tmp_path / "picture.png"
    tiny_image(60).save(picture)
    page = _open_page(browser, f"{llava_url}/chat")
    page.set_input_files("#image", str(picture))
    page.wait_for_function("document.getElementById('attached').textContent.includes('picture.png')")
    answer = _chat(page, llava_url, "What is in it?")
    url = "data:image/png;base64," + base64.b64encode(picture.read_bytes()).decode()
    expected = httpx.post(f"{llava_url}/v1/chat/completions", timeout=60, json={
        "model": "llava", "temperature": 0, "max_tokens": 12, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What is in it?"}]}],
    }).json()["choices"][0]["message"]["content"]
    assert answer == expected
    assert page.locator(".msg.user img.thumb").count() == 1 and page.locator(".msg.error").count() == 0
    assert page.locator("#attached").inner_text() == ""  # the attachment went with that message only
    page.close()
