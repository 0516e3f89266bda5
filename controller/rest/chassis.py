"""/v1/chassis: the hosts whose OVSDB Loom manages, as stored and as connected.

A chassis is stored in the northbound `Chassis` table (keyed by name) when an
operator adds it through the API; the engine opens an OVSDB session for every
stored row. Chassis given with `--chassis` on the command line are never stored,
but the controller has a session with them all the same, so the list shows them
too, marked `"source": "command-line"` (they go away by restarting without the
flag, not by DELETE).

Shapes (admin only):

    POST   /v1/chassis {"chassis": {"remote": "tcp:IP:PORT" | "unix:/PATH",
                                    "name": optional (default: the remote),
                                    "bridge_mappings": optional {"physnet1": "br-phys"}}}
           -> 201 {"chassis": VIEW}; 409 name or remote in use; 400 bad input
    GET    /v1/chassis            -> 200 {"chassis": [VIEW, ...]}
    GET    /v1/chassis/<name>     -> 200 {"chassis": VIEW}; 404 unknown
    DELETE /v1/chassis/<name>     -> 204; 404 unknown; 409 for a command-line chassis

    VIEW = {name, remote, bridge_mappings, source: "api" | "command-line",
            connected, system_id, encap_ip, bridges, ports_bound,
            openflow_connected, controller_target, controller_status}

`connected` is the chassis' OVSDB session; `openflow_connected` says whether its
integration bridge has also opened an OpenFlow connection to this controller (it
has not when `controller_target`, the address the bridge dials, is unreachable from
the chassis). `controller_status` is ovs-vswitchd's own report on that target:
`{is_connected, state, last_error}`, or null before the bridge exists.

`<name>` may also be the chassis' remote (slashes of a unix path included), so a
chassis added without a name is reachable by what the operator typed.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any, Optional

from webob import Request

from controller import intent as model
from controller.rest.errors import Conflict, InvalidInput, not_found
from controller.rest.validate import resource_items
from controller.runtime import Runtime
from controller.store.txn import TxnHelper

SOURCE_API = "api"
SOURCE_COMMAND_LINE = "command-line"

ATTRS = ("name", "remote", "bridge_mappings")
MAX_NAME = 255
MAX_PHYSNET = 64
IFNAMSIZ = 15  # a netdev bridge is also a tap device: the Linux interface name limit
_UNIX_PATH_MAX = 107
_BRIDGE_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_PHYSNET_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


# -- input ---------------------------------------------------------------------------
def parse_remote(value: Any) -> str:
    """`tcp:IP:PORT` (IPv6 as `tcp:[ADDR]:PORT`) or `unix:/absolute/path`, canonical form.

    Canonical so that two spellings of one address are caught as the same remote.
    """
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"'{value}' is not a valid OVSDB remote: expected tcp:IP:PORT "
                           "or unix:PATH")
    kind, _, rest = value.partition(":")
    if kind == "unix":
        if not rest.startswith("/") or len(rest) > _UNIX_PATH_MAX or "\x00" in rest \
                or any(c.isspace() for c in rest):
            raise InvalidInput(f"'{value}' is not a valid OVSDB remote: unix:PATH needs an "
                               f"absolute socket path of at most {_UNIX_PATH_MAX} characters")
        return f"unix:{rest}"
    if kind == "tcp":
        host, sep, port = rest.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidInput(f"'{value}' is not a valid OVSDB remote: tcp:IP:PORT needs a "
                               "port from 1 to 65535")
        bracketed = host.startswith("[") and host.endswith("]")
        try:
            addr = ipaddress.ip_address(host[1:-1] if bracketed else host)
        except ValueError:
            raise InvalidInput(f"'{value}' is not a valid OVSDB remote: '{host}' is not an "
                               "IP address") from None
        if addr.version == 6 and not bracketed:
            raise InvalidInput(f"'{value}' is not a valid OVSDB remote: write an IPv6 "
                               "address in brackets, tcp:[ADDR]:PORT")
        shown = f"[{addr}]" if addr.version == 6 else str(addr)
        return f"tcp:{shown}:{int(port)}"
    raise InvalidInput(f"'{value}' is not a valid OVSDB remote: expected tcp:IP:PORT "
                       "or unix:PATH")


def parse_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME \
            or value != value.strip() or any(ord(c) < 32 for c in value):
        raise InvalidInput(f"Invalid data for attribute 'name': '{value}' must be a non-empty "
                           f"string of at most {MAX_NAME} characters, without surrounding "
                           "spaces or control characters")
    return value


def parse_bridge_mappings(value: Any) -> tuple[tuple[str, str], ...]:
    """{"physnet": "bridge"} -> sorted pairs; one bridge serves one physical network."""
    if not isinstance(value, dict):
        raise InvalidInput(f"Invalid data for attribute 'bridge_mappings': '{value}' is not "
                           "a dictionary of physical network -> bridge")
    seen: dict[str, str] = {}
    for physnet, bridge in value.items():
        if not isinstance(physnet, str) or not _PHYSNET_RE.match(physnet) \
                or len(physnet) > MAX_PHYSNET:
            raise InvalidInput(f"Invalid data for attribute 'bridge_mappings': physical "
                               f"network '{physnet}' must be 1-{MAX_PHYSNET} letters, digits, "
                               "'.', '_' or '-'")
        if not isinstance(bridge, str) or not _BRIDGE_RE.match(bridge) \
                or len(bridge) > IFNAMSIZ:
            raise InvalidInput(f"Invalid data for attribute 'bridge_mappings': bridge "
                               f"'{bridge}' must be 1-{IFNAMSIZ} letters, digits, '.', '_' "
                               "or '-'")
        if bridge in seen:
            raise InvalidInput(f"Invalid data for attribute 'bridge_mappings': bridge "
                               f"'{bridge}' is mapped to both '{seen[bridge]}' and "
                               f"'{physnet}'")
        seen[bridge] = physnet
    return tuple(sorted(value.items()))


def parse_create(request: Request) -> dict[str, Any]:
    """Type-check a POST body; no store access, so a bad request never reaches a write."""
    items, _ = resource_items(request, "chassis", "chassis", allow_bulk=False)
    item = items[0]
    unknown = sorted(k for k in item if k not in ATTRS)
    if unknown:
        raise InvalidInput(f"Unrecognized attribute(s) '{', '.join(unknown)}'")
    if "remote" not in item:
        raise InvalidInput("Failed to parse request. Required attribute 'remote' not specified")
    remote = parse_remote(item["remote"])
    return {
        "remote": remote,
        "name": parse_name(item["name"]) if item.get("name") is not None else remote,
        "bridge_mappings": parse_bridge_mappings(item.get("bridge_mappings") or {}),
    }


# -- writes (run inside one store transaction) ---------------------------------------
def create(item: Mapping[str, Any], helper: TxnHelper, runtime: Runtime) -> model.Chassis:
    intent = helper.current()
    name, remote = item["name"], item["remote"]
    if name in intent.chassis:
        raise Conflict(f"Chassis {name} already exists.", type="ChassisNameInUse")
    holder = next((c for _, c in sorted(intent.chassis.items()) if c.remote == remote), None)
    if holder is not None:
        raise Conflict(f"Remote {remote} is already chassis {holder.name}.",
                       type="ChassisRemoteInUse")
    if any(r.get("remote") == remote for r in _command_line(intent, runtime)):
        raise Conflict(f"Remote {remote} is already managed from the command line "
                       "(--chassis); restart without that flag to manage it through the API.",
                       type="ChassisRemoteInUse")
    chassis = model.Chassis(name=name, remote=remote,
                            bridge_mappings=item["bridge_mappings"])
    helper.put(chassis)
    return chassis


def delete(name: str, helper: TxnHelper, runtime: Runtime) -> str:
    """Delete the stored chassis called (or reached at) `name`; returns its stored name."""
    intent = helper.current()
    stored = lookup_stored(intent, name)
    if stored is None:
        if _find_runtime(_command_line(intent, runtime), name) is not None:
            raise Conflict(f"Chassis {name} was given on the command line (--chassis), not "
                           "through the API: restart the controller without it instead.",
                           type="ChassisFromCommandLine")
        raise not_found("Chassis", name)
    helper.delete(model.Chassis, stored.name)
    return stored.name


# -- reads ---------------------------------------------------------------------------
def lookup_stored(intent: model.Intent, name: str) -> Optional[model.Chassis]:
    found = intent.chassis.get(name)
    if found is not None:
        return found
    return next((c for _, c in sorted(intent.chassis.items()) if c.remote == name), None)


def _match(stored: model.Chassis, live: list[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The runtime entry of a stored chassis: same remote, else same name (system-id)."""
    for key, value in (("remote", stored.remote), ("name", stored.name)):
        for entry in live:
            if entry.get(key) == value:
                return entry
    return None


