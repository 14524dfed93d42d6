"""Any split of an output streams to the same content and calls as parsing it whole."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmdeploy_sdk.tools import FORMATS, split_calls

CALL = '{"name": "get_weather", "arguments": {"city": "Pa}ris\\"["}}'
CALL_P = '{"name": "f", "parameters": {}}'
FRAGMENTS = [
    "<tool_call>", "</tool_call>", "<tool", "call>", "\n", " ", "  ", "hi", "é", "{", "}", "[", "]", '"', "\\", ";",
    "<|python_tag|>", "<|py", "[TOOL_CALLS]", "[TOOL", "<|action_start|><|plugin|>", "<|action_end|>",
    "<|action_start|>", "<|plugin|>", CALL, CALL_P, f"[{CALL}, {CALL_P}]", '{"name": 1}', "not json", '"a}b"',
    f"<tool_call>\n{CALL}\n</tool_call>", f"[TOOL_CALLS] [{CALL}]", f"<|action_start|><|plugin|>\n{CALL_P}",
]
texts = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=3)), max_size=12).map("".join)
fast = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def key(content: str, calls: list) -> tuple[str, list[tuple[str, str]]]:
    return content, [(c.name, c.arguments) for c in calls]


def streamed(fmt, chunks: list[str]) -> tuple[str, list[tuple[str, str]]]:
    parser = fmt.parser()
    content, calls = [], []
    for chunk in chunks:
        c, found = parser.feed(chunk)
        content.append(c)
        calls.extend(found)
    c, found = parser.flush()
    return key("".join(content) + c, calls + found)


@pytest.mark.parametrize("name", list(FORMATS))
@fast
@given(text=texts)
def test_every_cut_point_and_char_by_char_match_the_whole_text(name, text):
    fmt = FORMATS[name]()
    whole = key(*split_calls(fmt, text))
    for i in range(len(text) + 1):
        assert streamed(fmt, [text[:i], text[i:]]) == whole, (text, i)
    assert streamed(fmt, list(text)) == whole


@pytest.mark.parametrize("name", list(FORMATS))
@fast
@given(text=texts, data=st.data())
def test_random_splits_match_the_whole_text(name, text, data):
    fmt = FORMATS[name]()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=6)))
    chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    assert streamed(fmt, chunks) == key(*split_calls(fmt, text))


@pytest.mark.parametrize("name", list(FORMATS))
@fast
@given(text=st.one_of(texts, st.text()))
def test_model_output_never_raises_and_text_without_calls_is_kept(name, text):
    content, calls = split_calls(FORMATS[name](), text)
    if not calls:
        assert content == text
    for c in calls:
        assert isinstance(json.loads(c.arguments), dict) and c.name


def test_the_fragments_do_produce_calls_in_every_format():
    """Guards the strategies above: they must exercise calls, not only text."""
    samples = {
        "hermes": f"a<tool_call>\n{CALL}\n</tool_call>b", "llama3_json": f"<|python_tag|>{CALL_P};{CALL}",
        "mistral": f"[TOOL_CALLS] [{CALL}, {CALL_P}]", "internlm2": f"<|action_start|><|plugin|>\n{CALL_P}",
    }
    for name, text in samples.items():
        fmt = FORMATS[name]()
        assert split_calls(fmt, text)[1], name
        assert streamed(fmt, list(text)) == key(*split_calls(fmt, text))
