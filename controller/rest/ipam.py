"""IP and MAC address management (pure functions, no store access).

Defaults follow Neutron: the gateway is the first host address; the allocation
pool is the whole subnet minus the network address, the IPv4 broadcast address
and the gateway; automatic allocation takes the first free address of the pools.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Container, Iterable
from typing import Optional

from controller import intent as model
from controller.rest.errors import BadRequest, InvalidInput, bad_request
from controller.rest.validate import IPAddress, IPNetwork, parse_ip

MAC_PREFIX = "fa:16:3e"  # Neutron's base_mac

# Neutron's IPv6 modes (neutron_lib.constants.IPV6_MODES) and the two whose guests
# make their own addresses from the prefix (ipv6_utils.is_auto_address_subnet).
SLAAC, DHCPV6_STATELESS, DHCPV6_STATEFUL = "slaac", "dhcpv6-stateless", "dhcpv6-stateful"
IPV6_MODES = (DHCPV6_STATEFUL, DHCPV6_STATELESS, SLAAC)
AUTO_ADDRESS_MODES = (SLAAC, DHCPV6_STATELESS)


def usable_range(net: IPNetwork) -> tuple[int, int]:
    """First and last host addresses (as ints); may be empty (first > last) for tiny subnets."""
    first = int(net.network_address) + 1
    last = int(net.broadcast_address) - (1 if net.version == 4 else 0)
    if net.num_addresses <= 2:
        first, last = int(net.network_address), int(net.broadcast_address)
    return first, last


def default_gateway(net: IPNetwork) -> Optional[str]:
    """The first host address, in the subnet's own family.

    Never `ipaddress.ip_address(int)`: it picks the family from the integer, so the
    first host of `::/64` (the integer 1) would come out as IPv4 `0.0.0.1`.
    """
    first, last = usable_range(net)
    return _addr(first, net.version) if first <= last and net.num_addresses > 2 else None


def _addr(value: int, version: int) -> str:
    return str(ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value))


def default_pools(net: IPNetwork, gateway: Optional[str]) -> tuple[model.AllocationPool, ...]:
    first, last = usable_range(net)
    if first > last:
        return ()
    ranges = [(first, last)]
    if gateway is not None:
        gw = int(ipaddress.ip_address(gateway))
        ranges = (
            [(a, b) for a, b in ((first, gw - 1), (gw + 1, last)) if a <= b]
            if first <= gw <= last
            else ranges
        )
    return tuple(
        model.AllocationPool(_addr(a, net.version), _addr(b, net.version)) for a, b in ranges
    )


def check_pools(
    net: IPNetwork, pools: Iterable[model.AllocationPool], gateway: Optional[str]
) -> None:
    """Neutron's pool rules: valid, same family, inside the cidr, no overlap, gateway outside."""
    first, last = usable_range(net)
    spans: list[tuple[int, int, model.AllocationPool]] = []
    for pool in pools:
        start, end = parse_ip(pool.start), parse_ip(pool.end)
        text = f"{pool.start}-{pool.end}"
        if start.version != net.version or end.version != net.version or int(start) > int(end):
            raise bad_request("InvalidAllocationPool", f"The allocation pool {text} is not valid.")
        if int(start) < first or int(end) > last:
            raise bad_request(
                "OutOfBoundsAllocationPool",
                f"The allocation pool {text} spans beyond the subnet cidr {net}.",
            )
        spans.append((int(start), int(end), pool))
    spans.sort(key=lambda s: s[0])
    for (_, a_end, a), (b_start, _, b) in zip(spans, spans[1:], strict=False):
        if b_start <= a_end:
            raise bad_request(
                "OverlappingAllocationPools",
                f"Found overlapping allocation pools: {a.start}-{a.end} {b.start}-{b.end} "
                f"for subnet {net}.",
            )
    if gateway is not None:
        gw = int(ipaddress.ip_address(gateway))
        for start_i, end_i, pool in spans:
            if start_i <= gw <= end_i:
                raise bad_request(
                    "GatewayConflictWithAllocationPools",
                    f"Gateway ip {gateway} conflicts with allocation pool {pool.start}-{pool.end}.",
                )


def check_gateway(net: IPNetwork, gateway: str) -> str:
    ip = parse_ip(gateway)
    if ip.version != net.version or ip not in net:
        raise InvalidInput(f"Gateway IP {gateway} is not in subnet {net}")
    first, last = usable_range(net)
    if not first <= int(ip) <= last:
        raise InvalidInput(f"Gateway IP {gateway} is the network or broadcast address of {net}")
    return str(ip)


