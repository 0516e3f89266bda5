"""DHCPv4 answered by Loom itself, from intent, statelessly (as ovn-controller does).

A guest port on a subnet with `enable_dhcp` has a flow in `port_security` that sends
its DHCP client packets (its own MAC, UDP 68 -> 67) to the controller through the
port's punt meter (compiler/ports.py), and nowhere else: no other guest ever sees
them, so a rogue DHCP server on the network is never asked (and its replies are
dropped by port security anyway). The packet-in carries the port's cookie; the
engine turns it into the port, and `answer` here turns (request, the port's lease)
into the reply, which goes back as a packet-out on the port it came in on.

Stateless: there is no lease table. What a port is given is read from the intent at
the moment of the request: its fixed IPv4 address, the subnet's mask, gateway, DNS
servers and host routes, the network's MTU. A changed subnet reaches the guest at its
next renew; a changed address is refused (NAK) at the next renew, and the client
starts over and gets the new one.

The server identifier is the subnet's gateway address (or the subnet's first address
when it has no gateway): a renew is unicast to it, and reaches Loom through the same
punt flow whatever its destination.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Optional, Union

from os_ken.lib.packet import dhcp, ether_types, ethernet, in_proto, ipv4, packet, udp

from controller.compiler.ports import DHCP_CLIENT_PORT, DHCP_SERVER_PORT, serves_dhcp
from controller.intent import Intent, Port

# The source MAC of Loom's replies: locally administered, never a port's (guests do not
# send to it: a renew is addressed to the server identifier's IP, whatever MAC that
# resolves to, and punted on its way).
SERVER_MAC = "02:4c:4f:4f:4d:01"
DEFAULT_LEASE_SECONDS = 43200  # as OVN's default
BOOTP_MIN_LEN = 300  # RFC 1542: some clients drop shorter BOOTP messages
_BROADCAST_FLAG = 0x8000
# message types os-ken does not name (RFC 2132 9.6)
DHCP_NAK = 6
DHCP_INFORM = 8
_ALL_ONES = "255.255.255.255"
_BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"

Address = ipaddress.IPv4Address


@dataclass(frozen=True)
class Lease:
    """What one port is given."""

    address: Address
    network: ipaddress.IPv4Network
    router: Optional[Address]
    dns: tuple[Address, ...]
    routes: tuple[tuple[ipaddress.IPv4Network, Address], ...]  # host_routes, IPv4
    mtu: int
    server: Address
    seconds: int


@dataclass(frozen=True)
class Reply:
    """A reply to send out of the port the request came in on."""

    kind: str  # offer | ack | nak
    frame: bytes


@dataclass(frozen=True)
class Ignored:
    """A punted packet Loom does not answer, and why (counted in /metrics)."""

    reason: str


def lease_for(port: Port, intent: Intent, seconds: int = DEFAULT_LEASE_SECONDS
              ) -> Optional[Lease]:
    """The port's first IPv4 address on a subnet Loom serves, with that subnet's
    options; None if it has none. O(the port's addresses + the subnet's options)."""
    network = intent.networks.get(port.network_id)
    for fip in port.fixed_ips:
        subnet = intent.subnets.get(fip.subnet_id)
        if subnet is None or not serves_dhcp(subnet) or network is None:
            continue
        net = ipaddress.IPv4Network(subnet.cidr, strict=False)
        router = Address(subnet.gateway_ip) if subnet.gateway_ip else None
        routes = []
        for dest, nexthop in subnet.host_routes:
            d, n = ipaddress.ip_network(dest, strict=False), ipaddress.ip_address(nexthop)
            if isinstance(d, ipaddress.IPv4Network) and isinstance(n, Address):
                routes.append((d, n))
        dns = tuple(a for a in map(ipaddress.ip_address, subnet.dns_nameservers)
                    if isinstance(a, Address))
        return Lease(Address(fip.ip_address), net, router, dns, tuple(routes),
                     network.mtu, router or net.network_address + 1, seconds)
    return None


def answer(frame: bytes, lease: Lease) -> Union[Reply, Ignored]:
    """The reply to one punted DHCP client packet (RFC 2131 section 4.3)."""
    try:
        pkt = packet.Packet(frame)
    except Exception:  # os-ken raises what the bytes make it raise
        return Ignored("unparsable")
    eth = pkt.get_protocol(ethernet.ethernet)
    req = pkt.get_protocol(dhcp.dhcp)
    if eth is None or req is None or req.op != dhcp.DHCP_BOOT_REQUEST:
        return Ignored("not a DHCP request")
    opts = _options(req)
    mtype = opts.get(dhcp.DHCP_MESSAGE_TYPE_OPT, b"")[:1]
    if not mtype:
        return Ignored("no message type")
    kind = mtype[0]
    if kind == dhcp.DHCP_DISCOVER:
        return _reply(eth, req, lease, dhcp.DHCP_OFFER, "offer")
    if kind == DHCP_INFORM:
        return _reply(eth, req, lease, dhcp.DHCP_ACK, "ack", inform=True)
    if kind != dhcp.DHCP_REQUEST:
        return Ignored("release or decline")  # stateless: nothing to free
    server = opts.get(dhcp.DHCP_SERVER_IDENTIFIER_OPT)
    if server is not None and server != lease.server.packed:
        return Ignored("request to another server")
    asked = opts.get(dhcp.DHCP_REQUESTED_IP_ADDR_OPT)
    wanted = Address(asked) if asked is not None and len(asked) == 4 else Address(req.ciaddr)
    if wanted != lease.address:
        return _reply(eth, req, lease, DHCP_NAK, "nak")
    return _reply(eth, req, lease, dhcp.DHCP_ACK, "ack")


def _options(req: dhcp.dhcp) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    if req.options is None:
        return out
    for opt in req.options.option_list:
        if isinstance(opt, dhcp.option):
            out.setdefault(opt.tag, bytes(opt.value))
    return out


def _reply(eth: ethernet.ethernet, req: dhcp.dhcp, lease: Lease, mtype: int, kind: str,
           inform: bool = False) -> Reply:
    options = [dhcp.option(dhcp.DHCP_MESSAGE_TYPE_OPT, bytes([mtype])),
               dhcp.option(dhcp.DHCP_SERVER_IDENTIFIER_OPT, lease.server.packed)]
    if mtype != DHCP_NAK:
        options += _lease_options(lease, inform)
    ciaddr = Address(req.ciaddr)
    if mtype == DHCP_NAK or req.flags & _BROADCAST_FLAG:
        dst_mac, dst_ip = _BROADCAST_MAC, _ALL_ONES
    elif int(ciaddr):
        dst_mac, dst_ip = eth.src, str(ciaddr)
    else:
        dst_mac, dst_ip = eth.src, str(lease.address)
    body = dhcp.dhcp(
        op=dhcp.DHCP_BOOT_REPLY, chaddr=req.chaddr, xid=req.xid, flags=req.flags,
        ciaddr=str(ciaddr) if inform else "0.0.0.0",
        yiaddr="0.0.0.0" if inform or mtype == DHCP_NAK else str(lease.address),
        siaddr="0.0.0.0", giaddr=req.giaddr,
        options=dhcp.options(option_list=options + [_END]))
    payload = body.serialize()
    if len(payload) < BOOTP_MIN_LEN:  # pad after the end option
        payload += bytes(BOOTP_MIN_LEN - len(payload))
    out = packet.Packet()
    out.add_protocol(ethernet.ethernet(dst_mac, SERVER_MAC, ether_types.ETH_TYPE_IP))
    out.add_protocol(ipv4.ipv4(src=str(lease.server), dst=dst_ip, proto=in_proto.IPPROTO_UDP,
                               ttl=64))
    out.add_protocol(udp.udp(src_port=DHCP_SERVER_PORT, dst_port=DHCP_CLIENT_PORT))
    out.add_protocol(payload)
    out.serialize()
    return Reply(kind, bytes(out.data))


_END = b"\xff"  # a raw element: os-ken adds no end option after it


def _lease_options(lease: Lease, inform: bool) -> list[dhcp.option]:
    opts = [dhcp.option(dhcp.DHCP_SUBNET_MASK_OPT, lease.network.netmask.packed)]
    if lease.router is not None:
        opts.append(dhcp.option(dhcp.DHCP_GATEWAY_ADDR_OPT, lease.router.packed))
    if lease.dns:
        opts.append(dhcp.option(dhcp.DHCP_DNS_SERVER_ADDR_OPT,
                                b"".join(a.packed for a in lease.dns)))
    opts.append(dhcp.option(dhcp.DHCP_INTERFACE_MTU_OPT, lease.mtu.to_bytes(2, "big")))
    opts.append(dhcp.option(_BROADCAST_ADDRESS_OPT,
                            lease.network.broadcast_address.packed))
    if lease.routes:
        opts.append(dhcp.option(dhcp.DHCP_CLASSLESS_ROUTE_OPT, classless_routes(lease)))
    if not inform:
        opts += [
            dhcp.option(dhcp.DHCP_IP_ADDR_LEASE_TIME_OPT, lease.seconds.to_bytes(4, "big")),
            dhcp.option(dhcp.DHCP_RENEWAL_TIME_OPT, (lease.seconds // 2).to_bytes(4, "big")),
            dhcp.option(dhcp.DHCP_REBINDING_TIME_OPT,
                        (lease.seconds * 7 // 8).to_bytes(4, "big")),
        ]
    return opts


_BROADCAST_ADDRESS_OPT = 28


def classless_routes(lease: Lease) -> bytes:
    """Option 121 (RFC 3442). A client that gets it ignores option 3, so the default
    route via the gateway goes in too (as Neutron's and OVN's servers do)."""
    routes = list(lease.routes)
    if lease.router is not None and not any(d.prefixlen == 0 for d, _ in routes):
        routes.append((ipaddress.IPv4Network("0.0.0.0/0"), lease.router))
    out = bytearray()
    for dest, nexthop in routes:
        width = dest.prefixlen
        out.append(width)
        out += dest.network_address.packed[:(width + 7) // 8]
        out += nexthop.packed
    return bytes(out)
