"""Pure: the flow to trace, the parse of `ovs-appctl ofproto/trace`, and its meaning.

Nothing here does I/O. `parse_trace` turns the text ovs-vswitchd prints into passes
(the first one, then one per conntrack recirculation) of table entries, each with
the registers that matter (in_port, reg7 = the output port chosen by l2_lookup,
tun_id) as they were when the entry was hit. `explain_hop` maps every entry's
cookie back to the intent object that made it and names each decision the ACL
ladder took; `judge` turns the hops of one trace into a verdict and its reason: "allowed" (a
copy reached the destination port), "exited" (towards an address outside, a copy
left through a router's provider patch to the external network, NAT named by the
flow that did it), "punted" (sent to the controller and nowhere else: a guest's DHCP
request, which Loom's DHCP server answers), or "dropped".

The text format is OVS 3.1's; tests/unit/test_trace_parse.py holds real captures.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Optional

from controller import pipeline as pl
from controller.intent import Intent

PROTOCOLS = ("tcp", "udp", "icmp", "icmpv6")
ICMP_ECHO_REQUEST = 8
ICMPV6_ECHO_REQUEST = 128
DEFAULT_SRC_PORT = 33000
CT_ASSUMPTIONS = {
    "new": ("trk,new", "the first packet of a new connection: every conntrack lookup "
                       "(one per ACL table and chassis) reports +trk+new"),
    "est": ("trk,est", "a packet of a connection conntrack already holds, in the "
                       "original direction: every conntrack lookup reports +trk+est"),
}


# ---------------------------------------------------------------- the packet
@dataclass(frozen=True)
class Packet:
    """The first packet of the connection to trace, as the source guest would send it."""

    protocol: str  # tcp | udp | icmp | icmpv6 (icmp towards an IPv6 address is icmpv6)
    src_mac: str
    dst_mac: str
    src_ip: str
    dst_ip: str
    src_port: Optional[int] = None  # tcp/udp only
    dst_port: Optional[int] = None
    ttl: int = 64

    @property
    def ipv6(self) -> bool:
        return ipaddress.ip_address(self.dst_ip).version == 6

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "protocol": self.protocol, "ethertype": "IPv6" if self.ipv6 else "IPv4",
            "src_mac": self.src_mac, "dst_mac": self.dst_mac,
            "src_ip": self.src_ip, "dst_ip": self.dst_ip,
        }
        if self.protocol in ("tcp", "udp"):
            out["src_port"], out["dst_port"] = self.src_port, self.dst_port
        else:
            out["icmp_type"] = ICMPV6_ECHO_REQUEST if self.ipv6 else ICMP_ECHO_REQUEST
            out["icmp_code"] = 0
        return out


def trace_flow(packet: Packet, in_port: int, tun_id: Optional[int] = None) -> str:
    """The ofproto/trace flow for `packet` entering a bridge at `in_port`."""
    v6 = packet.ipv6
    proto = {"tcp": "tcp6" if v6 else "tcp", "udp": "udp6" if v6 else "udp",
             "icmp": "icmp6" if v6 else "icmp", "icmpv6": "icmp6"}[packet.protocol]
    parts = [f"in_port={in_port}"]
    if tun_id is not None:
        parts.append(f"tun_id={tun_id:#x}")
    parts += [proto, f"dl_src={packet.src_mac}", f"dl_dst={packet.dst_mac}"]
    if v6:
        parts += [f"ipv6_src={packet.src_ip}", f"ipv6_dst={packet.dst_ip}"]
    else:
        parts += [f"nw_src={packet.src_ip}", f"nw_dst={packet.dst_ip}"]
    parts.append(f"nw_ttl={packet.ttl}")
    if packet.protocol in ("tcp", "udp"):
        # OVS 3.1 refuses tp_src/tp_dst after `udp` ("prerequisites not met")
        p = packet.protocol
        parts += [f"{p}_src={packet.src_port}", f"{p}_dst={packet.dst_port}"]
        if packet.protocol == "tcp":
            parts.append("tcp_flags=0x002")  # SYN: the first packet
    elif v6:
        parts += [f"icmpv6_type={ICMPV6_ECHO_REQUEST}", "icmpv6_code=0"]
    else:
        parts += [f"icmp_type={ICMP_ECHO_REQUEST}", "icmp_code=0"]
    return ",".join(parts)


# ---------------------------------------------------------------- parsing
@dataclass
class Output:
    """An OpenFlow output action to a port the trace executed."""

    ofport: int
    tun_id: Optional[int]  # the tunnel key set before it, if any
    skipped: bool = False  # "skipping output to input port"
    tunnel: bool = False  # "output to native tunnel"
    failed: Optional[str] = None  # a note saying the output could not happen
    bridge: str = ""  # the bridge whose flow output it ("": unknown)
    pass_index: int = 0  # the pass (Pass.index) it happened in


@dataclass
class ControllerOutput:
    """An output to the controller (`CONTROLLER:max_len`, `controller(...)`): a packet-in,
    never a port, so it is kept apart from the outputs."""

    max_len: Optional[int]
    meter: Optional[int]  # the OpenFlow meter of the flow (its `meter:N`), if any
    bridge: str = ""
    pass_index: int = 0


@dataclass
class Entry:
    """One flow hit: `table. match, priority N, cookie C` and what it did."""

    pass_index: int
    bridge: str
    table: int
    match: str
    priority: Optional[int]  # None: "No match."
    cookie: Optional[int]
    depth: int  # 0 for the pipeline, 1 inside a resubmit, ...
    in_port: Optional[int]
    reg7: Optional[int]  # at the time of the hit
    ct_state: Optional[str]  # of the pass: None before the first conntrack lookup
    actions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    meter: Optional[int] = None  # the meter instruction of the flow (`meter:N`)
    controller: list[ControllerOutput] = field(default_factory=list)


@dataclass
class Pass:
    """The trace before any recirculation, or one `recirc(0xN)` resumed after conntrack."""

    index: int
    recirc_id: Optional[str]
    ct_state: Optional[str]
    ct_defaulted: bool  # OVS ran out of --ct-next flags and assumed trk|new
    flow: dict[str, str] = field(default_factory=dict)
    # "Replacing src/dst IP/ports to simulate NAT": the fields before and after, as
    # OVS printed them ({"nw_src": "10.0.0.11", ...}); empty when the ct() did no NAT
    nat_initial: dict[str, str] = field(default_factory=dict)
    nat_modified: dict[str, str] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)
    final_flow: str = ""
    megaflow: str = ""
    datapath_actions: str = ""


@dataclass
class ParsedTrace:
    passes: list[Pass]

    @property
    def entries(self) -> list[Entry]:
        return [e for p in self.passes for e in p.entries]

    @property
    def outputs(self) -> list[Output]:
        return [o for e in self.entries for o in e.outputs]

    @property
    def controller_outputs(self) -> list[ControllerOutput]:
        return [c for e in self.entries for c in e.controller]

    @property
    def datapath_actions(self) -> list[str]:
        return [p.datapath_actions for p in self.passes]


class TraceParseError(ValueError):
    """The text is not ofproto/trace output we understand."""


_ENTRY = re.compile(r"^(?P<indent> *)(?P<table>\d+)\. (?P<rest>.*)$")
_ENTRY_REST = re.compile(
    r"^(?:(?P<match>.*), )?priority (?P<prio>\d+)(?:, cookie (?P<cookie>0x[0-9a-fA-F]+))?$")
_BRIDGE = re.compile(r'^(?P<indent> *)bridge\("(?P<name>[^"]+)"\)$')
_RECIRC = re.compile(r"^(?P<id>recirc\(0x[0-9a-f]+\)) - resume conntrack with "
                     r"(?P<default>default )?ct_state=(?P<state>[a-z|]+)")
_SET_FIELD = re.compile(r"^set_field:(?P<value>0x[0-9a-fA-F]+|\d+)->(?P<field>\w+)$")
_LOAD = re.compile(r"^load:(?P<value>0x[0-9a-fA-F]+|\d+)->NXM_NX_(?P<field>REG7|TUN_ID)\[\]$")
_OUTPUT = re.compile(r"^output:(?P<port>\d+)$")
_METER = re.compile(r"^meter:(?P<id>\d+)$")
# OVS prints an output to OFPP_CONTROLLER as `CONTROLLER:<max_len>`, the NX controller
# action as `controller` or `controller(reason=...,max_len=N,...)`
_CONTROLLER = re.compile(r"^(?:CONTROLLER:(?P<len>\d+)|controller(?:\((?P<args>.*)\))?)$")
_MAX_LEN = re.compile(r"(?:^|,)max_len=(?P<len>\d+)")


def _int(text: str) -> int:
    return int(text, 16) if text.lower().startswith("0x") else int(text)


def parse_flow_fields(text: str) -> dict[str, str]:
    """'tcp,in_port=2,reg7=0x3,...' -> {'tcp': '', 'in_port': '2', 'reg7': '0x3', ...}."""
    out: dict[str, str] = {}
    for token in text.split(","):
        token = token.strip()
        if not token:
            continue
        key, _, value = token.partition("=")
        out[key] = value
    return out


class _PassParser:
    def __init__(self, p: Pass) -> None:
        self.p = p
        self.entries: list[tuple[Entry, int]] = []  # open entries and levels, innermost last
        self.bridges: list[tuple[str, int]] = []  # (name, indent), innermost last
        self.in_port: Optional[int] = None
        self.reg7: Optional[int] = None
        self.tun_id: Optional[int] = None

    def start(self, flow_text: str) -> None:
        self.p.flow = parse_flow_fields(flow_text)
        if "in_port" in self.p.flow and self.p.flow["in_port"].isdigit():
            self.in_port = int(self.p.flow["in_port"])
        if pl.REG_OUT_PORT in self.p.flow:
            self.reg7 = _int(self.p.flow[pl.REG_OUT_PORT])
        if "tun_id" in self.p.flow:
            self.tun_id = _int(self.p.flow["tun_id"])

    def line(self, raw: str) -> None:
        text = raw.rstrip()
        if not text.strip() or set(text.strip()) == {"-"}:
            return
        indent = len(text) - len(text.lstrip(" "))
        m = _BRIDGE.match(text)
        if m:
            self._close(indent)
            self.bridges = [b for b in self.bridges if b[1] < indent]
            self.bridges.append((m["name"], indent))
            return
        m = _ENTRY.match(text)
        if m:
            # tables are right-aligned in two columns: " 0." and "10." are one level
            level = len(m["indent"]) + len(m["table"]) - 2
            self._close(level)
            self._entry(int(m["table"]), m["rest"], level)
            return
        self._close(indent)
        body = text.strip()
        current = self.entries[-1][0] if self.entries else None
        if current is None:
            return  # "thaw", "Resuming from table N": before the first entry of a pass
        if body.startswith(("->", ">>")):
            note = body[2:].strip()
            current.notes.append(note)
            if current.outputs and current.actions and _OUTPUT.match(current.actions[-1]):
                out = current.outputs[-1]
                if "skipping output to input port" in note:
                    out.skipped = True
                elif "output to native tunnel" in note:
                    out.tunnel = True
                elif "fail" in note or "no route" in note.lower():
                    out.failed = note
            return
        current.actions.append(body)
        self._action(current, body)

    def _close(self, indent: int) -> None:
        while self.entries and self.entries[-1][1] >= indent:
            self.entries.pop()
        self.bridges = [b for b in self.bridges if b[1] <= indent]

    def _entry(self, table: int, rest: str, level: int) -> None:
        if rest.strip() == "No match.":
            match, prio, cookie = "", None, None
        else:
            m = _ENTRY_REST.match(rest)
            if m is None:
                raise TraceParseError(f"unexpected table line: {rest!r}")
            match = m["match"] or ""
            prio = int(m["prio"])
            cookie = int(m["cookie"], 16) if m["cookie"] else None
        bridge = self.bridges[-1][0] if self.bridges else ""
        entry = Entry(self.p.index, bridge, table, match, prio, cookie, level // 4,
                      self.in_port, self.reg7, self.p.flow.get("ct_state"))
        self.p.entries.append(entry)
        self.entries.append((entry, level))

    def _action(self, entry: Entry, body: str) -> None:
        m = _SET_FIELD.match(body) or _LOAD.match(body)
        if m:
            name = m["field"].lower()
            if name == pl.REG_OUT_PORT:
                self.reg7 = _int(m["value"])
            elif name == "tun_id":
                self.tun_id = _int(m["value"])
            return
        m = _OUTPUT.match(body)
        if m:
            entry.outputs.append(Output(int(m["port"]), self.tun_id, bridge=entry.bridge,
                                        pass_index=entry.pass_index))
            return
        m = _METER.match(body)
        if m:
            entry.meter = int(m["id"])
            return
        m = _CONTROLLER.match(body)
        if m:
            length = m["len"]
            if length is None and m["args"]:
                found = _MAX_LEN.search(m["args"])
                length = found["len"] if found else None
            entry.controller.append(ControllerOutput(
                int(length) if length is not None else None, entry.meter, entry.bridge,
                entry.pass_index))


def parse_trace(text: str) -> ParsedTrace:
    """Parse the full output of `ovs-appctl ofproto/trace BRIDGE FLOW [--ct-next ...]`."""
    passes: list[Pass] = []
    parser: Optional[_PassParser] = None
    pending: Optional[Pass] = None
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("====="):
            continue
        m = _RECIRC.match(stripped)
        if m:
            pending = Pass(len(passes), m["id"], m["state"], bool(m["default"]))
            continue
        if pending is not None and stripped.startswith(("Initial flow: ", "Modified flow: ")):
            label, _, fields = stripped.partition(": ")
            target = pending.nat_initial if label == "Initial flow" else pending.nat_modified
            target.update(parse_flow_fields(fields))
            continue
        if raw.startswith("Flow: "):
            current = pending or Pass(len(passes), None, None, False)
            pending = None
            passes.append(current)
            parser = _PassParser(current)
            parser.start(raw[len("Flow: "):])
            continue
        if parser is None:
            continue
        if raw.startswith("Final flow: "):
            parser.p.final_flow = raw[len("Final flow: "):].strip()
        elif raw.startswith("Megaflow: "):
            parser.p.megaflow = raw[len("Megaflow: "):].strip()
        elif raw.startswith("Datapath actions: "):
            parser.p.datapath_actions = raw[len("Datapath actions: "):].strip()
        else:
            parser.line(raw)
    if not passes:
        raise TraceParseError("no 'Flow:' line: not ofproto/trace output")
    for p in passes:
        if p.ct_state is None and "ct_state" in p.flow:
            p.ct_state = p.flow["ct_state"]
    return ParsedTrace(passes)


def packet_after(packet: Packet, parsed: ParsedTrace, pass_index: int) -> Packet:
    """`packet` as the pass `pass_index` left it: what a copy tunnelled then carries to
    the next chassis (a router rewrote its MACs and TTL, NAT its addresses and ports)."""
    if not 0 <= pass_index < len(parsed.passes):
        return packet
    p = parsed.passes[pass_index]
    fields = parse_flow_fields(p.final_flow) if p.final_flow and \
        p.final_flow != "unchanged" else p.flow
    src_key, dst_key = ("ipv6_src", "ipv6_dst") if packet.ipv6 else ("nw_src", "nw_dst")

    def number(key: str, default: Optional[int]) -> Optional[int]:
        value = fields.get(key, "")
        return int(value) if value.isdigit() else default

    ports = packet.protocol in ("tcp", "udp")
    return replace(
        packet, src_mac=fields.get("dl_src") or packet.src_mac,
        dst_mac=fields.get("dl_dst") or packet.dst_mac,
        src_ip=fields.get(src_key) or packet.src_ip, dst_ip=fields.get(dst_key) or packet.dst_ip,
        src_port=number("tp_src", packet.src_port) if ports else packet.src_port,
        dst_port=number("tp_dst", packet.dst_port) if ports else packet.dst_port,
        ttl=number("nw_ttl", packet.ttl) or packet.ttl)


# ---------------------------------------------------------------- owners
def owner_index(intent: Intent) -> dict[tuple[str, int], dict[str, Any]]:
    """(cookie kind name, 48-bit key) -> the intent object it names, as JSON.

    The engine's `_owner_index` idea, extended to every kind a cookie can name.
    """
    idx: dict[tuple[str, int], dict[str, Any]] = {}

    def put(kind: str, object_id: str, **extra: Any) -> None:
        from controller.intent import object_key

        try:
            key = object_key(object_id)
        except ValueError:
            return
        idx[(kind, key)] = {"kind": kind, "id": object_id, **extra}

    for n in intent.networks.values():
        put("network", n.id, name=n.name, project_id=n.project_id)
    for p in intent.ports.values():
        put("port", p.id, name=p.name, network_id=p.network_id, project_id=p.project_id)
    for r in intent.security_group_rules.values():
        put("security_group_rule", r.id, security_group_id=r.security_group_id,
            direction=r.direction, ethertype=r.ethertype, protocol=r.protocol,
            port_range_min=r.port_range_min, port_range_max=r.port_range_max,
            remote_ip_prefix=r.remote_ip_prefix, remote_group_id=r.remote_group_id,
            project_id=r.project_id)
    for rt in intent.routers.values():
        put("router", rt.id, name=rt.name)
    for f in intent.floating_ips.values():
        put("floating_ip", f.id, floating_ip_address=f.floating_ip_address,
            fixed_ip_address=f.fixed_ip_address, port_id=f.port_id, router_id=f.router_id)
    for pf in intent.port_forwardings.values():
        fip = intent.floating_ips.get(pf.floatingip_id)
        put("port_forwarding", pf.id, floatingip_id=pf.floatingip_id,
            floating_ip_address=fip.floating_ip_address if fip is not None else None,
            protocol=pf.protocol, external_port=pf.external_port,
            internal_ip_address=pf.internal_ip_address, internal_port=pf.internal_port)
    for q in intent.qos_policies.values():
        put("qos_policy", q.id, name=q.name)
    return idx


def owner_of(cookie: Optional[int], owners: Mapping[tuple[str, int], Mapping[str, Any]]
             ) -> Optional[dict[str, Any]]:
    if cookie is None:
        return None
    kind, key = pl.cookie_owner(cookie)
    if kind == "unknown":
        return {"kind": "unknown", "id": None}
    if kind == "pipeline":
        return {"kind": "pipeline", "id": None, "what": _pipeline_owner(key)}
    found = owners.get((kind, key))
    if found is None:  # a flow of an object no longer in the intent (not yet removed)
        return {"kind": kind, "id": None, "stale": True}
    return dict(found)


def _pipeline_owner(key: int) -> str:
    if key == pl.ACL_LADDER_KEY:
        return "security-group ladder (conntrack, replies, invalid)"
    name = pl.TABLE_NAMES.get(key)
    return f"miss of table {name}" if name else "pipeline"


def priority_name(table: str, priority: Optional[int], entry: Optional[Entry] = None
                  ) -> Optional[str]:
    """The pipeline's name for a priority; `entry` tells apart names sharing a value."""
    if priority is None:
        return None
    if priority == 0:
        return "miss"
    t = pl.TABLES.get(table)
    if t is None:
        return None
    names = sorted(n for n, v in t.priorities.items() if v == priority)
    if len(names) > 1 and entry is not None:
        if table == "classify":
            pick = ("tunnel" if "tun_id=" in entry.match else
                    "vlan" if "vlan" in entry.match else "port")
            names = [pick] if pick in names else names
        elif table == "l2_lookup" and {"known_mac", "remote_mac"} <= set(names):
            sets_out = f"->{pl.REG_OUT_PORT}"
            routers = entry.cookie is not None and \
                pl.cookie_owner(entry.cookie)[0] == "router" and "router" in names
            names = ["router" if routers else
                     "known_mac" if any(a.startswith("set_field:") and a.endswith(sets_out)
                                        for a in entry.actions) else "remote_mac"]
    return "|".join(names) or None


