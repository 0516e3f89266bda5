"""GET /v1/trace: follow one packet through the flows installed on the real bridges.

The tracer resolves the query against the intent (source port, its MAC and IP;
the destination port that holds `dst_ip`) and the topology (where each is bound),
runs `ofproto/trace` on the source chassis' integration bridge, and, for every copy
that leaves through a tunnel, again on the remote chassis with in_port = its tunnel
port towards the source chassis, tun_id = the key the copy was sent with, and the
packet as it left (a router rewrote its MACs and TTL, a NAT its addresses). Every
flow hit is mapped back to its owner through its cookie; the verdict and its
reason come from what the installed flows did, never from the intent alone.

An address no port holds, off the source's own subnets, is *outside* when the
router serving the source's subnet has an external gateway: the packet is then
sent to that router's MAC (the subnet's gateway port), followed over the tunnel to
the router's gateway chassis when the source sits elsewhere, and through conntrack
(--ct-next: the recirculation after each ct(), NAT included).

A DHCPv4 packet (UDP 68 -> 67 from a client, 67 -> 68 from a server; the other port
is the default when only one is given) may go to 255.255.255.255: it is then traced
as the broadcast a guest sends (to ff:ff:ff:ff:ff:ff; from 0.0.0.0 when the client
gives no src_ip, as a DISCOVER does), and the answer carries "dhcp": whether Loom
serves the port's DHCP and the lease its reply would carry (controller/dhcp.py
`lease_for`: address, mask, router, DNS, routes, MTU, lease time). The verdicts:

    allowed   a copy was output to the destination port; the reason is the decision
              that let it in (normally the ingress security-group rule); to a floating
              IP from inside, the port the router hairpins it to (the NATs in "nat")
    exited    (outside only) a copy was output to a provider patch port, onto the
              external network; the reason names the router, the gateway chassis and
              patch, and the source NAT on the way with the flow's owner: the router
              (SNAT to its gateway address, kind "snat") or a floating IP (kind
              "floating_ip"); kind "routed" when the router does no SNAT
    punted    a flow sent it to the controller and nowhere else: a guest's DHCP request,
              punted by port security's `dhcp_punt` flow of the port through its punt
              meter; the reason names the flow, its owner (the port) and the meter, and
              "reply" what Loom's DHCP server answers (the lease; null when the intent
              gives the port nothing to lease and the request is ignored)
    allowed   (to 255.255.255.255) also: a copy reached another port (kind "flooded")
    dropped   the first decision that stopped it (a security-group default deny, port
              security, a guest's DHCP server reply (kind "dhcp_server": port
              security's `dhcp_server_drop`), a table miss, a router with no route, ...)

ofproto/trace runs no conntrack: the NAT is the ct(nat(...)) action a flow asked for
(its cookie names the rule), and the addresses OVS rewrites in the recirculation to
simulate it ("leaves_as": what the outside host would see).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any, Optional, Protocol

from controller import dhcp
from controller.compiler.ports import (
    DHCP_CLIENT_PORT,
    DHCP_SERVER_PORT,
    link_local_of,
    serves_dhcp,
)
from controller.explain.runner import Runner, TraceUnavailable, TraceUnsupported
from controller.explain.trace import (
    CT_ASSUMPTIONS,
    DEFAULT_SRC_PORT,
    PROTOCOLS,
    Endpoint,
    Hop,
    HopContext,
    Outside,
    Packet,
    TraceParseError,
    acl_summary,
    decisions_of,
    judge,
    nat_steps,
    owner_index,
    packet_after,
    parse_trace,
    punt_steps,
    trace_flow,
)
from controller.intent import Intent, Port, Router
from controller.topology import Topology, TopologyView

MAX_HOPS = 16  # switches one trace runs on; a copy never crosses more tunnels than that
QUERY_PARAMS = ("port", "dst_ip", "protocol", "dst_port", "src_port", "src_ip", "ct_state", "raw")
TRUE = ("1", "true", "yes", "on")
LIMITED_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"


class TraceError(Exception):
    """A trace that cannot be answered; carries the HTTP status and Neutron error type."""

    def __init__(self, message: str, status: int = 400, type: str = "HTTPBadRequest",
                 detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.detail = detail


class IntentSource(Protocol):
    def latest(self) -> Intent: ...


class Tracer:
    """What the REST layer calls for /v1/trace: `Tracer(store, topology).trace_query(...)`."""

    def __init__(self, store: IntentSource, topology: Topology,
                 runner: Optional[Runner] = None,
                 dhcp_lease_seconds: Optional[int] = None) -> None:
        self.store = store
        self.topology = topology
        self.runner = runner or Runner()
        # what the engine's DHCP server gives (launcher --dhcp-lease-time)
        self.dhcp_lease_seconds = dhcp_lease_seconds or dhcp.DEFAULT_LEASE_SECONDS

    # ---- the REST entry point
    def trace_query(self, params: Mapping[str, str]) -> dict[str, Any]:
        unknown = sorted(set(params) - set(QUERY_PARAMS))
        if unknown:
            raise TraceError(f"Invalid input for operation: unknown query parameter(s) "
                             f"{', '.join(unknown)}; accepted: {', '.join(QUERY_PARAMS)}",
                             type="InvalidInput")
        port = params.get("port")
        dst_ip = params.get("dst_ip")
        if not port or not dst_ip:
            raise TraceError("Invalid input for operation: port and dst_ip are required",
                             type="InvalidInput")
        return self.trace(
            port, dst_ip, protocol=params.get("protocol") or "icmp",
            dst_port=_tp_port(params.get("dst_port"), "dst_port"),
            src_port=_tp_port(params.get("src_port"), "src_port"),
            src_ip=params.get("src_ip") or None,
            ct_state=params.get("ct_state") or "new",
            raw=(params.get("raw") or "").lower() in TRUE)

    # ---- the trace
    def trace(self, port_id: str, dst_ip: str, protocol: str = "icmp",
              dst_port: Optional[int] = None, src_port: Optional[int] = None,
              src_ip: Optional[str] = None, ct_state: str = "new",
              raw: bool = False) -> dict[str, Any]:
        intent = self.store.latest()
        topo = self.topology.view()
        port = intent.ports.get(port_id)
        if port is None:
            raise TraceError(f"Port {port_id} could not be found.", 404, "PortNotFound")
        dst_addr = _address(dst_ip, "dst_ip")
        protocol = _protocol(protocol, dst_addr.version)
        if ct_state not in CT_ASSUMPTIONS:
            raise TraceError(f"Invalid input for operation: ct_state must be one of "
                             f"{', '.join(CT_ASSUMPTIONS)}", type="InvalidInput")
        if protocol in ("tcp", "udp"):
            if dst_port is None:
                raise TraceError(f"Invalid input for operation: dst_port is required for "
                                 f"{protocol}", type="InvalidInput")
            src_port = src_port or _default_src_port(protocol, dst_port, dst_addr.version)
        elif dst_port is not None or src_port is not None:
            raise TraceError(f"Invalid input for operation: {protocol} has no ports",
                             type="InvalidInput")
        role = dhcp_role(protocol, src_port, dst_port, dst_addr.version)
        # DHCP to the limited broadcast: what a client sends before it has an address,
        # and what a server (a rogue guest) answers it with
        broadcast = role is not None and dst_addr == LIMITED_BROADCAST
        if broadcast and not src_ip and role == "client":
            src_ip = "0.0.0.0"  # a DISCOVER (or a REQUEST before the address is bound)
        source_ip = self._source_ip(port, dst_addr, src_ip)
        dst = None if broadcast else _destination(intent, port, str(dst_addr))
        outside = None if dst is not None or broadcast else \
            _outside(intent, port, source_ip, dst_addr)
        dst_mac = dst.mac_address if dst is not None else BROADCAST_MAC
        if (dst is not None and dst.network_id != port.network_id) or outside is not None:
            # another network: the guest sends to its gateway, a router's MAC if it has one
            dst_mac = gateway_mac(intent, port, source_ip) or dst_mac
        packet = Packet(protocol, port.mac_address, dst_mac, source_ip, str(dst_addr),
                        src_port, dst_port)
        binding = topo.bindings.get(port.id)
        if binding is None:
            raise TraceError(f"Port {port.id} is not bound to any chassis: there is no switch "
                             "to trace on.", 409, "PortNotBound")
        src = Endpoint(port.id, port.network_id, binding.chassis, binding.ofport)
        dst_end = None
        if dst is not None:
            b = topo.bindings.get(dst.id)
            dst_end = Endpoint(dst.id, dst.network_id, b.chassis if b else None,
                               b.ofport if b else None)
        ct_next, meaning = CT_ASSUMPTIONS[ct_state]
        hops: list[Hop] = []
        owners = owner_index(intent)
        unreachable = None
        if dst is None and outside is None and not broadcast:
            unreachable = self._no_destination(intent, port, dst_addr)
        else:
            hops = self._follow(topo, packet, binding.datapath_id, binding.ofport, ct_next,
                                owners)
        verdict, reason = judge(hops, src, dst_end, unreachable, outside, broadcast)
        lease = dhcp.lease_for(port, intent, self.dhcp_lease_seconds) \
            if role == "client" else None
        if verdict == "punted" and reason.get("kind") == "dhcp":
            reason = _dhcp_punt_reason(reason, port, lease)
        answer: dict[str, Any] = {
            "verdict": verdict,
            "reason": reason,
            "packet": packet.view(),
            "source": {"port": port.id, "network": port.network_id,
                       "chassis": binding.chassis, "ofport": binding.ofport},
            "destination": None if dst_end is None else {
                "port": dst_end.port_id, "network": dst_end.network_id,
                "chassis": dst_end.chassis, "ofport": dst_end.ofport},
            "conntrack": {"assumed": ct_next, "meaning": meaning},
            "acl": acl_summary(hops, src, dst_end),
            "delivered_to": [{"chassis": h.ctx.chassis, "ofport": ofport, "port": pid}
                             for h in hops for ofport, pid in h.deliveries()],
            "hops": [h.view(owners, raw) for h in hops],
            "intent_generation": intent.generation,
        }
        if outside is not None:
            answer["external"] = _external_view(outside, hops)
        if role is not None:
            answer["dhcp"] = _dhcp_view(role, intent, port, lease, verdict,
                                        unreachable is not None, dst_addr)
        return answer

    # ---- helpers
    def _source_ip(self, port: Port, dst: Any, src_ip: Optional[str]) -> str:
        if src_ip:
            addr = _address(src_ip, "src_ip")
            if addr.version != dst.version:
                raise TraceError("Invalid input for operation: src_ip and dst_ip are of "
                                 "different IP versions", type="InvalidInput")
            return str(addr)
        for fip in port.fixed_ips:
            if ipaddress.ip_address(fip.ip_address).version == dst.version:
                return fip.ip_address
        if dst.version == 6:
            return link_local_of(port.mac_address)
        raise TraceError(f"Invalid input for operation: port {port.id} has no IPv4 address "
                         "to send from (give src_ip)", type="InvalidInput")

    def _no_destination(self, intent: Intent, port: Port, dst: Any) -> dict[str, Any]:
        for subnet in intent.subnets_of(port.network_id):
            if dst in ipaddress.ip_network(subnet.cidr, strict=False):
                return {"kind": "unknown_destination", "ip": str(dst), "subnet": subnet.id,
                        "detail": "no port holds this address: its ARP/ND is never answered, "
                                  "so the guest sends nothing"}
        return {"kind": "no_route", "ip": str(dst), "network": port.network_id,
                "detail": "the address is on none of the network's subnets and no router "
                          "serves the network"}

    def _context(self, topo: TopologyView, dpid: int) -> HopContext:
        switch = topo.switches.get(dpid)
        if switch is None:
            raise TraceError(f"Switch {dpid:016x} is not known from any chassis.", 503,
                             "TraceUnavailable")
        return HopContext(
            chassis=switch.chassis, bridge=switch.bridge, datapath_id=dpid,
            ports={b.ofport: b.port_id for b in topo.bindings_on(dpid)},
            tunnels={t.ofport: (t.remote_chassis, t.tunnel_type) for t in topo.tunnels_on(dpid)},
            providers={ofport: physnet for (here, physnet), ofport in topo.provider_ports.items()
                       if here == dpid})

    def _remote_of(self, chassis: str) -> str:
        for state in self.topology.chassis_states():
            if state.name == chassis:
                return state.remote
        raise TraceError(f"Chassis {chassis} is not connected.", 503, "TraceUnavailable")

    def _run(self, ctx: HopContext, flow: str, ct_next: str) -> str:
        remote = self._remote_of(ctx.chassis)
        try:
            socket = self.runner.socket_for(remote)
            return self.runner.trace(socket, ctx.bridge, flow, ct_next)
        except TraceUnsupported as exc:
            raise TraceError(
                f"Cannot trace on chassis {ctx.chassis}: {exc}", 501, "TraceNotSupported",
                detail="Tracing runs ovs-appctl ofproto/trace, which needs ovs-vswitchd's "
                       "local control socket; chassis reached over tcp: or ssl: have none "
                       "the controller can open.") from None
        except TraceUnavailable as exc:
            raise TraceError(f"Cannot trace on chassis {ctx.chassis}: {exc}", 503,
                             "TraceUnavailable") from None

    def _follow(self, topo: TopologyView, packet: Packet, dpid: int, in_port: int,
                ct_next: str, owners: Mapping[tuple[str, int], Mapping[str, Any]]
                ) -> list[Hop]:
        """The source hop, then one hop per remote chassis a copy was tunnelled to (the
        source's own chassis again too: a packet hairpinned on a router's gateway
        chassis comes back through the tunnel it left by)."""
        hops: list[Hop] = []
        queue: list[tuple[int, int, Optional[int], Packet]] = [(dpid, in_port, None, packet)]
        seen: set[tuple[int, int, Optional[int]]] = set()
        while queue and len(hops) < MAX_HOPS:
            here, port, tun_id, sent = queue.pop(0)
            if (here, port, tun_id) in seen:
                continue
            seen.add((here, port, tun_id))
            ctx = self._context(topo, here)
            flow = trace_flow(sent, port, tun_id)
            text = self._run(ctx, flow, ct_next)
            try:
                parsed = parse_trace(text)
            except TraceParseError as exc:
                raise TraceError(f"Unexpected ofproto/trace output on {ctx.chassis}: {exc}",
                                 500, "TraceParseError", detail=text[:2000]) from None
            hop = Hop(ctx, flow, port, tun_id, parsed, decisions_of(parsed, ctx, owners), text,
                      nat_steps(parsed, ctx, owners), punt_steps(parsed, ctx, owners))
            hops.append(hop)
            for out in hop.tunnel_outputs():
                if out.failed:
                    continue
                remote, ttype = ctx.tunnels[out.ofport]
                view = topo.chassis.get(remote)
                if view is None or view.datapath_id is None:
                    continue
                back = topo.tunnels.get((view.datapath_id, ctx.chassis, ttype))
                if back is None:
                    continue  # the remote has no tunnel back to us yet: nothing would classify
                queue.append((view.datapath_id, back.ofport, out.tun_id,
                              packet_after(sent, parsed, out.pass_index)))
        return hops


def dhcp_role(protocol: str, src_port: Optional[int], dst_port: Optional[int],
              version: int) -> Optional[str]:
    """"client" (UDP 68 -> 67), "server" (UDP 67 -> 68) for a DHCPv4 packet, else None."""
    if protocol != "udp" or version != 4:
        return None
    return {(DHCP_CLIENT_PORT, DHCP_SERVER_PORT): "client",
            (DHCP_SERVER_PORT, DHCP_CLIENT_PORT): "server"}.get((src_port or 0, dst_port or 0))


def _default_src_port(protocol: str, dst_port: int, version: int) -> int:
    """A DHCPv4 packet's source port is fixed by the protocol: 68 to the server's 67,
    67 to the client's 68; anything else comes from an ephemeral port."""
    if protocol == "udp" and version == 4:
        if dst_port == DHCP_SERVER_PORT:
            return DHCP_CLIENT_PORT
        if dst_port == DHCP_CLIENT_PORT:
            return DHCP_SERVER_PORT
    return DEFAULT_SRC_PORT


