"""QoS across hypervisors, on the multi-host lab, with real traffic (issue 16).

Three hypervisors (namespaces, each with its own OVS), the real controller, guests
in namespaces, iperf3. Checks what a cloud needs of QoS once senders and receivers
are on different hosts:
- minimum guarantees hold for senders on another hypervisor than the limited
  receiver, while other senders are greedy (several streams each);
- a DSCP mark reaches the underlay: the outer header of VXLAN, GRE and Geneve
  packets carries the inner DSCP (options:tos=inherit), read off a capture;
- a controller restart changes nothing (0 flow mods, same meters, same QoS rows,
  same rates), and a port that moves to another hypervisor takes its limits along.

Rates are iperf3 goodput (what the guest sees); meters and linux-htb count whole
Ethernet frames, so goodput lands a few per cent under a configured rate:
TOLERANCE (docs/QOS.md) covers that and the noise of TCP on a loaded machine. Each
guarantee scenario is run ROUNDS times and judged on the median per sender.
"""

from __future__ import annotations

import csv
import os
import re
import secrets
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.test_qos import TOLERANCE, _wait_for, parallel_iperf
from topologies.guest import Guest
from topologies.lab import Lab
from topologies.labstate import stop_controller

pytestmark = pytest.mark.integration

ROUNDS = 3
ATTEMPTS = 3
SECONDS = int(os.environ.get("LOOM_QOS_SECONDS", "6"))  # per run; docs/QOS.md used 20
LIMIT = 30.0  # Mbit/s into `recv`
GOLD, BRONZE, SILVER = 20.0, 6.0, 2.0  # Mbit/s minimums
NETS = {"vxlan": 4001, "gre": 4002, "geneve": 4003}
SPEC: dict[str, Any] = {
    "hypervisors": [{"name": "hv1"}, {"name": "hv2"}, {"name": "hv3"}],
    "controller": {},
    "projects": [{"name": "qos", "networks": [
        {"name": "vx", "type": "vxlan", "segmentation_id": NETS["vxlan"],
         "subnets": [{"cidr": "10.7.0.0/24"}],
         "guests": [
             {"name": "gold", "hypervisor": "hv1", "ip": "10.7.0.11"},
             {"name": "bronze", "hypervisor": "hv1", "ip": "10.7.0.12"},
             {"name": "silver", "hypervisor": "hv3", "ip": "10.7.0.13"},
             {"name": "greedy", "hypervisor": "hv3", "ip": "10.7.0.14"},
             {"name": "mover", "hypervisor": "hv1", "ip": "10.7.0.15"},
             {"name": "recv", "hypervisor": "hv2", "ip": "10.7.0.20"},
         ]},
        {"name": "gr", "type": "gre", "segmentation_id": NETS["gre"],
         "subnets": [{"cidr": "10.7.1.0/24"}],
         "guests": [{"name": "gre1", "hypervisor": "hv1", "ip": "10.7.1.11"},
                    {"name": "gre2", "hypervisor": "hv2", "ip": "10.7.1.12"}]},
        {"name": "gn", "type": "geneve", "segmentation_id": NETS["geneve"],
         "subnets": [{"cidr": "10.7.2.0/24"}],
         "guests": [{"name": "gnv1", "hypervisor": "hv1", "ip": "10.7.2.11"},
                    {"name": "gnv2", "hypervisor": "hv3", "ip": "10.7.2.12"}]},
    ]}],
}
CAPTURE = {  # the underlay's view of each tunnel type
    "vxlan": ("udp port 4789", "vx", "gold", "recv"),
    "gre": ("ip proto 47", "gr", "gre1", "gre2"),
    "geneve": ("udp port 6081", "gn", "gnv1", "gnv2"),
}


def _quiet(_line: str) -> None:
    pass


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    spec = tmp_path_factory.mktemp("qos-lab") / "qos.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    lab = Lab.up(Path(spec), name=f"qos-{secrets.token_hex(3)}", progress=_quiet)
    try:
        yield lab
    finally:
        problems = lab.down()
        assert not problems, problems


