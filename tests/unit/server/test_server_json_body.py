"""The body checks alone: which content types are JSON, and finding the field that nests too deeply."""
from __future__ import annotations

import pytest

from lmdeploy_sdk.server.json_body import deep_field, is_json_media_type


@pytest.mark.parametrize("content_type, ok", [
    ("application/json", True), ("Application/JSON; charset=utf-8", True), ("application/vnd.api+json", True),
    ("text/plain", False), ("text/plain; charset=utf-8", False), ("application/x-www-form-urlencoded", False),
    ("multipart/form-data; boundary=x", False), ("", False), (None, False), ("text/json+html", False),
])
def test_json_media_types(content_type, ok):
    assert is_json_media_type(content_type) is ok


@pytest.mark.parametrize("body, field", [
    (b'{"a": 1, "x": ' + b"[" * 300 + b"]" * 300 + b"}", "x"),
    (b'{"a": "[[[[", "b": {"c": "x"}, "deep": ' + b'{"k": ' * 300 + b"1" + b"}" * 300 + b"}", "deep"),
    (b'{"a\\"b": ' + b"[" * 300 + b"]" * 300 + b"}", 'a"b'),  # escapes in the key
    (b'{"s": "' + b"[" * 1000 + b'", "t": ' + b"[" * 300 + b"]" * 300 + b"}", "t"),  # brackets in strings
    (b"[" * 300 + b"]" * 300, None),  # the body itself
    (b'{"a": [[1]]}', None),  # nothing too deep
])
def test_deep_field(body, field):
    assert deep_field(body) == field
