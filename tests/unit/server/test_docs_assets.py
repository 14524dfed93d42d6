"""/docs draws on the packaged Swagger UI files; without swagger-ui-py the server still starts
and /docs falls back to Litestar's CDN page (with a warning)."""
from __future__ import annotations

import logging

from litestar.testing import TestClient

from lmdeploy_sdk.server import create_app
from lmdeploy_sdk.server.routes import service_api


class _NoEngine:
    """create_app wants an engine; /docs and its assets never touch it."""

    def close(self) -> None:
        pass


def _docs_html(app) -> tuple[str, TestClient]:
    client = TestClient(app)
    return client.get("/docs").text, client


def test_docs_use_the_packaged_files():
    assert service_api.swagger_ui_dir() is not None, "swagger-ui-py is a serve dependency"
    html, client = _docs_html(create_app(lambda: _NoEngine()))
    assert "cdn" not in html.lower()
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "swagger-ui-standalone-preset.js", "favicon-32x32.png"):
        assert f"{service_api.SWAGGER_UI_ASSETS}/{asset}" in html
        assert client.get(f"{service_api.SWAGGER_UI_ASSETS}/{asset}").status_code == 200


def test_without_swagger_ui_py_the_server_still_starts(monkeypatch, caplog):
    monkeypatch.setattr(service_api, "swagger_ui_dir", lambda: None)
    with caplog.at_level(logging.WARNING, logger="lmdeploy_sdk.server"):
        app = create_app(lambda: _NoEngine())
    assert "swagger-ui-py is not installed" in caplog.text
    html, _ = _docs_html(app)
    assert "cdn.jsdelivr.net" in html