def lease_view(lease: dhcp.Lease, port: Port) -> dict[str, Any]:
    """What Loom's DHCP reply to the port carries (controller/dhcp.py `_reply`)."""
    subnet = next((f.subnet_id for f in port.fixed_ips
                   if _same_ip(f.ip_address, str(lease.address))), None)
    return {
        "address": str(lease.address), "subnet": subnet, "cidr": str(lease.network),
        "subnet_mask": str(lease.network.netmask),
        "broadcast_address": str(lease.network.broadcast_address),
        "router": None if lease.router is None else str(lease.router),
        "dns_nameservers": [str(a) for a in lease.dns],
        "host_routes": [{"destination": str(d), "nexthop": str(n)} for d, n in lease.routes],
        "mtu": lease.mtu,
        "server_identifier": str(lease.server), "server_mac": dhcp.SERVER_MAC,
        "lease_seconds": lease.seconds, "renewal_seconds": lease.seconds // 2,
        "rebinding_seconds": lease.seconds * 7 // 8,
    }


def _dhcp_punt_reason(reason: dict[str, Any], port: Port, lease: Optional[dhcp.Lease]
                      ) -> dict[str, Any]:
    """The punt of a DHCP request, with what Loom's DHCP server does with it."""
    out = {**reason, "answered_by": "Loom's DHCP server (controller/dhcp.py)",
           "answered": lease is not None,
           "reply": None if lease is None else lease_view(lease, port)}
    if lease is None:
        out["detail"] = (f"{reason['detail']}; but the intent gives port {port.id} no IPv4 "
                         "address on a subnet with enable_dhcp, so the controller ignores "
                         "the request (loom_dhcp_ignored_total): the switch's flows are "
                         "behind the intent")
    else:
        router = f", router {lease.router}" if lease.router is not None else ""
        dns = f", DNS {', '.join(map(str, lease.dns))}" if lease.dns else ""
        out["detail"] = (f"{reason['detail']}; the reply gives {lease.address}/"
                         f"{lease.network.prefixlen}{router}{dns}, MTU {lease.mtu}, for "
                         f"{lease.seconds} s, from server {lease.server}")
    return out