def _merged(intent: model.Intent, runtime: Runtime
            ) -> tuple[list[tuple[model.Chassis, Optional[dict[str, Any]]]],
                       list[dict[str, Any]]]:
    """(stored chassis with their runtime entry, runtime entries no stored row claims)."""
    live = [dict(e) for e in runtime.chassis()]
    pairs = []
    for _, stored in sorted(intent.chassis.items()):  # by name: mappings are not sorted
        entry = _match(stored, live)
        if entry is not None:
            live.remove(entry)
        pairs.append((stored, entry))
    return pairs, live


def _command_line(intent: model.Intent, runtime: Runtime) -> list[dict[str, Any]]:
    return _merged(intent, runtime)[1]


def _find_runtime(entries: list[dict[str, Any]], name: str) -> Optional[dict[str, Any]]:
    for key in ("name", "remote"):
        for entry in entries:
            if entry.get(key) == name:
                return entry
    return None


def _runtime_part(entry: Optional[dict[str, Any]]) -> dict[str, Any]:
    entry = entry or {}
    return {
        "connected": bool(entry.get("connected", False)),
        "system_id": entry.get("name"),
        "encap_ip": entry.get("encap_ip"),
        "bridges": list(entry.get("bridges") or []),
        "ports_bound": list(entry.get("ports_bound") or []),
        "openflow_connected": bool(entry.get("openflow_connected", False)),
        "controller_target": entry.get("controller_target"),
        "controller_status": entry.get("controller_status"),
    }