# ---------------------------------------------------------------- one hop
@dataclass(frozen=True)
class HopContext:
    """What the controller knows of the switch a trace ran on."""

    chassis: str
    bridge: str
    datapath_id: int
    ports: Mapping[int, str]  # ofport -> intent port id bound there
    tunnels: Mapping[int, tuple[str, str]]  # ofport -> (remote chassis, tunnel type)
    # ofport -> physical network of the patch port to its provider bridge (the way out)
    providers: Mapping[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """A verdict one flow gave on the packet: allow or deny, and why."""

    allow: bool
    kind: str
    direction: Optional[str]  # egress | ingress | None (not an ACL)
    port_id: Optional[str]
    chassis: str
    table: str
    priority: int
    cookie: Optional[int]
    owner: Optional[Mapping[str, Any]]
    detail: str = ""
    name: Optional[str] = None  # the priority's name, shown where the kind alone is vague

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind == "security_group_rule" and self.owner:
            out.update(id=self.owner.get("id"),
                       security_group_id=self.owner.get("security_group_id"),
                       direction=self.direction,
                       rule={k: self.owner.get(k) for k in (
                           "ethertype", "protocol", "port_range_min", "port_range_max",
                           "remote_ip_prefix", "remote_group_id")})
        else:
            out["direction"] = self.direction
        out["port"] = self.port_id
        out.update(chassis=self.chassis, table=self.table, priority=self.priority,
                   cookie=None if self.cookie is None else f"{self.cookie:#x}")
        if self.name:
            out["priority_name"] = self.name
        if self.detail:
            out["detail"] = self.detail
        return out


_ACL = {"egress_acl": "egress", "ingress_acl": "ingress"}
_ACL_DECISIONS = {  # ladder name -> (allow, kind, detail)
    "exempt": (True, "port_security_disabled", "port security is off: no filtering"),
    "neighbor": (True, "neighbor_discovery", "ARP and IPv6 neighbour discovery always pass"),
    "reply": (True, "conntrack_reply", "reply or related packet of an allowed connection"),
    "rule": (True, "security_group_rule", ""),
    "rule_conj": (True, "security_group_rule", ""),
    "invalid": (False, "conntrack_invalid", "conntrack marks the packet invalid"),
    "revoke": (False, "connection_revoked",
               "an established connection that no rule allows any more"),
    "default_deny": (False, "default_deny", "no security-group rule of the port allows it"),
}


def decisions_of(parsed: ParsedTrace, ctx: HopContext,
                 owners: Mapping[tuple[str, int], Mapping[str, Any]]) -> list[Decision]:
    """Every allow/deny the integration bridge's flows took, in trace order."""
    out: list[Decision] = []
    for e in parsed.entries:
        if e.bridge != ctx.bridge or e.priority is None:
            continue
        table = pl.TABLE_NAMES.get(e.table)
        if table is None:
            continue
        pname = priority_name(table, e.priority)
        owner = owner_of(e.cookie, owners)
        if table in _ACL and pname in _ACL_DECISIONS:
            allow, kind, detail = _ACL_DECISIONS[pname]
            if pname == "invalid" and "ct_mark" in e.match:
                kind, detail = "connection_revoked", "the connection was revoked (ct_mark)"
            if kind == "security_group_rule" and (owner or {}).get("kind") != kind:
                continue  # a conjunctive clause, not the rule's own flow
            direction = _ACL[table]
            ofport = e.in_port if direction == "egress" else e.reg7
            out.append(Decision(allow, kind, direction, _port(ctx, ofport), ctx.chassis, table,
                                e.priority, e.cookie, owner, detail))
        elif pname == "miss" and pl.TABLES[table].miss_drops:
            kind, detail = {
                "classify": ("unclassified", "the in_port and tunnel key match no network"),
                "port_security": ("port_security", "no flow allows this source"),
                "l3_resolve": ("no_next_hop", "the route's next hop is no port of the network "
                                              "the router routes into"),
                "l2_lookup": ("no_l2_destination", "no port or tunnel for this MAC"),
                "output": ("no_output", "no delivery flow for the chosen port"),
                "snat": ("no_snat_flow", "routed towards the router's gateway, but no "
                                         "flow of the snat table takes it out"),
                "unnat": ("no_unnat_route", "come in through a router's gateway, but the "
                                            "address is on none of its subnets"),
            }.get(table, ("dropped", f"miss in {table}"))
            ofport = e.reg7 if table == "output" else e.in_port
            out.append(Decision(False, kind, None, _port(ctx, ofport), ctx.chassis, table,
                                e.priority, e.cookie, owner, detail))
        elif table == "l3" and pname in _L3_DROPS:
            kind, detail = _L3_DROPS[pname]
            out.append(Decision(False, kind, None, _port(ctx, e.in_port), ctx.chassis, table,
                                e.priority, e.cookie, owner, detail))
        elif table == "port_security" and pname == "drop":
            out.append(Decision(False, "port_security", "egress", _port(ctx, e.in_port),
                                ctx.chassis, table, e.priority, e.cookie, owner,
                                "source MAC or IP is not one of the port's own"))
        elif table == "port_security" and pname == "dhcp_server_drop":
            out.append(Decision(False, "dhcp_server", "egress", _port(ctx, e.in_port),
                                ctx.chassis, table, e.priority, e.cookie, owner,
                                DHCP_SERVER_DROP_DETAIL, name=pname))
    return out


DHCP_SERVER_DROP_DETAIL = (
    "guests may not act as DHCP servers: port security drops every DHCP server packet "
    "(UDP 67 -> 68) a guest sends, so no guest can hand out addresses to its neighbours "
    "(Loom itself answers DHCP on subnets with enable_dhcp)")


_L3_DROPS = {  # l3 priority name -> (kind, detail) of a router that drops the packet
    "router_mac": ("not_routed", "sent to a router's MAC, but no route of the router "
                                 "matches the destination (an external gateway needs a "
                                 "live gateway chassis and its upstream router's MAC)"),
    "ttl_expired": ("ttl_expired", "TTL 0 or 1 at a router: never forwarded"),
}


def _port(ctx: HopContext, ofport: Optional[int]) -> Optional[str]:
    return None if ofport is None else ctx.ports.get(ofport)


# ---------------------------------------------------------------- NAT
_CT_ACTION = re.compile(r"^ct\((?P<args>.*)\)$")
_NAT = re.compile(r"(?:^|[,(])nat(?:\((?P<spec>[^)]*)\))?(?=$|[,)])")
_CT_ZONE = re.compile(r"(?:^|,)zone=(?P<zone>[^,()]+)")
_NAT_KINDS = {"src": "snat", "dst": "dnat"}


@dataclass(frozen=True)
class NatStep:
    """A conntrack NAT one flow asked for: source or destination NAT to an address (a
    router's gateway address, a floating IP, a port forwarding's internal address), or
    a bare `nat` (un-NAT of a connection's replies, no new translation)."""

    kind: str  # snat | dnat | unnat
    address: Optional[str]  # what it translates to, as OVS prints it ("198.51.100.10")
    zone: Optional[str]  # the conntrack zone, as OVS prints it ("5" or a register)
    commit: bool
    chassis: str
    table: Optional[str]
    priority: int
    priority_name: Optional[str]
    cookie: Optional[int]
    owner: Optional[Mapping[str, Any]]
    action: str

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.kind, "address": self.address, "zone": self.zone,
                               "commit": self.commit, "owner": dict(self.owner or {}) or None,
                               "chassis": self.chassis, "table": self.table,
                               "priority": self.priority,
                               "priority_name": self.priority_name,
                               "cookie": None if self.cookie is None else f"{self.cookie:#x}",
                               "action": self.action}
        return out