def _dhcp_view(role: str, intent: Intent, port: Port, lease: Optional[dhcp.Lease],
               verdict: str, unreachable: bool, dst: Any) -> dict[str, Any]:
    """What the intent says of the port's DHCP, beside what the flows did."""
    served = [f.subnet_id for f in port.fixed_ips
              if serves_dhcp(intent.subnets.get(f.subnet_id))]
    out: dict[str, Any] = {"role": role, "served": bool(served), "subnets": served}
    if role == "server":
        out["detail"] = ("a DHCP server's packet (UDP 67 -> 68) sent by a guest: port "
                         "security drops it (dhcp_server_drop)" if port.port_security_enabled
                         else "a DHCP server's packet (UDP 67 -> 68) sent by a guest whose "
                         "port security is off: nothing drops it at its port (the "
                         "receivers' security groups still apply)")
        return out
    out["lease"] = None if lease is None else lease_view(lease, port)
    if not served:
        out["detail"] = ("Loom does not answer this port's DHCP: none of its IPv4 subnets "
                         "has enable_dhcp; the guest needs a static address")
    elif unreachable and lease is not None and dst == lease.server:
        out["detail"] = (f"the DHCP server identifier {lease.server} is held by no port (no "
                         "router interface on the subnet): nothing answers the guest's ARP "
                         "for it, so a unicast renew is never sent; the client rebinds by "
                         "broadcast later (trace dst_ip=255.255.255.255 for that)")
    elif verdict != "punted" and not unreachable:
        out["detail"] = ("Loom serves this port's DHCP, but no dhcp_punt flow sent the "
                         "request to the controller: the port's flows are not (yet) "
                         "installed on its switch")
    return out


