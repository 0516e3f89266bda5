"""Encode and parse cost per flow: os-ken's generic classes vs controller.ofwire.

Why: issue 2 wants Loom to push 100k flows at >= 0.8x the rate of
`ovs-ofctl --bundle add-flows` (~60k flows/s here, i.e. <= ~20 us per flow in all).
os-ken spends ~50-120 us building one flow_mod, so this shows where ofwire stands on the
two halves the Python side owns: building the bundle, and reading the installed
flows back (os-ken parses every reply in its receive loop before a handler sees it).

Run: .venv/bin/python -m bench.bench_encode [--flows 100000] [--osken-sample 3000]

The flows are what a tenant network compiles to, port by port: classify,
port security (ARP, IPv4, IPv6 and DAD), ARP responder, security-group rules through
conntrack in both directions, L2 lookup, QoS and output.
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controller import ofwire
from controller import pipeline as pl
from controller.flows import (
    Ct,
    Flow,
    Output,
    RegMove,
    SetField,
    match,
)
from controller.ofwire import decode, encode

ALL_ONES_64 = (1 << 64) - 1
ETH_ARP, ETH_IPV4, ETH_IPV6 = 0x0806, 0x0800, 0x86DD
IN_PORT = 0xFFFFFFF8


def _port_flows(net: int, port: int, ofport: int) -> Iterator[Flow]:
    """Roughly what controller/compiler emits for one port of network `net`."""
    owner = pl.cookie(pl.Owner.PORT, port)
    mac = 0xFA1600000000 | port
    ip = 0x0A000000 | (net << 16) | (port & 0xFFFF)
    ip6 = (0xFD00 << 112) | (net << 64) | port
    ll6 = (0xFE80 << 112) | (0x02 << 56) | port
    yield pl.CLASSIFY.flow("port", match(in_port=ofport), write_metadata=(net, ALL_ONES_64),
                           goto="port_security", cookie=owner)
    ps = pl.PORT_SECURITY
    yield ps.flow("drop", match(in_port=ofport), cookie=owner)
    yield ps.flow("allow", match(in_port=ofport, eth_src=mac, eth_type=ETH_ARP, arp_sha=mac,
                                 arp_spa=ip), goto="arp_responder", cookie=owner)
    yield ps.flow("allow", match(in_port=ofport, eth_src=mac, eth_type=ETH_IPV4, ipv4_src=ip),
                  goto="arp_responder", cookie=owner)
    for addr in (ip6, ll6):
        yield ps.flow("allow", match(in_port=ofport, eth_src=mac, eth_type=ETH_IPV6,
                                     ipv6_src=addr), goto="arp_responder", cookie=owner)
    yield ps.flow("allow", match(in_port=ofport, eth_src=mac, eth_type=ETH_IPV6, ipv6_src=0,
                                 ip_proto=58, icmpv6_type=135), goto="arp_responder",
                  cookie=owner)
    yield pl.ARP_RESPONDER.flow(
        "reply", match(metadata=net, eth_type=ETH_ARP, arp_op=1, arp_tpa=ip),
        actions=(RegMove("eth_src", "eth_dst", 48), SetField("eth_src", mac),
                 SetField("arp_op", 2), RegMove("arp_sha", "arp_tha", 48),
                 SetField("arp_sha", mac), RegMove("arp_spa", "arp_tpa", 32),
                 SetField("arp_spa", ip), Output(IN_PORT)), cookie=owner)
    rule = pl.cookie(pl.Owner.SECURITY_GROUP_RULE, port)
    yield pl.EGRESS_ACL.flow(
        "rule", match(metadata=net, in_port=ofport, eth_type=ETH_IPV4, ip_proto=6,
                      tcp_dst=(8000 + port % 64, 0xFFC0), ct_state=(0x21, 0x21)),
        actions=(Ct(commit=True, zone_src=pl.REG_CT_ZONE, table="egress_acl"),), cookie=rule)
    yield pl.INGRESS_ACL.flow(
        "rule", match(metadata=net, reg7=ofport, eth_type=ETH_IPV4, ip_proto=6, tcp_dst=22,
                      ipv4_src=(0x0A000000 | (net << 16), 0xFFFF0000), ct_state=(0x21, 0x21)),
        actions=(Ct(commit=True, zone_src=pl.REG_CT_ZONE, table="ingress_acl", set_mark=1,
                    mark_mask=1),), cookie=rule)
    yield pl.L2_LOOKUP.flow("known_mac", match(metadata=net, eth_dst=mac),
                            actions=(SetField(pl.REG_OUT_PORT, ofport),), goto="ingress_acl",
                            cookie=owner)
    yield pl.QOS.flow("shared", match(reg7=ofport), meter=1 + port % 8, goto="output",
                      cookie=owner)
    yield pl.OUTPUT.flow("deliver", match(reg7=ofport), actions=(Output(ofport),),
                         cookie=owner)


def tenant_flows(n: int, ports_per_network: int = 40) -> list[Flow]:
    """`n` distinct realistic flows (13 per port)."""
    out: list[Flow] = []
    port = 0
    while len(out) < n:
        port += 1
        net = 1 + port // ports_per_network
        out.extend(_port_flows(net, port, 1 + port % 60000))
    return out[:n]


def _clock(fn: Callable[[], Any], repeat: int = 3) -> float:
    """Best of `repeat` wall-clock runs (the median is noisy on a 2-vCPU box; the best
    run is the cost of the code itself). The garbage collector stays on, as in Loom."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flows", type=int, default=100_000)
    ap.add_argument("--osken-sample", type=int, default=3000,
                    help="flows encoded/parsed through os-ken (it is slow; per-flow cost "
                         "is extrapolated)")
    ap.add_argument("--parse-flows", type=int, default=100_000)
    args = ap.parse_args(argv)

    from os_ken.ofproto import ofproto_parser as okparser
    from os_ken.ofproto import ofproto_v1_3 as okp

    from controller.ofwire import oskenfast
    from controller.ofwire.oskenref import DP, osken_bundle_add

    flows = tenant_flows(args.flows)
    twins = tenant_flows(args.flows)  # equal, distinct objects: what a recompile yields
    n = len(flows)
    rows: list[tuple[str, float]] = []

    sample = flows[: args.osken_sample]
    t = _clock(lambda: [osken_bundle_add(f, okp.OFPFC_ADD, i, 1, 3)
                        for i, f in enumerate(sample)], repeat=1)
    rows.append(("os-ken OFPFlowMod+ONFBundleAddMsg serialise", t / len(sample)))

    def first() -> None:
        encode.clear_cache()
        ofwire.encode_bundle(1, flows, (), 1)

    rows.append(("ofwire encode_bundle, first encode (cold cache)", _clock(first) / n))
    ofwire.encode_bundle(1, flows, (), 1)
    rows.append(("ofwire encode_bundle, cached, same Flow objects",
                 _clock(lambda: ofwire.encode_bundle(2, flows, (), 1)) / n))
    rows.append(("ofwire encode_bundle, cached, equal Flows of a recompile",
                 _clock(lambda: ofwire.encode_bundle(3, twins, (), 1)) / n))
    dels = flows[: min(n, 20_000)]
    rows.append(("ofwire encode_bundle, deletes (never cached)",
                 _clock(lambda: ofwire.encode_bundle(4, (), dels, 1)) / len(dels)))

    # ---- parsing a flow-stats reply, as OVS sends it for these flows
    pflows = flows[: args.parse_flows]
    replies = ofwire.flow_stats_reply(7, pflows)

    def osken_parse(msgs: list[bytes]) -> None:
        for m in msgs:
            okparser.msg(DP, okp.OFP_VERSION, okp.OFPT_MULTIPART_REPLY, len(m), 7,
                         bytearray(m))

    osample = replies[: max(1, len(replies) * args.osken_sample // max(1, len(pflows)))]
    per_osken = sum(len(ofwire.parse_flow_stats_reply(m)) for m in osample)
    rows.append(("os-ken recv-loop parse of OFPMP_FLOW reply (generic)",
                 _clock(lambda: osken_parse(osample), repeat=1) / per_osken))
    oskenfast.install_raw_multipart_parsers()
    try:
        rows.append(("os-ken recv-loop parse with oskenfast (raw body kept)",
                     _clock(lambda: osken_parse(replies)) / len(pflows)))
    finally:
        oskenfast.uninstall_raw_multipart_parsers()

    def cold_parse() -> None:
        decode.clear_caches()
        for m in replies:
            ofwire.parse_flow_stats_reply(m)

    def cold_parse_all() -> None:
        decode.clear_caches()
        ofwire.parse_flow_stats_replies(replies)

    rows.append(("ofwire parse_flow_stats_reply per message, cold caches",
                 _clock(cold_parse) / len(pflows)))
    rows.append(("ofwire parse_flow_stats_replies (whole dump), cold caches",
                 _clock(cold_parse_all) / len(pflows)))
    rows.append(("ofwire parse_flow_stats_replies (whole dump), warm caches",
                 _clock(lambda: ofwire.parse_flow_stats_replies(replies)) / len(pflows)))
    ok = [i.flow for i in ofwire.parse_flow_stats_replies(replies)] == pflows

    print(f"# {n} flows ({len(pflows)} parsed), Python {platform.python_version()}, "
          f"{platform.machine()}; best of 3 (os-ken: 1 run of a sample)")
    for name, secs in rows:
        print(f"{name:60s} {secs * 1e6:8.2f} us/flow")
    print(f"parse(encode(flows)) == flows: {ok}")
    print("command: .venv/bin/python -m bench.bench_encode " + " ".join(
        argv if argv is not None else sys.argv[1:]))


if __name__ == "__main__":
    main()
