"""Acceptance 1 on the embedded SmolLM2: code written for the `openai` client against a
server runs in-process by changing only the import, and answers with the same text."""
from __future__ import annotations

import contextlib
import io

import pytest

pytestmark = pytest.mark.slow

# LMDeploy's documented client code, verbatim but for the import line and small max_tokens.
CLIENT_CODE = """
from {module} import OpenAI

client = OpenAI(api_key="YOUR_API_KEY", base_url="{url}/v1")
model_name = client.models.list().data[0].id
response = client.chat.completions.create(
    model=model_name,
    messages=[
        {{"role": "system", "content": "You are a helpful assistant."}},
        {{"role": "user", "content": "What is the capital of France?"}},
    ],
    temperature=0,
    max_tokens=24,
)
print(response.choices[0].message.content)
stream = client.chat.completions.create(
    model=model_name,
    messages=[{{"role": "user", "content": "Name two planets."}}],
    temperature=0,
    max_tokens=24,
    stream=True,
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="")
client.close()
"""


def _run(module: str, url: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(CLIENT_CODE.format(module=module, url=url), {})
    return out.getvalue()


def test_same_code_same_answers(smol_server):
    over_http = _run("openai", smol_server)
    in_process = _run("lmdeploy_sdk.integrations.openai", smol_server)  # base_url is unused in-process
    assert "Paris" in over_http
    assert in_process == over_http