def parse_nat(action: str) -> Optional[tuple[str, Optional[str], Optional[str], bool]]:
    """(kind, address, zone, commit) of a `ct(...)` action that NATs, else None.

    'ct(commit,zone=5,nat(src=198.51.100.10),table=45)' -> ('snat', '198.51.100.10',
    '5', True); 'ct(table=43,zone=5,nat)' -> ('unnat', None, '5', False).
    """
    m = _CT_ACTION.match(action.strip())
    if m is None:
        return None
    args = m["args"]
    n = _NAT.search(args)
    if n is None:
        return None
    kind, address = "unnat", None
    spec = n["spec"] or ""
    for part in spec.split(","):
        key, _, value = part.strip().partition("=")
        if key in _NAT_KINDS:
            kind, address = _NAT_KINDS[key], value or None
    z = _CT_ZONE.search(args)
    commit = ",commit," in f",{args},"
    return kind, address, z["zone"] if z else None, commit


def nat_steps(parsed: ParsedTrace, ctx: HopContext,
              owners: Mapping[tuple[str, int], Mapping[str, Any]]) -> list[NatStep]:
    """Every NAT the integration bridge's flows asked conntrack for, in trace order."""
    out: list[NatStep] = []
    for e in parsed.entries:
        if e.bridge != ctx.bridge or e.priority is None:
            continue
        table = pl.TABLE_NAMES.get(e.table)
        for action in e.actions:
            nat = parse_nat(action)
            if nat is None:
                continue
            kind, address, zone, commit = nat
            out.append(NatStep(kind, address, zone, commit, ctx.chassis, table, e.priority,
                               priority_name(table, e.priority, e) if table else None,
                               e.cookie, owner_of(e.cookie, owners), action.strip()))
    return out


