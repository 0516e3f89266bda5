"""Loom's DHCPv6 answers (controller/dhcp6.py), read back by hand as a client would."""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

from os_ken.lib.packet import ethernet, ipv6, packet, udp

from controller import dhcp6
from controller.dhcp import Ignored, Reply

MAC = "fa:16:3e:00:00:05"
CLIENT_DUID = b"\x00\x03\x00\x01" + bytes.fromhex("fa163e000005")
ADDR = ipaddress.IPv6Address("2001:db8:66::5")
DNS = (ipaddress.IPv6Address("2001:db8::53"),)
STATEFUL = dhcp6.Config(ADDR, DNS, 600)
STATELESS = dhcp6.Config(None, DNS, 600)


def _opt(code: int, data: bytes) -> bytes:
    return struct.pack("!HH", code, len(data)) + data


def _message(kind: int, *opts: bytes) -> bytes:
    p = packet.Packet()
    p.add_protocol(ethernet.ethernet("33:33:00:01:00:02", MAC, 0x86DD))
    p.add_protocol(ipv6.ipv6(src="fe80::f816:3eff:fe00:5", dst="ff02::1:2", nxt=17))
    p.add_protocol(udp.udp(src_port=546, dst_port=547))
    p.add_protocol(bytes([kind]) + b"\x12\x34\x56" + _opt(1, CLIENT_DUID) + b"".join(opts))
    p.serialize()
    return bytes(p.data)


def _ia(*addrs: ipaddress.IPv6Address) -> bytes:
    inner = b"".join(_opt(5, a.packed + struct.pack("!II", 100, 100)) for a in addrs)
    return _opt(3, b"\x00\x00\x00\x07" + struct.pack("!II", 0, 0) + inner)


def _read(reply: Any) -> tuple[int, dict[int, bytes]]:
    assert isinstance(reply, Reply)
    body = reply.frame[14 + 40 + 8:]
    opts = {}
    at = 4
    while at < len(body):
        code, length = struct.unpack_from("!HH", body, at)
        opts[code] = body[at + 4:at + 4 + length]
        at += 4 + length
    assert body[1:4] == b"\x12\x34\x56"
    return body[0], opts


def _iaaddrs(ia: bytes) -> dict[ipaddress.IPv6Address, int]:
    out, at = {}, 12
    while at < len(ia):
        code, length = struct.unpack_from("!HH", ia, at)
        if code == 5:
            out[ipaddress.IPv6Address(ia[at + 4:at + 20])] = \
                struct.unpack_from("!I", ia, at + 24)[0]
        at += 4 + length
    return out


def test_solicit_is_advertised_the_ports_address_and_rapid_commit_replied() -> None:
    kind, opts = _read(dhcp6.answer(_message(dhcp6.SOLICIT, _ia()), STATEFUL))
    assert kind == dhcp6.ADVERTISE and opts[1] == CLIENT_DUID
    assert opts[2] == dhcp6.SERVER_DUID and opts[23] == DNS[0].packed
    assert opts[3][:4] == b"\x00\x00\x00\x07" and _iaaddrs(opts[3]) == {ADDR: 600}
    kind, opts = _read(dhcp6.answer(_message(dhcp6.SOLICIT, _ia(), _opt(14, b"")),
                                    STATEFUL))
    assert kind == dhcp6.REPLY and 14 in opts


def test_a_renew_of_an_address_the_port_lost_gets_it_with_lifetime_zero() -> None:
    old = ipaddress.IPv6Address("2001:db8:66::9")
    kind, opts = _read(dhcp6.answer(
        _message(dhcp6.RENEW, _ia(old), _opt(2, dhcp6.SERVER_DUID)), STATEFUL))
    assert kind == dhcp6.REPLY and _iaaddrs(opts[3]) == {ADDR: 600, old: 0}


def test_information_request_gets_the_dns_servers_only() -> None:
    kind, opts = _read(dhcp6.answer(_message(dhcp6.INFORMATION_REQUEST), STATELESS))
    assert kind == dhcp6.REPLY and opts[23] == DNS[0].packed and 3 not in opts
    assert isinstance(dhcp6.answer(_message(dhcp6.SOLICIT, _ia()), STATELESS), Ignored)


def test_another_servers_request_and_garbage_get_nothing() -> None:
    other = _opt(2, b"\x00\x03\x00\x01" + bytes(6))
    assert isinstance(dhcp6.answer(_message(dhcp6.REQUEST, _ia(), other), STATEFUL), Ignored)
    assert isinstance(dhcp6.answer(b"\x00" * 30, STATEFUL), Ignored)
    truncated = _message(dhcp6.SOLICIT, _ia())[:-3]
    assert isinstance(dhcp6.answer(truncated, STATEFUL), Ignored)