# ports that hold an address on an external network but are no guest: a packet to
# them goes out through a router's gateway (onto the physical network) like any
# packet to the outside
_EXTERNAL_OWNERS = ("network:router_gateway", "network:floatingip")


def _external_view(outside: Outside, hops: list[Hop]) -> dict[str, Any]:
    """Where an outside destination is, and where the trace saw the packet leave."""
    out: dict[str, Any] = {**outside.view(), "chassis": None, "ofport": None, "physnet": None}
    for hop in hops:
        for o in hop.exits():
            out.update(chassis=hop.ctx.chassis, ofport=o.ofport,
                       physnet=hop.ctx.providers.get(o.ofport))
            return out
    return out


def _destination(intent: Intent, source: Port, ip: str) -> Optional[Port]:
    """The port holding `ip`, preferring the source's own network (addresses overlap),
    then the networks a router joins to the source's, then any network with a subnet
    holding `ip`. Only those networks' ports are looked at, never every port: a trace
    costs what the path costs, at 10,000 ports too. A router's gateway port and a
    floating IP's port are no destination (the address is outside, `_outside`)."""
    def holder(network_id: str) -> Optional[Port]:
        return next((p for p in intent.ports_on_network(network_id) if p.id != source.id
                     and p.device_owner not in _EXTERNAL_OWNERS
                     and any(_same_ip(f.ip_address, ip) for f in p.fixed_ips)), None)

    here = holder(source.network_id)
    if here is not None:
        return here
    for network_id in sorted(routed_networks(intent, source.network_id)):
        routed = holder(network_id)
        if routed is not None:
            return routed
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    for network_id in sorted({s.network_id for s in intent.subnets.values()
                              if _holds(s.cidr, address)}):
        other = holder(network_id)
        if other is not None:
            return other
    return None