# ---------------------------------------------------------------- punts
# (table, priority name) of the flows that send a guest's packet to the controller, and
# what Loom does with it there
_PUNTS = {
    ("port_security", "dhcp_punt"): (
        "dhcp", "a DHCP client packet of the port (its own MAC, UDP 68 -> 67) is sent to "
                "the controller and nowhere else (no other guest sees it): Loom's DHCP "
                "server answers it by a packet-out to the port (OFFER to a DISCOVER, ACK to "
                "a REQUEST for the port's address, NAK to a REQUEST for another)"),
}


@dataclass(frozen=True)
class PuntStep:
    """A packet a flow of the integration bridge sent to the controller: the flow, its
    owner, the port it came in on and the meter that rate-limits it."""

    kind: str  # dhcp | controller (a flow Loom does not name)
    port_id: Optional[str]  # the port it came in on
    chassis: str
    table: Optional[str]
    priority: int
    priority_name: Optional[str]
    cookie: Optional[int]
    owner: Optional[Mapping[str, Any]]
    meter: Optional[int]
    max_len: Optional[int]
    detail: str

    def meter_view(self) -> Optional[dict[str, Any]]:
        if self.meter is None:
            return None
        out: dict[str, Any] = {"id": self.meter}
        if self.meter == pl.PUNT_METER_UPSTREAM_ARP:
            out.update(rate_pps=pl.UPSTREAM_ARP_RATE_PPS,
                       burst_packets=pl.UPSTREAM_ARP_BURST_PACKETS)
        elif pl.is_punt_meter(self.meter):
            out.update(rate_pps=pl.PUNT_RATE_PPS, burst_packets=pl.PUNT_BURST_PACKETS,
                       ofport=self.meter - pl.PUNT_METER_BASE)
        return out

    def view(self) -> dict[str, Any]:
        meter = self.meter_view()
        if meter is None:
            limit = "unmetered"
        elif "rate_pps" in meter:
            limit = (f"through punt meter {self.meter} ({meter['rate_pps']} packets/s, burst "
                     f"{meter['burst_packets']}: beyond that the switch drops them)")
        else:
            limit = f"through meter {self.meter}"
        return {"kind": self.kind, "port": self.port_id, "chassis": self.chassis,
                "table": self.table, "priority": self.priority,
                "priority_name": self.priority_name,
                "cookie": None if self.cookie is None else f"{self.cookie:#x}",
                "owner": dict(self.owner or {}) or None, "meter": meter,
                "max_len": self.max_len,
                "detail": f"{self.detail}; {limit}"}


