"""A small client for Loom's REST API, used by the lab, the demo and the tests.

Plain urllib so the lab has no dependency beyond the standard library; returns
(status, body) pairs instead of raising, because tests assert on error statuses.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    def ok(self) -> Any:
        if not 200 <= self.status < 300:
            raise RuntimeError(f"HTTP {self.status}: {self.body}")
        return self.body


class ApiClient:
    def __init__(self, base_url: str, token: Optional[str] = None, timeout: float = 60.0):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None,
                headers: Optional[dict[str, str]] = None) -> Response:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("X-Auth-Token", self.token)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
                status = resp.status
                got = dict(resp.headers.items())
        except urllib.error.HTTPError as err:
            raw = err.read()
            status = err.code
            got = dict(err.headers.items())
        text = raw.decode() if raw else ""
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = text
        return Response(status, parsed, got)

    def get(self, path: str) -> Response:
        return self.request("GET", path)

    def post(self, path: str, body: Any) -> Response:
        return self.request("POST", path, body)

    def put(self, path: str, body: Any) -> Response:
        return self.request("PUT", path, body)

    def delete(self, path: str) -> Response:
        return self.request("DELETE", path)

    # ---- conveniences for the lab and tests
    def create(self, kind: str, wait: bool = False, **attrs: Any) -> dict[str, Any]:
        """POST /v2.0/<kind>s {<kind>: attrs} and return the created object."""
        suffix = "?wait=true" if wait else ""
        collection = kind.replace("_", "-") + "s"  # security_group -> security-groups
        return self.post(f"/v2.0/{collection}{suffix}", {kind: attrs}).ok()[kind]

    def metric(self, name: str) -> float:
        """Sum of all samples of one Prometheus metric at /metrics."""
        req = urllib.request.Request(self.base_url + "/metrics")
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            return metric_sum(resp.read().decode(), name)


def metric_sum(text: str, name: str) -> float:
    """Sum of all samples of metric `name` in a Prometheus text exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            head, _, value = line.rpartition(" ")
            if head.split("{")[0] == name:
                total += float(value)
    return total