def _outside(intent: Intent, source: Port, source_ip: str, dst: Any) -> Optional[Outside]:
    """The way out towards `dst`, an address no port holds: the router with an
    external gateway and an interface on the subnet of the source's address, when
    `dst` is on none of the subnets that router (or the source's network) joins. None:
    no such router, or the address is inside (then nothing answers its ARP)."""
    if dst.version != 4:
        return None  # the external gateway is IPv4 only (gateway.py)
    own = {f.subnet_id for f in source.fixed_ips if _same_ip(f.ip_address, source_ip)}
    if not own:  # a given src_ip: the subnet holding it
        address = ipaddress.ip_address(source_ip)
        own = {s.id for s in intent.subnets_of(source.network_id) if _holds(s.cidr, address)}
    if any(_holds(s.cidr, dst) for s in intent.subnets_of(source.network_id)):
        return None
    routers: list[Router] = []
    for ri in sorted(intent.router_interfaces.values(), key=lambda r: r.id):
        router = intent.routers.get(ri.router_id)
        if ri.subnet_id in own and router is not None and router not in routers:
            routers.append(router)
    for router in routers:
        if router.external_network_id is None or router.gateway_port_id is None:
            continue
        inside = [intent.subnets.get(ri.subnet_id) for ri in intent.router_interfaces.values()
                  if ri.router_id == router.id]
        if any(s is not None and _holds(s.cidr, dst) for s in inside):
            return None  # one of the router's own subnets: an unknown address there
        return Outside(str(dst), router.id, router.name, router.external_network_id,
                       router.enable_snat)
    return None