def punt_steps(parsed: ParsedTrace, ctx: HopContext,
               owners: Mapping[tuple[str, int], Mapping[str, Any]]) -> list[PuntStep]:
    """Every output to the controller the integration bridge's flows did, in trace order."""
    out: list[PuntStep] = []
    for e in parsed.entries:
        if e.bridge != ctx.bridge or e.priority is None or not e.controller:
            continue
        table = pl.TABLE_NAMES.get(e.table)
        pname = priority_name(table, e.priority, e) if table else None
        kind, detail = _PUNTS.get((table or "", pname or ""), (
            "controller", "sent to the controller by a flow Loom names no purpose for"))
        for c in e.controller:
            out.append(PuntStep(kind, _port(ctx, e.in_port), ctx.chassis, table, e.priority,
                                pname, e.cookie, owner_of(e.cookie, owners), c.meter,
                                c.max_len, detail))
    return out


def entry_view(e: Entry, owners: Mapping[tuple[str, int], Mapping[str, Any]],
               integration_bridge: str) -> dict[str, Any]:
    ours = e.bridge == integration_bridge
    name = pl.TABLE_NAMES.get(e.table) if ours else None
    out: dict[str, Any] = {
        "bridge": e.bridge,
        "table": e.table,
        "table_name": name,
        "priority": e.priority,
        "priority_name": priority_name(name, e.priority, e) if name else None,
        "cookie": None if e.cookie is None else f"{e.cookie:#x}",
        "owner": owner_of(e.cookie, owners) if ours else None,
        "match": e.match,
        "actions": list(e.actions),
        "ct_state": e.ct_state,
        "depth": e.depth,
    }
    if e.notes:
        out["notes"] = list(e.notes)
    if e.priority is None:
        out["no_match"] = True
    return out


