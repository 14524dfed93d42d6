"""The chat page ships everything it loads: no CDN, no external URL."""
from __future__ import annotations

import re

from lmdeploy_sdk.server.routes.service_api import CHAT_PAGE, STATIC_DIR


def test_page_assets_are_in_the_package():
    html = CHAT_PAGE.read_text(encoding="utf-8")
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert refs, "the page loads its script and stylesheet"
    for ref in refs:
        assert ref.startswith("/static/"), ref
        assert (STATIC_DIR / ref.removeprefix("/static/")).is_file(), ref


def test_no_external_urls():
    for path in STATIC_DIR.iterdir():
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"https?://", text), f"{path.name} refers to an external URL"