# ---------------------------------------------------------------- helpers
def _policy(lab: Lab, name: str, rules: list[tuple[str, dict[str, Any]]]) -> str:
    api = lab.api
    policy = api.post("/v2.0/qos/policies", {"policy": {"name": name, "project_id": "qos"}}
                      ).ok()["policy"]
    for kind, attrs in rules:
        api.post(f"/v2.0/qos/policies/{policy['id']}/{kind}_rules",
                 {f"{kind}_rule": attrs}).ok()
    return str(policy["id"])


def _attach(lab: Lab, guest: str, policy_id: str | None) -> None:
    port = lab.guest_info(guest)["port_id"]
    lab.api.put(f"/v2.0/ports/{port}?wait=true", {"port": {"qos_policy_id": policy_id}}).ok()


def _detach_all(lab: Lab, *guests: str) -> None:
    for g in guests:
        _attach(lab, g, None)
    for hv in lab.hypervisors:
        _wait_for(lambda hv=hv: not _meters(lab, hv) and not _qos_rows(lab, hv))


def _meters(lab: Lab, hv: str) -> dict[int, str]:
    """QoS meter id -> its description, as ovs-ofctl dump-meters shows it (the DHCP
    punt meters, in packets per second, are not QoS)."""
    out = lab.hypervisor(hv).ovs.ofctl("dump-meters", "br-int")
    found = {int(m.group(1)): " ".join(m.group(2).split())
             for m in re.finditer(r"meter=(\d+)\s(.*?)(?=meter=|\Z)", out, re.S)}
    return {k: v for k, v in found.items() if "pktps" not in v}


def _qos_rows(lab: Lab, hv: str, table: str = "QoS") -> set[str]:
    return set(lab.hypervisor(hv).ovs.vsctl("--bare", "--columns=_uuid", "list", table).split())


def _rows(lab: Lab, hv: str) -> dict[str, str]:
    """Interface, QoS and Queue rows of `hv` (uuids, and what they hold)."""
    return {t: lab.hypervisor(hv).ovs.vsctl("--bare", "--columns=_uuid,other_config", "list", t)
            for t in ("Interface", "QoS", "Queue")}


def _ip(lab: Lab, guest: str) -> str:
    return str(lab.guest_info(guest)["ip_cidr"].split("/")[0])


def _measured(flows: list[tuple[Guest, Guest, int, int]], ok: Callable[[list[float]], bool]
              ) -> tuple[list[float], list[list[float]]]:
    """The median per sender of ROUNDS runs of `flows` at once, and every run.

    A machine busy with other work starves the userspace datapaths (and so TCP) in
    bursts, which no QoS setting causes or cures: while the medians fail `ok`, the
    whole measurement is taken again, ATTEMPTS times at most. A real defect fails
    every attempt (before issue 16 gold got 2.3-5.7 of its 20 Mbit/s, every time).
    """
    history: list[list[float]] = []
    medians: list[float] = []
    for _ in range(ATTEMPTS):
        runs = [parallel_iperf(flows, seconds=SECONDS, omit=2) for _ in range(ROUNDS)]
        history += runs
        medians = [statistics.median(r[i] for r in runs) for i in range(len(flows))]
        if ok(medians):
            break
    return medians, history


def _near(got: float, want: float) -> bool:
    return abs(got - want) <= TOLERANCE * want