@dataclass
class Hop:
    """One switch the packet crossed: what ran there, and where copies went."""

    ctx: HopContext
    flow: str
    in_port: int
    tun_id: Optional[int]
    parsed: ParsedTrace
    decisions: list[Decision]
    raw: str = ""
    nats: list[NatStep] = field(default_factory=list)  # nat_steps() of the hop
    punts: list[PuntStep] = field(default_factory=list)  # punt_steps() of the hop

    def _ours(self, o: Output) -> bool:
        """An output of the integration bridge's flows (not of a bridge behind a patch
        or a native tunnel, whose port numbers are another bridge's)."""
        return o.bridge in ("", self.ctx.bridge)

    def deliveries(self) -> list[tuple[int, Optional[str]]]:
        """(ofport, port id) of every local port a copy was output to."""
        return [(o.ofport, self.ctx.ports.get(o.ofport)) for o in self.parsed.outputs
                if not o.skipped and not o.failed and self._ours(o)
                and o.ofport not in self.ctx.tunnels and o.ofport not in self.ctx.providers]

    def tunnel_outputs(self) -> list[Output]:
        return [o for o in self.parsed.outputs
                if o.ofport in self.ctx.tunnels and not o.skipped and self._ours(o)]

    def exits(self) -> list[Output]:
        """The copies output to a provider patch: onto a physical network, out of Loom."""
        return [o for o in self.parsed.outputs
                if o.ofport in self.ctx.providers and not o.skipped and not o.failed
                and self._ours(o)]

    def view(self, owners: Mapping[tuple[str, int], Mapping[str, Any]],
             raw: bool = False) -> dict[str, Any]:
        in_remote = self.ctx.tunnels.get(self.in_port)
        outputs: list[dict[str, Any]] = []
        for o in self.parsed.outputs:
            if not self._ours(o):
                continue
            item: dict[str, Any] = {"ofport": o.ofport}
            tunnel = self.ctx.tunnels.get(o.ofport)
            if tunnel is not None:
                item.update(kind="tunnel", remote_chassis=tunnel[0], tunnel_type=tunnel[1],
                            tun_id=o.tun_id)
            elif o.ofport in self.ctx.providers:
                item.update(kind="provider", physnet=self.ctx.providers[o.ofport])
            else:
                item.update(kind="port", port=self.ctx.ports.get(o.ofport))
            if o.skipped:
                item["skipped"] = "output to the input port"
            if o.failed:
                item["failed"] = o.failed
            outputs.append(item)
        out: dict[str, Any] = {
            "chassis": self.ctx.chassis,
            "bridge": self.ctx.bridge,
            "datapath_id": f"{self.ctx.datapath_id:016x}",
            "in_port": ({"ofport": self.in_port, "kind": "tunnel", "remote_chassis": in_remote[0],
                         "tunnel_type": in_remote[1]} if in_remote else
                        {"ofport": self.in_port, "kind": "port",
                         "port": self.ctx.ports.get(self.in_port)}),
            "tun_id": self.tun_id,
            "flow": self.flow,
            "tables": [entry_view(e, owners, self.ctx.bridge) for e in self.parsed.entries],
            "conntrack": [{"recirculation": p.recirc_id, "ct_state": p.ct_state,
                           "defaulted": p.ct_defaulted,
                           **({"nat": {"from": p.nat_initial, "to": p.nat_modified}}
                              if p.nat_modified else {})}
                          for p in self.parsed.passes if p.recirc_id],
            "datapath_actions": self.parsed.datapath_actions,
            "outputs": outputs,
        }
        if self.nats:
            out["nat"] = [n.view() for n in self.nats]
        if self.punts:
            out["punts"] = [p.view() for p in self.punts]
        if raw:
            out["ofproto_trace"] = self.raw
            out["context"] = {
                "ports": {str(k): v for k, v in sorted(self.ctx.ports.items())},
                "tunnels": {str(k): list(v) for k, v in sorted(self.ctx.tunnels.items())},
                "providers": {str(k): v for k, v in sorted(self.ctx.providers.items())},
            }
        return out


