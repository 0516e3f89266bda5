"""Errors waitress answers itself leave in Neutron's shape, with the right status.

Raw bytes to a real server (the real app over a real ovsdb-server): these requests
never reach the app, so only the server can answer them.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from api_harness import ADMIN, Env, start_env

from controller.rest.limits import (
    MAX_BODY_BYTES,
    MAX_REQUEST_HEADER_BYTES,
    MAX_REQUEST_LINE_BYTES,
)
from controller.rest.server import Serving, serve


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    e = start_env(tmp_path_factory.mktemp("errors") / "state", tokens=True)
    yield e
    e.close()


@pytest.fixture(scope="module")
def served(env: Env) -> Iterator[Serving]:
    serving = serve(env.app, "127.0.0.1", 0)
    yield serving
    serving.close()


def _exchange(port: int, raw: bytes) -> http.client.HTTPResponse:
    """Send `raw` as is; the answer, read whole (the server may stop reading early)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        try:
            sock.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered and closed before all of it was sent
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        resp.body = resp.read()  # type: ignore[attr-defined]
        return resp
    finally:
        sock.close()


def _neutron_error(resp: http.client.HTTPResponse, status: int, type_: str) -> dict[str, Any]:
    body = resp.body  # type: ignore[attr-defined]
    assert resp.status == status, (resp.status, body)
    assert resp.getheader("Content-Type", "").startswith("application/json"), resp.headers
    error = json.loads(body)["NeutronError"]
    assert set(error) == {"type", "message", "detail"}, error
    assert error["type"] == type_, error
    assert error["message"]
    assert resp.getheader("Connection") == "close"
    return error  # type: ignore[no-any-return]


def _post(path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in {"X-Auth-Token": ADMIN, **headers}.items())
    return f"POST {path} HTTP/1.1\r\nHost: loom\r\n{head}\r\n".encode() + body


