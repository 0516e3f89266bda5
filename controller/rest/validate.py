"""Input validation: attribute specs and converters shared by every resource.

Each resource declares its attributes once (`Attr`): who may set them, when, and
how a wire value becomes a domain value. Converters raise `InvalidInput` with a
message that names the attribute and the bad value, before anything reaches the
store, so a rejected request never writes.

Before any converter runs, the edge (`check_request`, `json_body`) refuses what no
attribute may hold: bodies over the size or depth limits (limits.py), non-finite
numbers, and text the store cannot carry, in any string of the body or query.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import uuid as uuidlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Optional

from webob import Request

from controller.rest import limits
from controller.rest.errors import BadRequest, InvalidInput, NeutronError

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


def _refuse_zone(value: str, what: str) -> None:
    """IPv6 zone (scope) suffixes, `fe80::1%eth0`, are refused wherever an address is parsed.

    Python's ipaddress accepts them (3.9+) and keeps the suffix in both `str()` and
    equality, so `2001:db8::5%eth0` != `2001:db8::5`: accepted, a zone defeats the
    duplicate-address check and ends up in flows and the store. A zone names an
    interface of one host, which means nothing in a tenant's address plan.
    """
    if "%" in value:
        raise InvalidInput(f"'{value}' is not a valid {what}: zone suffixes (%...) are not allowed")


def parse_ip(value: Any) -> IPAddress:
    if not isinstance(value, str):
        raise InvalidInput(f"'{value}' is not a valid IP address")
    _refuse_zone(value, "IP address")
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        raise InvalidInput(f"'{value}' is not a valid IP address") from None


def parse_network(value: Any, *, strict: bool, what: str = "IP subnet") -> IPNetwork:
    """`ipaddress.ip_network` without zone suffixes; InvalidInput naming `what` on failure."""
    if not isinstance(value, str):
        raise InvalidInput(f"'{value}' is not a valid {what}")
    _refuse_zone(value, what)
    try:
        return ipaddress.ip_network(value.strip(), strict=strict)
    except ValueError:
        raise InvalidInput(f"'{value}' is not a valid {what}") from None


def cidr(value: Any) -> str:
    """A network CIDR with no host bits set, in canonical form."""
    if not isinstance(value, str) or "/" not in value:
        raise InvalidInput(f"'{value}' is not a valid IP subnet")
    loose = parse_network(value, strict=False)
    try:
        return str(ipaddress.ip_network(value.strip(), strict=True))
    except ValueError:  # host bits set
        raise InvalidInput(
            f"'{value}' isn't a recognized IP subnet cidr, '{loose}' is recommended"
        ) from None


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


# -- the edge: what any request may bring ------------------------------------------------
# Text the northbound store cannot carry, found by sending hand-built JSON-RPC
# `transact` requests to ovsdb-server 3.1 (the version this project runs):
# - U+0000, escaped (\u0000) or raw: the server's JSON parser fails and it closes the
#   client's connection, so every write in flight on that session fails (503) and one
#   member's request starves every project;
# - a high surrogate (U+D800-U+DBFF) not followed by a low one: same, connection closed;
# - a lone low surrogate (U+DC00-U+DFFF): the transaction fails ("not a valid UTF-8
#   string"). Surrogates are not Unicode scalar values at all: no UTF-8 can encode
#   them, so they are refused whatever their order.
# Carried and read back intact (so accepted): the noncharacters U+FFFE/U+FFFF/U+FDD0,
# C0 controls other than NUL (JSON-escaped on the wire), DEL, C1 controls,
# U+2028/U+2029, U+FEFF and astral characters.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# A JSON string, or one bracket: strings are skipped so their brackets do not count.
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|(?P<open>[\[{])|(?P<close>[\]}])', re.S)
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
# (key, parent): a path through a parsed body, rendered only when it names an error.
Trail = Optional[tuple[Any, Any]]


def check_request(request: Request) -> None:
    """Everything a request carries besides its body, checked before it is routed.

    The body is refused by its declared length (it is parsed later, by `json_body`);
    the path and query string must decode as UTF-8 (webob raises, which was a 500)
    and hold no text the store cannot carry, as bodies may not.
    """
    check_body_size(request)
    try:
        path = request.path_info
        params = list(request.GET.items())
    except UnicodeDecodeError:
        raise InvalidInput("The URL is not valid UTF-8") from None
    check_text(path, "the URL path")
    for key, value in params:
        check_text(key, "a query parameter name")
        check_text(value, f"query parameter '{_show(key)}'")


def request_too_large(size: int) -> NeutronError:
    """Neutron's answer to a body over oslo.middleware's max_request_body_size."""
    return NeutronError(
        "Request is too large.",
        type="RequestEntityTooLarge",
        status=413,
        detail=f"The body is {size} bytes; at most {limits.MAX_BODY_BYTES} bytes are accepted.",
    )


def check_body_size(request: Request) -> None:
    """Refuse a body by its Content-Length, before a byte of it is read or buffered."""
    declared = (request.environ.get("CONTENT_LENGTH") or "").strip()
    if not declared:
        return
    if not re.fullmatch(r"[0-9]+", declared):
        raise BadRequest(f"Invalid Content-Length '{_show(declared)}'")
    if int(declared) > limits.MAX_BODY_BYTES:
        raise request_too_large(int(declared))


def check_text(text: str, where: str) -> None:
    """400 if `text` holds a character the store cannot carry (see `_UNSTORABLE`)."""
    bad = _UNSTORABLE.search(text)
    if bad is not None:
        raise _unstorable(bad, where)


def _unstorable(bad: re.Match[str], where: str) -> InvalidInput:
    return InvalidInput(
        f"{where} holds U+{ord(bad.group()):04X} at position {bad.start()}, which cannot "
        "be stored: NUL and UTF-16 surrogates are not accepted in any string"
    )


def check_json_depth(text: str, limit: int = limits.MAX_JSON_DEPTH) -> None:
    """400 if the JSON document `text` nests deeper than `limit`: one linear scan, no recursion.

    Run before parsing, because Python's parser recurses once per level and a 100k-level
    body exhausts the interpreter's stack; the scan stops at the first level too many.
    """
    depth = 0
    for token in _JSON_TOKEN.finditer(text):
        if token.lastgroup == "open":
            depth += 1
            if depth > limit:
                raise InvalidInput(f"The request body nests deeper than {limit} levels")
        elif token.lastgroup == "close":
            depth -= 1


def check_json(body: Any) -> None:
    """Walk a parsed body (iteratively) and refuse what the store cannot hold.

    Every string, dictionary keys included, at any depth, goes through `check_text`;
    every float must be finite. One check here covers every resource and every
    attribute, present and future, including free-form ones such as binding:profile.
    """
    stack: list[tuple[Any, Trail]] = [(body, None)]
    while stack:
        value, trail = stack.pop()
        if isinstance(value, str):
            if bad := _UNSTORABLE.search(value):
                raise _unstorable(bad, f"The string at '{_path(trail)}'")
        elif isinstance(value, float) and not math.isfinite(value):
            raise InvalidInput(f"The number at '{_path(trail)}' is not finite ({value})")
        elif isinstance(value, dict):
            for key, item in value.items():
                if bad := _UNSTORABLE.search(key):
                    raise _unstorable(bad, f"The key '{_show(key)}' in '{_path(trail)}'")
                stack.append((item, (key, trail)))
        elif isinstance(value, list):
            stack.extend((item, (i, trail)) for i, item in enumerate(value))


def _refuse_constant(name: str) -> Any:
    """json.loads calls this for NaN, Infinity and -Infinity, which JSON does not have."""
    raise InvalidInput(f"'{name}' is not a valid JSON number: non-finite numbers are refused")


def _path(trail: Trail) -> str:
    parts: list[str] = []
    while trail is not None:
        key, trail = trail
        parts.append(f"[{key}]" if isinstance(key, int) else f".{_show(key)}")
    return "".join(reversed(parts)).lstrip(".") or "(body)"


def _show(text: str, limit: int = 40) -> str:
    """`text` safe to echo in a message: escaped to ASCII, and short."""
    shown = text.encode("ascii", "backslashreplace").decode("ascii")
    return shown if len(shown) <= limit else shown[:limit] + "..."


def positive_seconds(raw: str, name: str, maximum: float) -> float:
    """A duration in seconds written as a plain decimal, 0 < t <= `maximum`; else 400.

    Plain decimals only: float() would also take "nan", "inf", "1e9" and "1_0".
    """
    value = float(raw) if _DECIMAL.fullmatch(raw) else math.nan
    if not 0 < value <= maximum:  # False for nan
        raise InvalidInput(
            f"{name} must be a number of seconds greater than 0 and at most {maximum:g}, "
            f"got '{_show(raw)}'"
        )
    return value


# -- request bodies ----------------------------------------------------------------
def json_body(request: Request) -> Any:
    """The parsed body; refused unless every part of it is something the store can carry.

    The one place request bodies are read: size (again, for bodies that came without
    a Content-Length), UTF-8, depth before parsing, then `check_json` on the result.
    """
    raw = request.body
    if len(raw) > limits.MAX_BODY_BYTES:
        raise request_too_large(len(raw))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("Malformed JSON in request body: not UTF-8") from None
    if not text.strip():
        return None
    check_json_depth(text)
    try:
        body = json.loads(text, parse_constant=_refuse_constant)
    except ValueError:
        raise InvalidInput("Malformed JSON in request body") from None
    check_json(body)
    return body


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