# ---------------------------------------------------------------- the verdict
@dataclass(frozen=True)
class Endpoint:
    port_id: str
    network_id: str
    chassis: Optional[str]  # None: not bound
    ofport: Optional[int]


@dataclass(frozen=True)
class Outside:
    """A destination no port holds, beyond the external gateway of the router that
    serves the source's subnet: where the packet should leave Loom."""

    ip: str
    router_id: str
    router_name: str
    external_network_id: str
    enable_snat: bool = True

    def view(self) -> dict[str, Any]:
        return {"ip": self.ip, "router": {"id": self.router_id, "name": self.router_name},
                "external_network": self.external_network_id,
                "enable_snat": self.enable_snat}


def judge(hops: Sequence[Hop], src: Endpoint, dst: Optional[Endpoint],
          unreachable: Optional[dict[str, Any]] = None,
          outside: Optional[Outside] = None,
          broadcast: bool = False) -> tuple[str, dict[str, Any]]:
    """("allowed" | "exited" | "punted" | "dropped", reason) for a trace that ran
    through `hops`.

    Allowed means a copy was output to the destination port on its chassis; the
    reason is then the decision that let it into that port (normally the ingress
    security-group rule); towards `outside`, a port the router DNATed the packet to
    (hairpin to a floating IP), with the NATs in "nat". Exited (`outside` given: no
    port holds the address, a router's gateway leads to it) means a copy was output
    to a provider patch, onto the external network; the reason names the router, the
    chassis and the NAT done on the way (`exit_reason`). Punted means a flow sent it to
    the controller and no copy went anywhere else (a guest's DHCP request, to Loom's
    DHCP server); the reason names the flow, its owner and the meter (`PuntStep`).
    `broadcast` (to 255.255.255.255, no destination port): allowed when a copy reached
    any other port (kind "flooded"). Dropped names the first decision that stopped it.
    """
    if unreachable is not None:
        return "dropped", unreachable
    punt = _punted(hops)
    if punt is not None:
        return "punted", punt
    if outside is not None:
        return _judge_outside(hops, src, outside)
    if broadcast:
        return _judge_broadcast(hops, src)
    if dst is None:
        return "dropped", {"kind": "unknown_destination"}
    for hop in hops:
        if hop.ctx.chassis != dst.chassis:
            continue
        if any(ofport == dst.ofport for ofport, _ in hop.deliveries()):
            ingress = _last(hop.decisions, "ingress", dst.port_id, allow=True)
            egress = _last(hops[0].decisions, "egress", src.port_id, allow=True)
            chosen = ingress or egress
            if chosen is not None:
                return "allowed", chosen.view()
            return "allowed", {"kind": "delivered", "port": dst.port_id}
    first = hops[0].decisions if hops else []
    for d in first:
        if not d.allow and d.port_id == src.port_id and d.direction in ("egress", None):
            return "dropped", d.view()
    for hop in hops:
        for d in hop.decisions:
            if not d.allow and d.direction == "ingress" and d.port_id == dst.port_id:
                return "dropped", d.view()
    if dst.network_id != src.network_id:
        return "dropped", {"kind": "isolation", "port": dst.port_id,
                           "network": dst.network_id, "source_network": src.network_id,
                           "detail": "the destination is on another network; no router joins "
                                     "them, so no flow ever delivers to it"}
    if dst.chassis is None:
        return "dropped", {"kind": "destination_not_bound", "port": dst.port_id,
                           "detail": "the destination port is bound to no chassis"}
    for hop in hops:
        for o in hop.parsed.outputs:
            if o.failed:
                return "dropped", {"kind": "tunnel_failure", "chassis": hop.ctx.chassis,
                                   "ofport": o.ofport, "detail": o.failed}
    for hop in reversed(hops):
        for d in reversed(hop.decisions):
            if not d.allow:
                return "dropped", d.view()
    return "dropped", {"kind": "not_delivered", "port": dst.port_id,
                       "detail": "no flow output the packet to the destination port"}


def _punted(hops: Sequence[Hop]) -> Optional[dict[str, Any]]:
    """The first punt's reason, when the packet went to the controller and nowhere else
    (no port, tunnel or provider patch got a copy)."""
    punts = [p for h in hops for p in h.punts]
    if not punts or any(h.deliveries() or h.tunnel_outputs() or h.exits() for h in hops):
        return None
    return punts[0].view()


def _judge_broadcast(hops: Sequence[Hop], src: Endpoint) -> tuple[str, dict[str, Any]]:
    reached = [{"port": pid, "chassis": h.ctx.chassis, "ofport": ofport}
               for h in hops for ofport, pid in h.deliveries() if pid != src.port_id]
    if reached:
        return "allowed", {"kind": "flooded", "port": src.port_id, "reached": reached,
                           "detail": "a broadcast: the network floods it, and a copy was "
                                     "output to each port in `reached` (their ingress "
                                     "security groups let it in)"}
    dropped = _dropped_on_the_way(hops, src)
    if dropped is not None:
        return "dropped", dropped
    return "dropped", {"kind": "not_delivered", "port": src.port_id,
                       "detail": "no flow output the broadcast to any other port"}


