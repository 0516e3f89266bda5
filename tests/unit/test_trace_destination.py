"""Which port a trace's destination address names (`tracer._destination`).

Addresses overlap between networks: the source's own network wins, then the
networks a router joins to it, then any network with a subnet holding the address;
and a trace looks at those networks' ports only, never at every port of the fleet.
"""

from __future__ import annotations

from types import MappingProxyType

from controller.explain.tracer import _destination
from controller.intent import FixedIP, Intent, Network, Port, RouterInterface, Subnet


class _NoScan(dict):
    """A ports table that fails the test if something walks all of it."""

    def values(self):  # type: ignore[override]
        raise AssertionError("every port was looked at")

    def items(self):  # type: ignore[override]
        raise AssertionError("every port was looked at")


def _world(extra_networks: int = 0) -> tuple[Intent, dict[str, Port]]:
    nets = {f"n{i}": Network(f"n{i}", "p", f"n{i}", "vxlan", 100 + i)
            for i in range(4 + extra_networks)}
    subnets = {f"s{i}": Subnet(f"s{i}", "p", f"n{i}", f"s{i}", 4,
                               "10.0.0.0/24" if i in (0, 2) else f"10.{i}.0.0/24",
                               None) for i in range(4 + extra_networks)}
    ports = {
        "src": Port("src", "p", "n0", "src", "fa:16:3e:00:00:01", (FixedIP("s0", "10.0.0.5"),)),
        "same": Port("same", "p", "n0", "same", "fa:16:3e:00:00:02",
                     (FixedIP("s0", "10.0.0.9"),)),
        "overlap": Port("overlap", "p", "n2", "overlap", "fa:16:3e:00:00:03",
                        (FixedIP("s2", "10.0.0.9"),)),
        "routed": Port("routed", "p", "n1", "routed", "fa:16:3e:00:00:04",
                       (FixedIP("s1", "10.1.0.7"),)),
        "far": Port("far", "p", "n3", "far", "fa:16:3e:00:00:05", (FixedIP("s3", "10.3.0.7"),)),
        "r0": Port("r0", "p", "n0", "", "fa:16:3e:00:00:10", (FixedIP("s0", "10.0.0.1"),),
                   device_owner="network:router_interface", device_id="R"),
        "r1": Port("r1", "p", "n1", "", "fa:16:3e:00:00:11", (FixedIP("s1", "10.1.0.1"),),
                   device_owner="network:router_interface", device_id="R"),
    }
    for i in range(extra_networks):  # many other networks' ports, never looked at
        for k in range(50):
            pid = f"x{i}-{k}"
            ports[pid] = Port(pid, "p", f"n{4 + i}", pid, "fa:16:3e:00:01:00",
                              (FixedIP(f"s{4 + i}", f"10.{4 + i}.0.{k + 2}"),))
    ifaces = {"i0": RouterInterface("i0", "R", "r0", "s0"),
              "i1": RouterInterface("i1", "R", "r1", "s1")}
    intent = Intent(1, networks=MappingProxyType(nets), subnets=MappingProxyType(subnets),
                    ports=MappingProxyType(ports), router_interfaces=MappingProxyType(ifaces))
    return intent, ports


def test_the_source_network_wins_over_an_overlapping_one() -> None:
    intent, ports = _world()
    assert _destination(intent, ports["src"], "10.0.0.9").id == "same"
    assert _destination(intent, ports["src"], "10.0.0.5") is None  # itself: no destination


def test_then_a_routed_network_then_any_network_holding_the_address() -> None:
    intent, ports = _world()
    assert _destination(intent, ports["src"], "10.1.0.7").id == "routed"
    assert _destination(intent, ports["src"], "10.3.0.7").id == "far"
    assert _destination(intent, ports["src"], "192.0.2.1") is None
    assert _destination(intent, ports["src"], "not-an-address") is None


def test_a_trace_never_walks_every_port() -> None:
    intent, ports = _world(extra_networks=40)
    walled = Intent(1, networks=intent.networks, subnets=intent.subnets,
                    ports=_NoScan(ports), router_interfaces=intent.router_interfaces)
    walled.__dict__["_ports_by_network"] = intent._ports_by_network  # as the store carries it
    assert _destination(walled, ports["src"], "10.1.0.7").id == "routed"
    assert _destination(walled, ports["src"], "10.30.0.9").id == "x26-7"
