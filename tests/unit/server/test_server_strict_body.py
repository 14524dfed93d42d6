"""Bodies keep their JSON types: Litestar's lax coercions ("1" -> 1, 0 -> False) are refused."""
from __future__ import annotations

import msgspec
import pytest
from litestar import Litestar, Request, post
from litestar.testing import TestClient

from lmdeploy_sdk.server.errors import EXCEPTION_HANDLERS, APIError
from lmdeploy_sdk.server.strict_body import convert_strictly, strict_body


class Body(msgspec.Struct):
    flag: bool = False
    count: int = 0
    name: str = ""


@post("/echo", status_code=200)
async def echo(request: Request) -> dict:
    body = await strict_body(request, Body)
    return msgspec.to_builtins(body)


@pytest.fixture(scope="module")
def client():
    with TestClient(Litestar([echo], exception_handlers=EXCEPTION_HANDLERS, logging_config=None)) as c:
        yield c


def test_valid_body(client):
    assert client.post("/echo", json={"flag": True, "count": 2, "name": "x"}).json() == \
        {"flag": True, "count": 2, "name": "x"}


@pytest.mark.parametrize("body, param", [
    ({"flag": 0}, "flag"), ({"count": "2"}, "count"), ({"name": 5}, "name"), ({"count": 1.5}, "count"),
])
def test_coercible_values_are_refused(client, body, param):
    resp = client.post("/echo", json=body)
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error"


def test_malformed_json(client):
    resp = client.post("/echo", content=b"{", headers={"content-type": "application/json"})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_json"


class Nested(msgspec.Struct):
    counts: list[int] = []
    inner: Body | None = None
    ratio: float = 0.0


@pytest.mark.parametrize("body, expected", [
    ({"counts": [1.0, 2, 3.0]}, Nested(counts=[1, 2, 3])),
    ({"inner": {"count": 4.0}}, Nested(inner=Body(count=4))),
    ({"ratio": 2}, Nested(ratio=2.0)),
])
def test_integral_floats_are_integers(body, expected):
    """JSON Schema's rule: 1.0 is an integer (clients that write every number as a float)."""
    assert convert_strictly(body, Nested) == expected


@pytest.mark.parametrize("body, param", [
    ({"counts": [1.5]}, "counts"), ({"inner": {"count": 1e400}}, "inner"), ({"counts": [float("nan")]}, "counts"),
])
def test_other_floats_still_fail(body, param):
    with pytest.raises(APIError) as err:
        convert_strictly(body, Nested)
    assert err.value.status == 400 and err.value.param == param