def _dropped_on_the_way(hops: Sequence[Hop], src: Endpoint) -> Optional[dict[str, Any]]:
    """Why a packet that reached no port (a broadcast, or one bound outside) stopped: the
    source's own egress drop first, then a tunnel that failed, then the last drop seen."""
    first = hops[0].decisions if hops else []
    for d in first:
        if not d.allow and d.port_id == src.port_id and d.direction in ("egress", None):
            return d.view()
    for hop in hops:
        for o in hop.parsed.outputs:
            if o.failed and hop._ours(o):
                return {"kind": "tunnel_failure", "chassis": hop.ctx.chassis,
                        "ofport": o.ofport, "detail": o.failed}
    for hop in reversed(hops):
        for d in reversed(hop.decisions):
            if not d.allow:
                return d.view()
    return None


def _judge_outside(hops: Sequence[Hop], src: Endpoint, outside: Outside
                   ) -> tuple[str, dict[str, Any]]:
    for hop in hops:
        exits = hop.exits()
        if exits:
            return "exited", exit_reason(hop, exits[0], hops, src, outside)
    for hop in hops:  # hairpin: to a floating IP the router DNATs back inside
        for _, port_id in hop.deliveries():
            if port_id is None:
                continue
            ingress = _last(hop.decisions, "ingress", port_id, allow=True)
            reason = ingress.view() if ingress is not None else {
                "kind": "delivered", "port": port_id, "chassis": hop.ctx.chassis}
            nats = [n.view() for h in hops for n in h.nats if n.kind in ("snat", "dnat")]
            return "allowed", {**reason, "router": {"id": outside.router_id,
                                                    "name": outside.router_name},
                               "nat": nats,
                               "detail": "hairpin: the router NATs the packet back inside, "
                                         "to a port it delivers to"}
    dropped = _dropped_on_the_way(hops, src)
    if dropped is not None:
        return "dropped", dropped
    return "dropped", {
        "kind": "not_exited", **outside.view(),
        "detail": f"no flow output the packet to the external network of router "
                  f"{_name(outside.router_name, outside.router_id)}: is one of the chassis "
                  "mapping its physical network live (the gateway chassis), and the "
                  "upstream router's MAC learnt there?"}


def _name(name: Optional[str], object_id: Optional[str]) -> str:
    return f"{name} ({object_id})" if name else str(object_id)


def exit_reason(hop: Hop, out: Output, hops: Sequence[Hop], src: Endpoint,
                outside: Outside) -> dict[str, Any]:
    """Why and how the packet left: the router, the provider patch, and the source NAT
    the flows did on the way (the last SNAT before the output, by the router for its
    gateway address, or by a floating IP), with the egress rule that let it go."""
    snat = next((n for n in reversed(hop.nats) if n.kind == "snat"), None)
    nat_owner = dict(snat.owner or {}) if snat is not None else {}
    router: dict[str, Any] = {"id": outside.router_id, "name": outside.router_name}
    if nat_owner.get("kind") == "router" and nat_owner.get("id"):
        router = {"id": nat_owner["id"], "name": nat_owner.get("name")}
    physnet = hop.ctx.providers.get(out.ofport)
    where = (f"leaves chassis {hop.ctx.chassis} through the provider patch (ofport "
             f"{out.ofport}) to physical network {physnet}, external network "
             f"{outside.external_network_id}")
    if snat is None:
        kind = "routed"
        what = (f"routed by router {_name(router['name'], router['id'])} without source "
                f"NAT: it leaves with its own address")
    elif nat_owner.get("kind") == "floating_ip":
        kind = "floating_ip"
        what = (f"SNAT to floating IP {snat.address} ({nat_owner.get('id')}) on router "
                f"{_name(router['name'], router['id'])}")
    else:
        kind = "snat"
        what = f"SNAT by router {_name(router['name'], router['id'])} to {snat.address}"
    reason: dict[str, Any] = {
        "kind": kind, "router": router,
        "nat": None if snat is None else snat.view(),
        "source_ip": snat.address if snat is not None else None,
        "external_network": outside.external_network_id, "physnet": physnet,
        "chassis": hop.ctx.chassis, "ofport": out.ofport,
        "detail": f"{what}; {where}",
    }
    leaves_as = _addresses(hop.parsed, out.pass_index)
    if leaves_as:
        reason["leaves_as"] = leaves_as
    if snat is not None and nat_owner:
        reason["owner"] = nat_owner
    egress = _last(hops[0].decisions if hops else [], "egress", src.port_id, allow=True)
    if egress is not None:
        reason["egress"] = egress.view()
    return reason


_ADDRESS_FIELDS = (("nw_src", "src_ip"), ("ipv6_src", "src_ip"), ("nw_dst", "dst_ip"),
                   ("ipv6_dst", "dst_ip"), ("tp_src", "src_port"), ("tp_dst", "dst_port"))


def _addresses(parsed: ParsedTrace, pass_index: int) -> dict[str, str]:
    """The packet's addresses at the end of a pass, NAT as OVS simulated it included
    (ofproto/trace rewrites the flow of the recirculation after a ct(nat))."""
    if not 0 <= pass_index < len(parsed.passes):
        return {}
    p = parsed.passes[pass_index]
    fields = parse_flow_fields(p.final_flow) if p.final_flow else p.flow
    return {name: fields[key] for key, name in _ADDRESS_FIELDS if fields.get(key)}


def _last(decisions: Iterable[Decision], direction: str, port_id: str,
          allow: bool) -> Optional[Decision]:
    found = None
    for d in decisions:
        if d.direction == direction and d.port_id == port_id and d.allow == allow:
            found = d
    return found


def acl_summary(hops: Sequence[Hop], src: Endpoint, dst: Optional[Endpoint]
                ) -> list[dict[str, Any]]:
    """The ACL decisions about the source (egress) and the destination (ingress)."""
    out = []
    for hop in hops:
        for d in hop.decisions:
            if (d.direction == "egress" and d.port_id == src.port_id) or (
                    dst is not None and d.direction == "ingress" and d.port_id == dst.port_id):
                out.append({"allow": d.allow, **d.view()})
    return out
