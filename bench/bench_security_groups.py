"""Security groups at scale: flows per switch with conjunctions vs the naive product,
full compile time, and the cost of one membership change end to end.

500 ports on 5 switches, 50 security groups; every group has an ingress TCP rule
from another group (remote_group_id) and Neutron's egress-anywhere rules; each port
is in one or two groups. The membership change is pushed through the real
reconciler to a real ovs-vswitchd, beside `ovs-ofctl --bundle add-flows` of the
same changed flows, in the same run.

    sudo .venv/bin/python -m bench.bench_security_groups
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import MappingProxyType

from bench.harness import BenchHost, start_osken
from controller import ofwire
from controller import pipeline as pl
from controller.compiler import clear_caches, compile_all
from controller.compiler.acl import rule_shape
from controller.intent import (
    FixedIP,
    Intent,
    Network,
    Port,
    SecurityGroup,
    SecurityGroupRule,
)
from controller.reconciler import SwitchSync, diff_flows
from controller.topology import Binding, SwitchView, TopologyView

PORTS, GROUPS, SWITCHES = 500, 50, 5
REMOTE_RULES = 4  # each group admits TCP from 4 other groups (remote_group_id)
BENCH_DPID = 0x5EC0


def _id(kind: str, n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"bench-sg-{kind}-{n}"))


def world() -> tuple[Intent, TopologyView]:
    net = Network(_id("net", 0), "p", "n", "vxlan", 10)
    groups = {_id("sg", g): SecurityGroup(_id("sg", g), "p", f"sg{g}") for g in range(GROUPS)}
    gids = list(groups)
    rules = {}
    for g, gid in enumerate(gids):
        group_rules = [SecurityGroupRule(_id("r", 10 * g + j), "p", gid, "ingress", "IPv4",
                                         "tcp", 1000 + j, 1000 + j,
                                         remote_group_id=gids[(g + j) % GROUPS])
                       for j in range(1, 1 + REMOTE_RULES)]
        group_rules += [SecurityGroupRule(_id("r", 10 * g + 8), "p", gid, "egress", "IPv4"),
                        SecurityGroupRule(_id("r", 10 * g + 9), "p", gid, "egress", "IPv6")]
        for r in group_rules:
            rules[r.id] = r
    ports = {}
    for i in range(PORTS):
        sgs = (gids[i % GROUPS],) if i % 3 else (gids[i % GROUPS], gids[(i * 7) % GROUPS])
        p = Port(_id("port", i), "p", net.id, f"p{i}",
                 f"fa:16:3e:{(i >> 8) & 0xff:02x}:{i & 0xff:02x}:01",
                 (FixedIP(_id("sub", 0), f"10.{i >> 8}.{i & 0xff}.5"),),
                 security_groups=tuple(dict.fromkeys(sgs)))
        ports[p.id] = p
    intent = Intent(1, networks=MappingProxyType({net.id: net}),
                    ports=MappingProxyType(ports), security_groups=MappingProxyType(groups),
                    security_group_rules=MappingProxyType(rules))
    switches = {BENCH_DPID + s: SwitchView(BENCH_DPID + s, f"hv{s}", "br-int")
                for s in range(SWITCHES)}
    bindings = {pid: Binding(pid, f"hv{i % SWITCHES}", "br-int", BENCH_DPID + i % SWITCHES,
                             10 + i // SWITCHES, f"t{i}")
                for i, pid in enumerate(sorted(ports))}
    return intent, TopologyView(1, MappingProxyType(switches), MappingProxyType(bindings))


def naive_count(intent: Intent, topo: TopologyView, dpid: int) -> int:
    """Remote-group rule flows if every (guarded port, remote member address) pair were
    a flow of its own (no conjunction)."""
    local = [intent.ports[b.port_id] for b in topo.bindings.values() if b.datapath_id == dpid]
    members: dict[str, int] = {}
    for p in intent.ports.values():
        for sg in p.security_groups:
            members[sg] = members.get(sg, 0) + len(p.fixed_ips)
    total = 0
    for port in local:
        for sg in port.security_groups:
            for rule in intent.security_group_rules.values():
                if rule.security_group_id != sg or rule.remote_group_id is None:
                    continue
                shape = rule_shape(rule)
                pieces = len(shape.fields) if shape else 1
                total += pieces * members.get(rule.remote_group_id, 0)
    return total


def acl_flows(desired) -> int:  # type: ignore[no-untyped-def]
    return sum(1 for f in desired.flows.values() if f.table in ("egress_acl", "ingress_acl"))


def conj_flows(desired) -> int:  # type: ignore[no-untyped-def]
    """Flows of remote-group rules: conjunctive clauses and conj_id flows."""
    prio = pl.INGRESS_ACL.priorities["rule_conj"]
    return sum(1 for f in desired.flows.values()
               if f.table in ("egress_acl", "ingress_acl") and f.priority == prio)


def main() -> int:
    intent, topo = world()
    compile_s = []
    for _ in range(3):
        clear_caches()
        t0 = time.perf_counter()
        desired = compile_all(intent, topo)
        compile_s.append(time.perf_counter() - t0)
    dpid = BENCH_DPID
    ours, naive = acl_flows(desired[dpid]), naive_count(intent, topo, dpid)
    conj = conj_flows(desired[dpid])

    # one port joins a group whose members other rules name as a remote group
    mover = sorted(intent.ports)[7]
    port = intent.ports[mover]
    joined = dataclasses.replace(port, security_groups=(*port.security_groups,
                                                        sorted(intent.security_groups)[3]))
    intent2 = dataclasses.replace(intent, generation=2,
                                  ports=MappingProxyType({**intent.ports, mover: joined}))
    t0 = time.perf_counter()
    desired2 = compile_all(intent2, topo)
    recompile = time.perf_counter() - t0
    mover_switch = topo.bindings[mover].datapath_id
    diffs = {d: diff_flows(dict(desired[d].flows), desired2[d].flows) for d in desired}
    changed = sum(len(x.adds) + len(x.deletes) for x in diffs.values())

    host = BenchHost("sgbench")
    try:
        host.ovs.add_bridge("br-int", datapath_id=mover_switch)
        host.ovs.add_bridge("br-base", datapath_id=0xBA5E)
        catcher = start_osken(host.host_ip, host.of_port)
        host.ovs.set_controller("br-int", f"tcp:{host.host_ip}:{host.of_port}")
        sync = SwitchSync(catcher.wait(mover_switch))
        sync.push(desired[mover_switch])
        apply_s, base_s = [], []
        for i in range(5):
            target = desired2 if i % 2 == 0 else desired
            t0 = time.perf_counter()
            sync.push(target[mover_switch])
            apply_s.append(time.perf_counter() - t0)
        d = diffs[mover_switch]
        with tempfile.NamedTemporaryFile("w", suffix=".flows", delete=False) as fh:
            for f in d.adds:
                fh.write(ofwire.to_ofctl(f) + "\n")
            path = Path(fh.name)
        for _ in range(5):
            t0 = time.perf_counter()
            host.ovs.ofctl("--bundle", "add-flows", "br-base", str(path))
            base_s.append(time.perf_counter() - t0)
        path.unlink()
        installed = len(host.ovs.dump_flows("br-int", stats=False))
    finally:
        host.close()

    print("command: sudo .venv/bin/python -m bench.bench_security_groups")
    print(f"{PORTS} ports on {SWITCHES} switches, {GROUPS} security groups, each admitting "
          f"TCP from {REMOTE_RULES} other groups (remote_group_id) plus egress-anywhere")
    print(f"remote-group rule flows on one switch: {conj} with conjunctions; {naive} if every "
          f"(guarded port, member address) pair were a flow ({naive / max(conj, 1):.1f}x)")
    print(f"all ACL flows on that switch: {ours} (naive: {ours - conj + naive})")
    print(f"all flows installed on that switch: {installed}")
    print(f"full compile of {SWITCHES} switches, cold: median {statistics.median(compile_s):.3f} s")
    ofport = topo.bindings[mover].ofport
    owner = pl.cookie(pl.Owner.PORT, port.key)

    def about_mover(f, dpid: int) -> bool:  # type: ignore[no-untyped-def]
        guards = dpid == mover_switch and any(
            m.field in ("in_port", pl.REG_OUT_PORT) and m.value == ofport for m in f.match)
        return f.cookie == owner or guards

    only_mover = all(about_mover(f, dp) for dp, x in diffs.items() for f in x.adds + x.deletes)
    print(f"one membership change: recompile {recompile * 1000:.1f} ms (warm caches); "
          f"{changed} flows change across all switches; all of them the moved port's own "
          f"(its cookie, or a rule clause guarding its ofport): {only_mover}")
    print(f"apply on the port's switch (diff + bundle + commit): median "
          f"{statistics.median(apply_s) * 1000:.1f} ms; ovs-ofctl --bundle add-flows of the "
          f"same {len(diffs[mover_switch].adds)} flows: median "
          f"{statistics.median(base_s) * 1000:.1f} ms (process start included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
