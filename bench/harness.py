"""Shared bench plumbing: a private OVS in a namespace, os-ken in-process, synthetic intent.

The benchmarks measure Loom's real compiler and reconciler over a real OpenFlow
session to a real ovs-vswitchd; only the intent is generated instead of typed
into the API, so 100k flows take seconds to describe instead of an hour.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from types import MappingProxyType
from typing import Any

from controller.intent import FixedIP, Intent, Network, Port
from controller.southbound.openflow import OpenFlowChannel
from controller.topology import Binding, SwitchView, TopologyView
from topologies.controller_process import free_port
from topologies.netns import Sandbox
from topologies.ovs_instance import DEFAULT_BASE, OvsInstance


class ChannelCatcher:
    """Stands in for the engine inside os-ken's app: it only keeps the channels."""

    def __init__(self) -> None:
        self.channels: dict[int, OpenFlowChannel] = {}
        self._cond = threading.Condition()

    def switch_connected(self, channel: OpenFlowChannel) -> None:
        with self._cond:
            self.channels[channel.datapath_id] = channel
            self._cond.notify_all()

    def switch_disconnected(self, channel: OpenFlowChannel) -> None:
        with self._cond:
            self.channels.pop(channel.datapath_id, None)

    def kick(self, *_: Any) -> None:
        pass

    # The fabric side of the engine: a bench switch is not part of any fabric.
    def of_switch_up(self, *_: Any) -> None:
        pass

    def of_switch_down(self, *_: Any) -> None:
        pass

    def of_port(self, *_: Any) -> None:
        pass

    def lldp_in(self, *_: Any) -> bool:
        return False

    def probe_targets(self) -> list[tuple[int, int]]:
        return []

    def wait(self, dpid: int, timeout: float = 30.0) -> OpenFlowChannel:
        deadline = time.monotonic() + timeout
        with self._cond:
            while dpid not in self.channels:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"switch {dpid:#x} did not connect")
                self._cond.wait(left)
            return self.channels[dpid]


def start_osken(host: str, port: int) -> ChannelCatcher:
    """Run os-ken's AppManager with Loom's OpenFlow app in a background thread."""
    from os_ken import cfg
    from os_ken.base.app_manager import AppManager

    import apps.loom_ofp
    from controller.ofwire import oskenfast

    oskenfast.install_raw_multipart_parsers()
    catcher = ChannelCatcher()
    cfg.CONF(args=[], project="os_ken")
    cfg.CONF.set_override("ofp_listen_host", host)
    cfg.CONF.set_override("ofp_tcp_listen_port", port)
    apps.loom_ofp.ENGINE = catcher
    threading.Thread(target=AppManager.run_apps, args=(["apps.loom_ofp"],), daemon=True).start()
    return catcher


LOOM_DPID = 0x10AD  # the bridge Loom's reconciler pushes to
BASE_DPID = 0xBA5E  # the bridge `ovs-ofctl --bundle` pushes to: the baseline, same OVS


def push_bridges(host: BenchHost) -> tuple[ChannelCatcher, OpenFlowChannel]:
    """br-int (Loom's, connected to os-ken) and br-base (ovs-ofctl's) on `host`: the
    two sides of a push benchmark. Returns the catcher and br-int's channel."""
    host.ovs.add_bridge("br-int", datapath_id=LOOM_DPID)
    host.ovs.add_bridge("br-base", datapath_id=BASE_DPID)
    catcher = start_osken(host.host_ip, host.of_port)
    host.ovs.set_controller("br-int", f"tcp:{host.host_ip}:{host.of_port}")
    return catcher, catcher.wait(LOOM_DPID)


class BenchHost:
    """One private OVS instance in its own namespace, reachable from the root namespace."""

    def __init__(self, name: str = "bench") -> None:
        self.sandbox = Sandbox()
        workdir = DEFAULT_BASE / f"{self.sandbox.prefix}-{name}"
        shutil.rmtree(workdir, ignore_errors=True)
        self.ovs = OvsInstance(name, netns=self.sandbox.add_netns(name), workdir=workdir,
                               sandbox=self.sandbox)
        self.ovs.start()
        self.host_ip, self.ns_ip = self.ovs.add_mgmt_link()
        self.of_port = free_port(self.host_ip)

    def close(self) -> None:
        self.ovs.close(remove_workdir=True)
        self.sandbox.cleanup()


def _uuid(kind: str, n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"bench-{kind}-{n}"))


def synthetic(n_ports: int, dpid: int, ports_per_network: int = 50,
              generation: int = 1) -> tuple[Intent, TopologyView]:
    """n_ports bound ports on one switch, in networks of `ports_per_network`."""
    networks: dict[str, Network] = {}
    ports: dict[str, Port] = {}
    bindings: dict[str, Binding] = {}
    for i in range(n_ports):
        net_idx = i // ports_per_network
        net_id = _uuid("net", net_idx)
        if net_id not in networks:
            networks[net_id] = Network(net_id, f"project-{net_idx % 7}", f"net{net_idx}",
                                       "vxlan", 1000 + net_idx)
        host = i % ports_per_network + 2
        pid = _uuid("port", i)
        ports[pid] = Port(pid, networks[net_id].project_id, net_id, f"p{i}",
                          f"fa:16:3e:{(i >> 16) & 0xff:02x}:{(i >> 8) & 0xff:02x}:{i & 0xff:02x}",
                          (FixedIP(_uuid("sub", net_idx), f"10.{net_idx % 250}.0.{host}"),))
        bindings[pid] = Binding(pid, "bench", "br-int", dpid, 10 + i, f"tap{i}")
    intent = Intent(generation=generation, networks=MappingProxyType(networks),
                    ports=MappingProxyType(ports))
    topo = TopologyView(1, MappingProxyType({dpid: SwitchView(dpid, "bench", "br-int")}),
                        MappingProxyType(bindings))
    return intent, topo