def _holds(cidr: str, address: Any) -> bool:
    try:
        return address in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


def routed_networks(intent: Intent, network_id: str) -> set[str]:
    """The networks of the routers with an interface on `network_id`: the routers are
    the device of the network's router ports; their other networks, those of their
    interfaces (routers and interfaces are few; ports are not looked through)."""
    routers = {p.device_id for p in intent.ports_on_network(network_id)
               if p.device_owner == "network:router_interface" and p.device_id}
    if not routers:
        return set()
    out = set()
    for ri in intent.router_interfaces.values():
        if ri.router_id in routers:
            port = intent.ports.get(ri.port_id)
            if port is not None:
                out.add(port.network_id)
    return out


def gateway_mac(intent: Intent, source: Port, source_ip: str) -> Optional[str]:
    """The MAC of the router port holding the gateway of the source address's subnet."""
    gateways = set()
    for subnet in intent.subnets_of(source.network_id):
        if subnet.gateway_ip and any(f.subnet_id == subnet.id and _same_ip(f.ip_address,
                                                                            source_ip)
                                     for f in source.fixed_ips):
            gateways.add(subnet.gateway_ip)
    for p in intent.ports_on_network(source.network_id):
        if p.device_owner.startswith("network:router") and \
                any(_same_ip(f.ip_address, g) for f in p.fixed_ips for g in gateways):
            return p.mac_address
    return None


def _same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


def _address(text: str, name: str) -> Any:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise TraceError(f"Invalid input for operation: {name} '{text}' is not an IP address",
                         type="InvalidInput") from None


def _protocol(protocol: str, version: int) -> str:
    proto = protocol.lower()
    if proto == "ipv6-icmp":
        proto = "icmpv6"
    if proto not in PROTOCOLS:
        raise TraceError(f"Invalid input for operation: protocol must be one of "
                         f"{', '.join(PROTOCOLS)}", type="InvalidInput")
    if proto == "icmp" and version == 6:
        return "icmpv6"  # as Neutron does for IPv6 rules
    if proto == "icmpv6" and version == 4:
        raise TraceError("Invalid input for operation: icmpv6 towards an IPv4 address",
                         type="InvalidInput")
    return proto


def _tp_port(text: Optional[str], name: str) -> Optional[int]:
    if text is None or text == "":
        return None
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise TraceError(f"Invalid input for operation: {name} must be 1-65535, got '{text}'",
                         type="InvalidInput")
    return int(text)