def _chunked(payload: bytes, size: int = 16384) -> bytes:
    chunks = [payload[i:i + size] for i in range(0, len(payload), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


def test_a_request_line_too_long_is_414(served: Serving) -> None:
    path = "/v2.0/networks?name=" + "a" * MAX_REQUEST_LINE_BYTES
    resp = _exchange(served.port, f"GET {path} HTTP/1.1\r\nHost: loom\r\n\r\n".encode())
    error = _neutron_error(resp, 414, "HTTPRequestURITooLong")
    assert str(MAX_REQUEST_LINE_BYTES) in error["message"]


def test_a_request_line_trickled_past_the_limit_is_414(served: Serving) -> None:
    """The line is judged as it arrives, not only once it ends."""
    sock = socket.create_connection(("127.0.0.1", served.port), timeout=10)
    try:
        sock.sendall(b"GET /v2.0/networks?name=")
        for _ in range(MAX_REQUEST_LINE_BYTES // 1024 + 1):
            sock.sendall(b"a" * 1024)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        resp.body = resp.read()  # type: ignore[attr-defined]
    finally:
        sock.close()
    _neutron_error(resp, 414, "HTTPRequestURITooLong")


def test_a_request_line_at_the_limit_is_served(served: Serving) -> None:
    prefix, suffix = "GET /v2.0/networks?name=", " HTTP/1.1"
    name = "a" * (MAX_REQUEST_LINE_BYTES - len(prefix) - len(suffix))
    raw = f"{prefix}{name}{suffix}\r\nHost: loom\r\nX-Auth-Token: {ADMIN}\r\n\r\n".encode()
    resp = _exchange(served.port, raw)
    assert resp.status == 200, resp.body  # type: ignore[attr-defined]


def test_headers_too_large_are_431(served: Serving) -> None:
    filler = "".join(f"X-Filler-{i}: {'b' * 4000}\r\n" for i in range(10))
    raw = f"GET /v1/health HTTP/1.1\r\nHost: loom\r\n{filler}\r\n".encode()
    assert len(raw) > MAX_REQUEST_HEADER_BYTES
    error = _neutron_error(_exchange(served.port, raw), 431, "HTTPRequestHeaderFieldsTooLarge")
    assert str(MAX_REQUEST_HEADER_BYTES) in error["message"]


def test_a_16k_header_line_like_neutrons_limit_is_served(served: Serving) -> None:
    raw = (f"GET /v1/health HTTP/1.1\r\nHost: loom\r\nX-Auth-Token: {ADMIN}\r\n"
           f"X-Big: {'c' * 16000}\r\n\r\n").encode()
    resp = _exchange(served.port, raw)
    assert resp.status == 200, resp.body  # type: ignore[attr-defined]


def test_a_declared_body_too_large_is_413_before_it_is_sent(served: Serving) -> None:
    raw = _post("/v2.0/networks", {"Content-Type": "application/json",
                                   "Content-Length": str(MAX_BODY_BYTES + 1)})
    error = _neutron_error(_exchange(served.port, raw), 413, "RequestEntityTooLarge")
    assert error["message"] == "Request is too large."  # as the app's own 413
    assert error["detail"] == (f"The body is {MAX_BODY_BYTES + 1} bytes; at most "
                               f"{MAX_BODY_BYTES} bytes are accepted.")


def test_a_chunked_body_too_large_is_413(served: Serving) -> None:
    body = _chunked(b"x" * (MAX_BODY_BYTES + 1024))
    raw = _post("/v2.0/networks", {"Content-Type": "application/json",
                                   "Transfer-Encoding": "chunked"}, body)
    error = _neutron_error(_exchange(served.port, raw), 413, "RequestEntityTooLarge")
    assert str(MAX_BODY_BYTES) in error["detail"]


def test_a_body_of_exactly_the_limit_reaches_the_app(served: Serving) -> None:
    """Neutron's limit is inclusive (oslo sizelimit refuses only more than 114688)."""
    payload = json.dumps({"network": {"name": "n", "description": ""}})
    payload = payload.replace('""', '"' + " " * (MAX_BODY_BYTES - len(payload)) + '"')
    assert len(payload) == MAX_BODY_BYTES
    raw = _post("/v2.0/networks", {"Content-Type": "application/json",
                                   "Content-Length": str(len(payload))}, payload.encode())
    resp = _exchange(served.port, raw)
    assert resp.status != 413, resp.body  # type: ignore[attr-defined]


@pytest.mark.parametrize("body,why", [
    (b"zz\r\nxx\r\n0\r\n\r\n", "Invalid chunk size"),
    (b"2\r\nxxx\r\n0\r\n\r\n", "Chunk not properly terminated"),
])
def test_malformed_chunked_bodies_are_400(served: Serving, body: bytes, why: str) -> None:
    raw = _post("/v2.0/networks", {"Transfer-Encoding": "chunked"}, body)
    error = _neutron_error(_exchange(served.port, raw), 400, "HTTPBadRequest")
    assert why in error["message"]


@pytest.mark.parametrize("raw", [
    b"GET /v1/health HTTP/1.1\r\nHost: loom\r\nContent-Length: ten\r\n\r\n",
    b"GET /v1/health HTTP/1.1\r\n folded first line\r\nHost: loom\r\n\r\n",
    b"GET /v1/health HTTP/1.1\r\nHost: loom\r\nno colon here\r\n\r\n",
    b"get /v1/health HTTP/1.1\r\nHost: loom\r\n\r\n",
    b"GET /v1/health HTTP/1.1\r\nHost: loom\rX: y\r\n\r\n",
])
def test_malformed_requests_are_400(served: Serving, raw: bytes) -> None:
    _neutron_error(_exchange(served.port, raw), 400, "HTTPBadRequest")


def test_an_unsupported_transfer_coding_is_501(served: Serving) -> None:
    raw = _post("/v2.0/networks", {"Transfer-Encoding": "gzip"})
    _neutron_error(_exchange(served.port, raw), 501, "HTTPNotImplemented")


def _raising_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    raise RuntimeError("secret detail that must not leak")


def test_an_exception_escaping_the_app_is_500_without_its_text() -> None:
    serving = serve(_raising_app, "127.0.0.1", 0)
    try:
        resp = _exchange(serving.port, b"GET / HTTP/1.1\r\nHost: loom\r\n\r\n")
    finally:
        serving.close()
    error = _neutron_error(resp, 500, "HTTPInternalServerError")
    assert "secret" not in resp.body.decode()  # type: ignore[attr-defined]
    assert "internal server error" in error["message"]


def test_a_good_request_after_the_errors_is_served(served: Serving) -> None:
    raw = _post("/v2.0/networks", {"Content-Type": "application/json", "Content-Length": "29"},
                b'{"network": {"name": "fine"}}')
    resp = _exchange(served.port, raw)
    assert resp.status == 201, resp.body  # type: ignore[attr-defined]
