"""Input validation: attribute specs and converters shared by every resource.

Each resource declares its attributes once (`Attr`): who may set them, when, and
how a wire value becomes a domain value. Converters raise `InvalidInput` with a
message that names the attribute and the bad value, before anything reaches the
store, so a rejected request never writes.
"""

from __future__ import annotations

import ipaddress
import json
import re
import uuid as uuidlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Optional

from webob import Request

from controller.rest.errors import BadRequest, InvalidInput

Converter = Callable[[Any], Any]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_MISSING = object()


@dataclass(frozen=True)
class Attr:
    """One API attribute of a resource.

    `post`/`put`: may be given on create/update. `admin_only`: a non-admin giving a
    value other than `default` gets 403. `filter`: usable as a list filter (scalar).
    """

    name: str
    convert: Converter
    post: bool = True
    put: bool = True
    required: bool = False
    admin_only: bool = False
    default: Any = None
    filter: bool = True


# -- converters ------------------------------------------------------------------
def _type_name(value: Any) -> str:
    return type(value).__name__ if value is not None else "null"


def string(max_len: int = 255) -> Converter:
    def conv(value: Any) -> str:
        if not isinstance(value, str):
            raise InvalidInput(f"'{value}' is not a valid string")
        if len(value) > max_len:
            raise InvalidInput(f"'{value[:32]}...' exceeds maximum length of {max_len}")
        return value

    return conv