def check_address_in_subnet(ip: IPAddress, subnet: model.Subnet) -> None:
    """An address given for a port must be a host address of the subnet."""
    net = ipaddress.ip_network(subnet.cidr)
    first, last = usable_range(net)
    if ip.version != net.version or ip not in net or not first <= int(ip) <= last:
        raise InvalidInput(
            f"IP address {ip} is not a valid IP for the specified subnet {subnet.id}."
        )


def first_free(subnet: model.Subnet, used: Iterable[str]) -> Optional[str]:
    """The lowest pool address not in `used`: O(pools + used), never walks a /64."""
    taken = {int(ipaddress.ip_address(u)) for u in used}
    if subnet.gateway_ip:
        taken.add(int(ipaddress.ip_address(subnet.gateway_ip)))
    version = ipaddress.ip_network(subnet.cidr).version
    for pool in sorted(subnet.allocation_pools, key=lambda p: int(ipaddress.ip_address(p.start))):
        candidate, end = int(ipaddress.ip_address(pool.start)), int(ipaddress.ip_address(pool.end))
        while candidate <= end:
            if candidate not in taken:
                return _addr(candidate, version)
            candidate += 1
    return None


def scan_pools(
    subnet: model.Subnet,
    start: int,
    free: Callable[[str], bool],
    held: Callable[[str], bool],
) -> tuple[Optional[str], int]:
    """The lowest pool address from `start` on that is `free` (never the gateway), and
    how far the pools are known `held` from `start`: a new `start` for the next scan.

    `start` must be a pool address no lower than the first one that is not `held`
    (0: scan from the first pool address). What `first_free` answers, in
    O(addresses scanned) rather than O(addresses used): each address is tried by its
    text, as the index holds it, so nothing used has to be parsed. The second value
    is the first pool address from `start` on that is not `held` (the gateway counts
    as held), or one past the last pool if there is none: every pool address below it
    is held, so a scan may start there as long as nothing below it is given back.
    """
    version = ipaddress.ip_network(subnet.cidr).version
    gateway = int(ipaddress.ip_address(subnet.gateway_ip)) if subnet.gateway_ip else None
    bound: Optional[int] = None  # the first address from `start` not held
    end = start
    for pool in sorted(subnet.allocation_pools, key=lambda p: int(ipaddress.ip_address(p.start))):
        candidate = max(int(ipaddress.ip_address(pool.start)), start)
        last = int(ipaddress.ip_address(pool.end))
        end = max(end, last + 1)
        while candidate <= last:
            if candidate != gateway:
                text = _addr(candidate, version)
                if bound is None and not held(text):
                    bound = candidate
                if free(text):
                    return text, candidate if bound is None else bound
            candidate += 1
    return None, end if bound is None else bound


def random_mac(in_use: Container[str], rng: Optional[random.Random] = None) -> str:
    """A fresh fa:16:3e:xx:xx:xx not in `in_use`."""
    rng = rng or random.SystemRandom()
    for _ in range(1000):
        tail = ":".join(f"{rng.randrange(256):02x}" for _ in range(3))
        mac = f"{MAC_PREFIX}:{tail}"
        if mac not in in_use:
            return mac
    raise BadRequest("Unable to generate a unique MAC address")


def is_auto_address_subnet(subnet: model.Subnet) -> bool:
    """Neutron's ipv6_utils.is_auto_address_subnet: guests configure their address
    from the prefix (SLAAC or DHCPv6-stateless), by either mode."""
    return (
        subnet.ipv6_address_mode in AUTO_ADDRESS_MODES
        or subnet.ipv6_ra_mode in AUTO_ADDRESS_MODES
    )


def eui64_address(cidr: str, mac: str) -> str:
    """The address a SLAAC guest with `mac` makes on the /64 `cidr` (RFC 4291 app. A,
    what Neutron's netutils.get_ipv6_addr_by_EUI64 computes): the prefix, then the
    modified EUI-64 interface id, the MAC with ff:fe in its middle and the
    universal/local bit (0x02 of the first octet) flipped."""
    net = ipaddress.IPv6Network(cidr)
    octets = [int(x, 16) for x in mac.split(":")]
    if len(octets) != 6:
        raise ValueError(f"not a MAC address: {mac}")
    eui = [octets[0] ^ 0x02, *octets[1:3], 0xFF, 0xFE, *octets[3:]]
    iid = int.from_bytes(bytes(eui), "big")
    return str(ipaddress.IPv6Address(int(net.network_address) | iid))