# ---------------------------------------------------------------- (a) guarantees across hosts
def test_guarantees_hold_for_senders_on_another_hypervisor(lab: Lab) -> None:
    """The issue's case: gold (20) and bronze (6) on hv1 into recv on hv2, limited to 30;
    bronze opens 4 streams and greedy (no guarantee, hv3) 4 more. Before issue 16 hv2
    held no meter for them and gold got 2.3-5.7 Mbit/s."""
    g = lab.guests
    limit = _policy(lab, "recv-30m", [("bandwidth_limit", {"max_kbps": int(LIMIT * 1000),
                                                            "direction": "ingress"})])
    gold = _policy(lab, "gold", [("minimum_bandwidth", {"min_kbps": int(GOLD * 1000)})])
    bronze = _policy(lab, "bronze", [("minimum_bandwidth", {"min_kbps": int(BRONZE * 1000)})])
    _attach(lab, "recv", limit)
    _attach(lab, "gold", gold)
    _attach(lab, "bronze", bronze)
    try:
        _wait_for(lambda: len(_qos_rows(lab, "hv2")) == 1)
        # recv's chassis holds the share meters (gold, bronze, the rest); hv1 none
        assert len(_meters(lab, "hv2")) == 3 and not _meters(lab, "hv1")
        def ok(r: list[float]) -> bool:
            return r[0] >= GOLD * (1 - TOLERANCE) and r[1] >= BRONZE * (1 - TOLERANCE) \
                and sum(r) <= LIMIT * (1 + TOLERANCE)

        rates, runs = _measured([(g["gold"], g["recv"], 5301, 1),
                                 (g["bronze"], g["recv"], 5302, 4),
                                 (g["greedy"], g["recv"], 5303, 4)], ok)
        assert rates[0] >= GOLD * (1 - TOLERANCE), runs
        assert rates[1] >= BRONZE * (1 - TOLERANCE), runs
        assert sum(rates) <= LIMIT * (1 + TOLERANCE), runs
        print(f"gold/bronze/greedy medians {rates}, runs {runs}")
    finally:
        _detach_all(lab, "recv", "gold", "bronze")


def test_three_guaranteed_senders_on_two_other_hypervisors(lab: Lab) -> None:
    """Three guarantees (20, 6, 2 into 30, from hv1 and hv3), every sender greedy and a
    fourth, unguaranteed, too: each guaranteed sender still gets its minimum."""
    g = lab.guests
    limit = _policy(lab, "recv-30m", [("bandwidth_limit", {"max_kbps": int(LIMIT * 1000),
                                                            "direction": "ingress"})])
    pols = {name: _policy(lab, name, [("minimum_bandwidth", {"min_kbps": int(rate * 1000)})])
            for name, rate in (("gold", GOLD), ("bronze", BRONZE), ("silver", SILVER))}
    _attach(lab, "recv", limit)
    for name, pol in pols.items():
        _attach(lab, name, pol)
    try:
        _wait_for(lambda: len(_qos_rows(lab, "hv2")) == 1)
        assert len(_meters(lab, "hv2")) == 4
        def ok(r: list[float]) -> bool:
            return all(got >= want * (1 - TOLERANCE)
                       for got, want in zip(r[:3], (GOLD, BRONZE, SILVER), strict=True)) \
                and sum(r) <= LIMIT * (1 + TOLERANCE)

        rates, runs = _measured([(g["gold"], g["recv"], 5311, 2),
                                 (g["bronze"], g["recv"], 5312, 4),
                                 (g["silver"], g["recv"], 5313, 4),
                                 (g["greedy"], g["recv"], 5314, 4)], ok)
        for got, want in zip(rates[:3], (GOLD, BRONZE, SILVER), strict=True):
            assert got >= want * (1 - TOLERANCE), runs
        assert sum(rates) <= LIMIT * (1 + TOLERANCE), runs
        print(f"gold/bronze/silver/greedy medians {rates}, runs {runs}")
    finally:
        _detach_all(lab, "recv", *pols)


# ---------------------------------------------------------------- (b) DSCP on the underlay
def _tos(text: str) -> tuple[list[str], list[str]]:
    """The tos of each captured packet's outer IP header and of the packet inside
    (tcpdump -v: the outer header is on the line with the timestamp, the decoded
    inner packet follows on lines of its own)."""
    outer = re.findall(r"^\d\d:\d\d:[\d.]+ .*?IP \(tos (0x[0-9a-f]+)", text, re.M)
    inner = re.findall(r"^(?!\d\d:\d\d:)\s*IP \(tos (0x[0-9a-f]+)", text, re.M)
    return outer, inner