def stored_view(chassis: model.Chassis, entry: Optional[dict[str, Any]]) -> dict[str, Any]:
    view = {
        "name": chassis.name,
        "remote": chassis.remote,
        "bridge_mappings": dict(chassis.bridge_mappings),
        "source": SOURCE_API,
        **_runtime_part(entry),
    }
    if view["encap_ip"] is None:
        view["encap_ip"] = chassis.encap_ip
    return view


def command_line_view(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": entry.get("name"),
        "remote": entry.get("remote"),
        "bridge_mappings": {},
        "source": SOURCE_COMMAND_LINE,
        **_runtime_part(entry),
    }


def list_view(intent: model.Intent, runtime: Runtime) -> dict[str, Any]:
    pairs, rest = _merged(intent, runtime)
    views = [stored_view(c, e) for c, e in pairs] + [command_line_view(e) for e in rest]
    return {"chassis": sorted(views, key=lambda v: (str(v["name"]), str(v["remote"])))}


def show_view(intent: model.Intent, runtime: Runtime, name: str) -> dict[str, Any]:
    pairs, rest = _merged(intent, runtime)
    stored = lookup_stored(intent, name)
    if stored is not None:
        entry = next(e for c, e in pairs if c is stored)
        return {"chassis": stored_view(stored, entry)}
    entry = _find_runtime(rest, name)
    if entry is not None:
        return {"chassis": command_line_view(entry)}
    raise not_found("Chassis", name)


def created_view(chassis: model.Chassis, runtime: Runtime) -> dict[str, Any]:
    entry = _match(chassis, [dict(e) for e in runtime.chassis()])
    return {"chassis": stored_view(chassis, entry)}
