"""Neutron-shaped API errors: every failure leaves as {"NeutronError": {type, message, detail}}.

Clients (openstacksdk, the `openstack` CLI, gophercloud) key on the status code and
show the message; Neutron's type names are kept so scripts written against Neutron
can match on them.
"""

from __future__ import annotations

import json
from typing import Optional

from webob import Response


class NeutronError(Exception):
    status = 500
    type = "HTTPInternalServerError"

    def __init__(
        self,
        message: str,
        *,
        type: Optional[str] = None,
        status: Optional[int] = None,
        detail: str = "",
        headers: Optional[dict[str, str]] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if type is not None:
            self.type = type
        if status is not None:
            self.status = status
        self.detail = detail
        self.headers = headers or {}

    def response(self) -> Response:
        body = {"NeutronError": {"type": self.type, "message": self.message, "detail": self.detail}}
        resp = Response(
            status=self.status,
            content_type="application/json",
            charset="utf-8",
            body=json.dumps(body).encode(),
        )
        for name, value in self.headers.items():
            resp.headers[name] = value
        return resp


class BadRequest(NeutronError):
    status, type = 400, "HTTPBadRequest"


class InvalidInput(BadRequest):
    type = "InvalidInput"

    def __init__(self, message: str, **kw: object) -> None:
        super().__init__(f"Invalid input for operation: {message}", **kw)  # type: ignore[arg-type]


class Unauthorized(NeutronError):
    status, type = 401, "HTTPUnauthorized"


class PolicyNotAuthorized(NeutronError):
    status, type = 403, "PolicyNotAuthorized"

    def __init__(self, action: str) -> None:
        super().__init__(f"rule:{action} is disallowed by policy")


class NotFound(NeutronError):
    status, type = 404, "HTTPNotFound"


class MethodNotAllowed(NeutronError):
    status, type = 405, "HTTPMethodNotAllowed"


class Conflict(NeutronError):
    status, type = 409, "Conflict"


class ServiceUnavailable(NeutronError):
    status, type = 503, "ServiceUnavailable"


class WaitTimeout(NeutronError):
    """The write is committed; only the wait for switches to install it ran out."""

    status, type = 504, "WaitTimeout"


def not_found(kind: str, object_id: str) -> NotFound:
    """NetworkNotFound / SubnetNotFound / PortNotFound ... with Neutron's message."""
    if kind == "SecurityGroup":
        return NotFound(f"Security group {object_id} does not exist", type="SecurityGroupNotFound")
    if kind == "QosPolicy":
        return NotFound(f"QoS policy {object_id} could not be found.", type="QosPolicyNotFound")
    return NotFound(f"{kind} {object_id} could not be found.", type=f"{kind}NotFound")


def conflict(type_: str, message: str) -> Conflict:
    return Conflict(message, type=type_)


def bad_request(type_: str, message: str) -> BadRequest:
    return BadRequest(message, type=type_)