def _capture_tos(lab: Lab, net_type: str) -> tuple[list[str], list[str], str]:
    """Ping across the tunnel of `net_type` and read the tos off the underlay."""
    bpf, _net, src, dst = CAPTURE[net_type]
    cap = subprocess.Popen(
        ["ip", "netns", "exec", lab.underlay_netns, "timeout", "8", "tcpdump", "-l", "-n",
         "-v", "-i", "any", "-c", "6", f"{bpf} and ip src {_encap_ip(lab, src)}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)
    lab.guest(src).ping(_ip(lab, dst), count=6, interval=0.2)
    out, _ = cap.communicate(timeout=20)
    return (*_tos(out), out)


@pytest.mark.parametrize("net_type", sorted(CAPTURE))
def test_outer_header_carries_the_inner_dscp(lab: Lab, net_type: str) -> None:
    src = CAPTURE[net_type][2]
    policy = _policy(lab, f"af31-{net_type}", [("dscp_marking", {"dscp_mark": 26})])
    _attach(lab, src, policy)
    try:
        outer, inner, out = _capture_tos(lab, net_type)
        assert outer and len(inner) == len(outer), out
        assert set(outer) == set(inner) == {"0x68"}, out  # DSCP 26 << 2, ECN 0
    finally:
        _attach(lab, src, None)


def _encap_ip(lab: Lab, guest: str) -> str:
    hv = lab.guest_info(guest)["hypervisor"]
    return str(lab.state.data["hypervisors"][hv]["encap_ip"])


def _tunnel_rows(lab: Lab, hv: str) -> dict[str, tuple[str, str, str]]:
    """Loom's tunnel interfaces on `hv`: name -> (uuid, ofport, options:tos or '')."""
    out = lab.hypervisor(hv).ovs.vsctl(
        "--format=csv", "--data=bare", "--no-headings", "--columns=name,_uuid,ofport,options",
        "find", "Interface", 'external_ids:loom-remote-chassis!=""')
    rows = {}
    for line in out.splitlines():
        name, uuid, ofport, options = next(csv.reader([line]))
        tos = re.search(r"\btos=(\w+)", options)
        rows[name] = (uuid, ofport, tos.group(1) if tos else "")
    return rows


def test_tunnels_made_without_tos_are_updated_in_place(lab: Lab) -> None:
    """Tunnels as an older Loom made them (no options:tos) carry the mark on the inner
    header only; the controller sets tos=inherit on them once, in place: same
    Interface rows, same ofports, so not one flow changes."""
    hvs = sorted(lab.hypervisors)
    src = CAPTURE["vxlan"][2]
    policy = _policy(lab, "af31-upgrade", [("dscp_marking", {"dscp_mark": 26})])
    _attach(lab, src, policy)
    try:
        before = {hv: _tunnel_rows(lab, hv) for hv in hvs}
        assert all(len(rows) == 2 * len(NETS) and {t for *_r, t in rows.values()} == {"inherit"}
                   for rows in before.values()), before
        stop_controller(lab.state.data["controller"])
        lab.controller = None
        for hv in hvs:
            for name in before[hv]:
                lab.hypervisor(hv).ovs.vsctl("remove", "Interface", name, "options", "tos")
        outer, inner, out = _capture_tos(lab, "vxlan")  # the defect of issue 16
        assert set(outer) == {"0x0"} and set(inner) == {"0x68"}, out
        lab._start_controller()
        lab._wait_switches(len(hvs), timeout=30)
        _wait_for(lambda: all(_tunnel_rows(lab, hv) == before[hv] for hv in hvs), timeout=30)
        assert lab.api.metric("loom_flow_mods_total") == 0
        outer, inner, out = _capture_tos(lab, "vxlan")
        assert set(outer) == set(inner) == {"0x68"}, out
    finally:
        _attach(lab, src, None)


# ---------------------------------------------------------------- (c) restart, and a move
def test_restart_changes_no_qos_state_and_no_rate(lab: Lab) -> None:
    """Guarantees across hosts plus an egress limit: a controller restart sends 0 flow
    mods (meter mods included), keeps every meter, QoS row and tunnel row, and the
    rates measured before and after agree."""
    g = lab.guests
    limit = _policy(lab, "recv-30m", [("bandwidth_limit", {"max_kbps": int(LIMIT * 1000),
                                                            "direction": "ingress"})])
    gold = _policy(lab, "gold", [("minimum_bandwidth", {"min_kbps": int(GOLD * 1000)})])
    bronze = _policy(lab, "bronze-lim", [("minimum_bandwidth", {"min_kbps": int(BRONZE * 1000)}),
                                         ("bandwidth_limit", {"max_kbps": 10000})])
    _attach(lab, "recv", limit)
    _attach(lab, "gold", gold)
    _attach(lab, "bronze", bronze)
    hvs = sorted(lab.hypervisors)
    try:
        _wait_for(lambda: len(_qos_rows(lab, "hv2")) == 1)

        # gold alone into recv: its share cap, 20 + (30 - 26) / 2 = 22 Mbit/s of frames;
        # bronze (to another host): its egress limit, 10
        expected = (22.0, 10.0)
        flows = [(g["gold"], g["recv"], 5321, 1), (g["bronze"], g["greedy"], 5322, 1)]

        def ok(r: list[float]) -> bool:
            return all(_near(got, want) for got, want in zip(r, expected, strict=True))

        before, runs_before = _measured(flows, ok)
        assert ok(before), runs_before
        meters = {hv: _meters(lab, hv) for hv in hvs}
        rows = {hv: _rows(lab, hv) for hv in hvs}
        assert meters["hv2"] and meters["hv1"]  # share meters on hv2, bronze's limit on hv1
        lab._restart_controller()
        lab._wait_switches(len(hvs), timeout=30)
        time.sleep(2.0)  # let any (unwanted) change land before looking
        assert lab.api.metric("loom_flow_mods_total") == 0
        for hv in hvs:
            assert _meters(lab, hv) == meters[hv], hv
            assert _rows(lab, hv) == rows[hv], hv
        after, runs_after = _measured(flows, ok)
        assert ok(after), (runs_before, runs_after)
        print(f"gold alone into recv, bronze limited: before {before}, after {after}")
    finally:
        _detach_all(lab, "recv", "gold", "bronze")


def test_limits_follow_a_port_to_another_hypervisor(lab: Lab) -> None:
    """mover (egress and ingress limited to 20 Mbit/s) moves from hv1 to hv3, as a live
    migration would: its meter and its linux-htb row leave hv1 and appear on hv3, and
    the rates measured there are the same limits."""
    g = lab.guests
    mover = g["mover"]
    policy = _policy(lab, "mover-20m", [("bandwidth_limit", {"max_kbps": 20000}),
                                        ("bandwidth_limit", {"max_kbps": 20000,
                                                             "direction": "ingress"})])
    _attach(lab, "mover", policy)
    port_id = lab.guest_info("mover")["port_id"]
    try:
        _wait_for(lambda: len(_qos_rows(lab, "hv1")) == 1 and len(_meters(lab, "hv1")) == 1)
        assert not _meters(lab, "hv3") and not _qos_rows(lab, "hv3")
        (out_before,), runs = _measured([(mover, g["recv"], 5331, 1)],
                                        lambda r: _near(r[0], 20.0))
        assert _near(out_before, 20.0), runs
        mover.detach()
        lab.api.put(f"/v2.0/ports/{port_id}", {"port": {"binding:host_id": "hv3"}}).ok()
        mover.attach(lab.hypervisor("hv3").ovs, "br-int")
        # nothing left behind on hv1: no meter, no QoS or Queue row (OVSDB keeps those
        # when their port goes; Loom removes its own)
        _wait_for(lambda: len(_qos_rows(lab, "hv3")) == 1 and len(_meters(lab, "hv3")) == 1
                  and not _meters(lab, "hv1") and not _qos_rows(lab, "hv1")
                  and not _qos_rows(lab, "hv1", "Queue"), timeout=30)
        (rate,) = _meters(lab, "hv3").values()
        assert "rate=20000" in rate, rate
        _wait_for(lambda: mover.ping(_ip(lab, "recv"), count=1, timeout=1)[1] == 1, timeout=30)
        # from mover, and (another run) to it: its egress meter, then its linux-htb
        (egress,), runs_out = _measured([(mover, g["recv"], 5332, 1)],
                                        lambda r: _near(r[0], 20.0))
        assert _near(egress, 20.0), runs_out
        (ingress,), runs_in = _measured([(g["gold"], mover, 5333, 1)],
                                        lambda r: _near(r[0], 20.0))
        assert _near(ingress, 20.0), runs_in
        print(f"mover before the move {out_before:.2f}, after: egress {egress:.2f}, "
              f"ingress {ingress:.2f}")
    finally:
        _attach(lab, "mover", None)
