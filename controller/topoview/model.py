"""TopologyView (+ intent, for names) -> the JSON document of GET /v1/topology.

Pure: no I/O, no clock. The same inputs give the same document, with nodes sorted
by id and links by (kind, src, dst), so two documents can be compared directly.

Shape (documented in docs/ARCHITECTURE.md, "The topology document"):

    {"nodes": [...], "links": [...],
     "generated_from": {"topology_version": V, "intent_generation": N}}

Node kinds: "switch" (`switch:<16 hex dpid>`), "chassis" (`chassis:<name>`) and
"port" (`port:<neutron port id>`). Link kinds: "fabric" (switch port to switch
port), "tunnel" (switch port to the peer chassis' switch port, or to the chassis
itself while the peer has not built its side), "host" (switch port to the intent
port bound there) and "hosts" (chassis to the switch it runs).

Fabric switches (`fabric_switches`: OpenFlow switches that are no chassis' bridge),
links, port names and port states come from the view's fabric fields (read with
getattr, so an older view simply gives no fabric). A fabric switch is named after
its LOCAL port (the bridge name) and has `chassis: null`; a baremetal port (bound
by binding:profile local_link_information, see controller.compiler.fabric) hangs
off the fabric switch port it names, like a chassis-bound port off its br-int.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Optional

from controller.compiler.fabric import fabric_bindings
from controller.intent import Intent
from controller.ofwire.consts import OFPP_MAX
from controller.topology import TopologyView

OFPP_LOCAL = 0xFFFFFFFE

NodeDoc = dict[str, Any]
LinkDoc = dict[str, Any]


def switch_id(datapath_id: int) -> str:
    return f"switch:{datapath_id:016x}"


def chassis_id(name: str) -> str:
    return f"chassis:{name}"


def port_id(neutron_id: str) -> str:
    return f"port:{neutron_id}"


def empty(topology_version: int = 0, intent_generation: Optional[int] = None) -> dict[str, Any]:
    """The document of a controller that knows no switch, chassis or port."""
    return {
        "nodes": [],
        "links": [],
        "generated_from": {
            "topology_version": topology_version,
            "intent_generation": intent_generation,
        },
    }


def _connected_switches(switches: Iterable[Any]) -> dict[int, bool]:
    """Datapath ids (ints) or Runtime.switches() rows ({'datapath_id': hex, 'connected'})."""
    out: dict[int, bool] = {}
    for s in switches:
        if isinstance(s, int):
            out[s] = True
        elif isinstance(s, Mapping) and s.get("datapath_id") is not None:
            raw = s["datapath_id"]
            dpid = raw if isinstance(raw, int) else int(str(raw), 16)
            out[dpid] = bool(s.get("connected", True))
    return out


def _connected_chassis(chassis: Iterable[Any]) -> dict[str, bool]:
    """Chassis names (connected), Runtime.chassis() rows or ChassisState objects."""
    out: dict[str, bool] = {}
    for c in chassis:
        if isinstance(c, str):
            out[c] = True
        elif isinstance(c, Mapping):
            if c.get("name") is not None:
                out[str(c["name"])] = bool(c.get("connected", False))
        elif getattr(c, "name", None) is not None:
            out[str(c.name)] = bool(getattr(c, "connected", False))
    return out


def _state(up: bool) -> str:
    return "up" if up else "down"


def _end(node: str, port_no: Optional[int]) -> dict[str, Any]:
    return {"node": node, "port_no": port_no}


def build(
    view: TopologyView,
    intent: Optional[Intent] = None,
    switches_connected: Iterable[Any] = (),
    chassis_connected: Iterable[Any] = (),
    port_status: Optional[Callable[[str], str]] = None,
) -> dict[str, Any]:
    """The topology document.

    `switches_connected`: datapath ids of switches with a live OpenFlow channel, or
    the rows of `Runtime.switches()` (whose `connected` is honoured); a connected
    switch the view does not know (a fabric switch) still gets a node.
    `chassis_connected`: chassis names, `Runtime.chassis()` rows or `ChassisState`s.
    `port_status(port_id)`: Neutron status of a port ('ACTIVE'/'DOWN'); without it a
    port is ACTIVE when bound to a connected switch.
    """
    connected = _connected_switches(switches_connected)
    ch_connected = _connected_chassis(chassis_connected)
    links_map: Mapping[tuple[int, int], tuple[int, int]] = getattr(view, "links", None) or {}
    switch_ports: Mapping[int, Mapping[str, int]] = getattr(view, "switch_ports", None) or {}
    port_state: Mapping[tuple[int, int], bool] = getattr(view, "port_state", None) or {}

    def port_up(dpid: int, port_no: Optional[int]) -> bool:
        return port_no is None or bool(port_state.get((dpid, port_no), True))

    nodes: dict[str, NodeDoc] = {}
    links: list[LinkDoc] = []

    # ---- chassis
    for name, cv in view.chassis.items():
        nodes[chassis_id(name)] = {
            "id": chassis_id(name),
            "kind": "chassis",
            "name": name,
            "encap_ip": cv.encap_ip,
            "connected": ch_connected.get(name, False),
        }

    def ensure_chassis(name: str) -> str:
        nid = chassis_id(name)
        if nid not in nodes:
            nodes[nid] = {"id": nid, "kind": "chassis", "name": name, "encap_ip": None,
                          "connected": ch_connected.get(name, False)}
        return nid

    # ---- switches and their ports (name by port_no; reserved ports such as LOCAL aside)
    dpids = set(view.switches) | {d for d, up in connected.items() if up}
    dpids |= set(getattr(view, "fabric_switches", None) or ())
    dpids |= {d for d, _ in links_map} | set(switch_ports)
    names: dict[int, dict[int, str]] = {d: {} for d in dpids}
    local_names: dict[int, str] = {}
    for dpid, by_name in switch_ports.items():
        for pname, port_no in by_name.items():
            if port_no == OFPP_LOCAL:
                local_names[dpid] = pname  # the bridge's own name
            elif port_no < OFPP_MAX:
                names[dpid][port_no] = pname
    for bound in view.bindings.values():
        names.setdefault(bound.datapath_id, {}).setdefault(bound.ofport, bound.interface)
    for t in view.tunnels.values():
        names.setdefault(t.datapath_id, {}).setdefault(
            t.ofport, f"{t.tunnel_type}:{t.remote_chassis}")
    for (dpid, physnet), ofport in view.provider_ports.items():
        names.setdefault(dpid, {}).setdefault(ofport, f"patch:{physnet}")
    for (dpid, port_no) in links_map:
        names.setdefault(dpid, {}).setdefault(port_no, str(port_no))
    dpids |= set(names)

    for dpid in sorted(dpids):
        sv = view.switches.get(dpid)
        chassis_name = (getattr(sv, "chassis", None) or None) if sv is not None else None
        nid = switch_id(dpid)
        nodes[nid] = {
            "id": nid,
            "kind": "switch",
            "datapath_id": f"{dpid:016x}",
            "name": (sv.bridge if sv is not None and sv.bridge
                     else local_names.get(dpid) or f"{dpid:016x}"),
            "chassis": chassis_name,
            "connected": connected.get(dpid, False),
            "ports": [
                {"port_no": no, "name": pname, "state": _state(port_up(dpid, no))}
                for no, pname in sorted(names.get(dpid, {}).items())
            ],
        }
        if chassis_name is not None:
            cid = ensure_chassis(chassis_name)
            links.append({
                "src": _end(cid, None), "dst": _end(nid, None), "kind": "hosts",
                "state": _state(bool(nodes[cid]["connected"])),
            })

    # ---- fabric links: both directions are in the map; one link per pair
    for (da, pa), (db, pb) in links_map.items():
        if (db, pb) < (da, pa) and links_map.get((db, pb)) == (da, pa):
            continue  # emitted from the other end
        links.append({
            "src": _end(switch_id(da), pa), "dst": _end(switch_id(db), pb), "kind": "fabric",
            "state": _state(port_up(da, pa) and port_up(db, pb)),
        })

    # ---- tunnels: pair the two sides when both exist
    for (dpid, remote, ttype), t in view.tunnels.items():
        sv = view.switches.get(dpid)
        local = sv.chassis if sv is not None else None
        peer_cv = view.chassis.get(remote)
        peer_dpid = peer_cv.datapath_id if peer_cv is not None else None
        back = (view.tunnels.get((peer_dpid, local, ttype))
                if peer_dpid is not None and local else None)
        if back is not None and peer_dpid is not None:
            if (peer_dpid, back.ofport) < (dpid, t.ofport):
                continue  # emitted from the other side
            links.append({
                "src": _end(switch_id(dpid), t.ofport),
                "dst": _end(switch_id(peer_dpid), back.ofport),
                "kind": "tunnel", "tunnel_type": ttype,
                "state": _state(port_up(dpid, t.ofport) and port_up(peer_dpid, back.ofport)),
            })
        else:  # the peer has not built its side (yet): a tunnel that carries nothing back
            links.append({
                "src": _end(switch_id(dpid), t.ofport), "dst": _end(ensure_chassis(remote), None),
                "kind": "tunnel", "tunnel_type": ttype, "state": "down",
            })

    # ---- intent ports, bound or not, and bindings nobody declared. A port is bound by
    # an interface's iface-id on a chassis (view.bindings) or, on a fabric switch, by
    # Neutron's baremetal convention (binding:profile local_link_information).
    networks = intent.networks if intent is not None else {}
    declared = intent.ports if intent is not None else {}
    attached: dict[str, tuple[int, int, str]] = {}  # port id -> (dpid, ofport, interface)
    if intent is not None and getattr(view, "fabric_switches", None):
        for fp, dpid, ofport, pname in fabric_bindings(intent, view):
            attached[fp.id] = (dpid, ofport, pname)
    for b in view.bindings.values():
        attached[b.port_id] = (b.datapath_id, b.ofport, b.interface)
    for pid in sorted(set(declared) | set(view.bindings)):
        p = declared.get(pid)
        at = attached.get(pid)
        net = networks.get(p.network_id) if p is not None else None
        if port_status is not None:
            status = port_status(pid)
        else:
            status = "ACTIVE" if at is not None and connected.get(at[0]) else "DOWN"
        nid = port_id(pid)
        nodes[nid] = {
            "id": nid,
            "kind": "port",
            "name": (p.name if p is not None else (at[2] if at is not None else "")),
            "network_id": p.network_id if p is not None else None,
            "network_name": net.name if net is not None else None,
            "project_id": p.project_id if p is not None else None,
            "mac": p.mac_address if p is not None else None,
            "ips": [f.ip_address for f in p.fixed_ips] if p is not None else [],
            "status": status,
        }
        if at is not None:
            if switch_id(at[0]) not in nodes:
                continue  # bound to a switch the document does not show (cannot happen)
            links.append({
                "src": _end(switch_id(at[0]), at[1]), "dst": _end(nid, None),
                "kind": "host", "state": _state(port_up(at[0], at[1])),
            })

    def link_key(link: LinkDoc) -> tuple[str, str, int, str, int]:
        s, d = link["src"], link["dst"]
        return (link["kind"], s["node"], s["port_no"] or -1, d["node"], d["port_no"] or -1)

    return {
        "nodes": [nodes[k] for k in sorted(nodes)],
        "links": sorted(links, key=link_key),
        "generated_from": {
            "topology_version": view.version,
            "intent_generation": intent.generation if intent is not None else None,
        },
    }