def boolean(value: Any) -> bool:
    """Neutron's convert_to_boolean: true/false, "true"/"false" (any case), 1/0."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise InvalidInput(f"'{value}' cannot be converted to boolean")


def integer(value: Any) -> int:
    if isinstance(value, bool):
        raise InvalidInput(f"'{value}' is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
        return int(value)
    raise InvalidInput(f"'{value}' is not an integer")


def optional(conv: Converter) -> Converter:
    def wrapped(value: Any) -> Any:
        return None if value is None else conv(value)

    return wrapped


def uuid_str(value: Any) -> str:
    try:
        return str(uuidlib.UUID(str(value))) if isinstance(value, str) else _fail_uuid(value)
    except ValueError:
        return _fail_uuid(value)


def _fail_uuid(value: Any) -> str:
    raise InvalidInput(f"'{value}' is not a valid UUID")


def enum(*allowed: str) -> Converter:
    def conv(value: Any) -> str:
        if value not in allowed:
            raise InvalidInput(f"'{value}' is not in {list(allowed)}")
        return str(value)

    return conv


def ip_address(value: Any) -> str:
    return str(parse_ip(value))


def parse_ip(value: Any) -> IPAddress:
    if not isinstance(value, str):
        raise InvalidInput(f"'{value}' is not a valid IP address")
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        raise InvalidInput(f"'{value}' is not a valid IP address") from None


def cidr(value: Any) -> str:
    """A network CIDR with no host bits set, in canonical form."""
    if not isinstance(value, str) or "/" not in value:
        raise InvalidInput(f"'{value}' is not a valid IP subnet")
    try:
        return str(ipaddress.ip_network(value.strip(), strict=True))
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise InvalidInput(f"'{value}' is not a valid IP subnet") from None
    raise InvalidInput(f"'{value}' isn't a recognized IP subnet cidr, '{loose}' is recommended")


_MAC_RE = re.compile(r"^([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}$")


def mac_address(value: Any) -> str:
    """Lower-case colon form; rejects multicast/broadcast and all-zero addresses."""
    if not isinstance(value, str) or not _MAC_RE.match(value):
        raise InvalidInput(f"'{value}' is not a valid MAC address")
    mac = value.lower().replace("-", ":")
    if int(mac[:2], 16) & 1:
        raise InvalidInput(f"'{value}' is not a valid MAC address: multicast or broadcast")
    if mac == "00:00:00:00:00:00":
        raise InvalidInput(f"'{value}' is not a valid MAC address")
    return mac


def dict_of_json(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"'{value}' is not a dictionary")
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"'{value}' is not JSON-serialisable") from None
    return dict(value)


def list_of(conv: Converter, *, unique: bool = True) -> Converter:
    def wrapped(value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise InvalidInput(f"'{value}' is not a list")
        out = [conv(v) for v in value]
        if unique and len(set(map(repr, out))) != len(out):
            raise InvalidInput(f"Duplicate items in the list: '{value}'")
        return out

    return wrapped


def keyed(allowed: Mapping[str, Converter], required: tuple[str, ...] = ()) -> Converter:
    """A dict with only `allowed` keys, each converted."""

    def conv(value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise InvalidInput(f"'{value}' is not a dictionary")
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise InvalidInput(f"Unrecognized key(s) {', '.join(map(repr, unknown))} in '{value}'")
        missing = [k for k in required if k not in value]
        if missing:
            raise InvalidInput(
                f"'{value}' is missing required key(s) {', '.join(map(repr, missing))}"
            )
        return {k: allowed[k](v) for k, v in value.items()}

    return conv


def in_range(conv: Converter, low: int, high: int) -> Converter:
    def wrapped(value: Any) -> int:
        n = conv(value)
        if not low <= n <= high:
            raise InvalidInput(f"'{n}' is not in range {low} through {high}")
        return int(n)

    return wrapped


# -- request bodies ----------------------------------------------------------------
def json_body(request: Request) -> Any:
    try:
        text = request.body.decode("utf-8")
        return json.loads(text) if text.strip() else None
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput("Malformed JSON in request body") from None


def resource_items(
    request: Request, singular: str, plural: str, *, allow_bulk: bool
) -> tuple[list[dict[str, Any]], bool]:
    """The item(s) of a body: {"network": {...}} or, for bulk create, {"networks": [...]}."""
    body = json_body(request)
    if not isinstance(body, dict) or not body:
        raise BadRequest("Resource body required")
    if allow_bulk and plural in body and len(body) == 1:
        items = body[plural]
        if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
            raise InvalidInput(f"'{plural}' must be a non-empty list of objects")
        return items, True
    if singular not in body or len(body) != 1:
        raise BadRequest(f"Unable to find '{singular}' in request body")
    item = body[singular]
    if not isinstance(item, dict):
        raise InvalidInput(f"'{singular}' must be an object")
    return [item], False


def check_item(
    item: Mapping[str, Any], attrs: Mapping[str, Attr], *, create: bool
) -> dict[str, Any]:
    """Reject unknown or misplaced attributes, convert the rest; defaults are the resource's job."""
    unknown = sorted(k for k in item if k not in attrs)
    if unknown:
        raise InvalidInput(f"Unrecognized attribute(s) '{', '.join(unknown)}'")
    out: dict[str, Any] = {}
    for key, value in item.items():
        attr = attrs[key]
        if create and not attr.post:
            raise InvalidInput(f"Attribute '{key}' not allowed in POST")
        if not create and not attr.put:
            raise InvalidInput(f"Cannot update read-only attribute {key}")
        try:
            out[key] = attr.convert(value)
        except InvalidInput as exc:
            raise InvalidInput(
                f"Invalid data for attribute '{key}': {_strip(exc.message)}"
            ) from None
    if create:
        missing = [a.name for a in attrs.values() if a.required and a.name not in out]
        if missing:
            raise BadRequest(
                f"Failed to parse request. Required attribute '{missing[0]}' not specified"
            )
    return out


def _strip(message: str) -> str:
    prefix = "Invalid input for operation: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def project_of(item: Mapping[str, Any]) -> Optional[str]:
    """The project an item names through project_id or tenant_id (which must agree)."""
    project = item.get("project_id", _MISSING)
    tenant = item.get("tenant_id", _MISSING)
    if project is not _MISSING and tenant is not _MISSING and project != tenant:
        raise InvalidInput("'project_id' and 'tenant_id' do not match")
    value = project if project is not _MISSING else tenant
    return None if value is _MISSING else str(value)
