"""The lab's plumbing: the management bridge, the underlay, and one hypervisor.

- Management: ONE Linux bridge ``lm-<prefix>`` in the root namespace holding
  100.64.x.1/24 (the controller's address); each hypervisor has ``mgmt0`` with
  100.64.x.N on a veth whose root end is a port of that bridge.
- Underlay: a namespace ``<prefix>-ul`` with a Linux bridge ``br-ul``; each
  hypervisor's ``eth1`` is a veth into it. Addresses 172.31.0.N/24 exist only in
  the hypervisors' namespaces.
- Userspace tunnelling (OVS's "userspace tunneling" how-to): ``eth1`` is a port of
  ``br-phy`` (netdev, fail_mode standalone, no controller: NORMAL), the encap IP
  sits on br-phy's internal port, so the kernel route 172.31.0.0/24 dev br-phy is
  what ovs-vswitchd's tunnel route table (``ovs/route/show``) resolves remote encap
  IPs with; it also answers ARP for the encap IP.

- External (only with the spec's `external`): see make_external_switch below.

Hypervisor N uses the same host number on both nets: hv ``host`` 11 is
100.64.x.11 and 172.31.0.11. Offloads are off on every veth end and bridge.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from topologies import netns as nsutil
from topologies.labstate import LabSandbox, LabState, Progress, mgmt_bridge_name
from topologies.ovs_instance import OvsInstance

UNDERLAY = ipaddress.IPv4Network("172.31.0.0/24")
UNDERLAY_BRIDGE = "br-ul"
PHYS_BRIDGE = "br-phy"
MGMT_IF = "mgmt0"
UNDERLAY_IF = "eth1"
FIRST_HOST = 11


@dataclass
class Hypervisor:
    """One chassis: a namespace with its own OVS, a management and an underlay address."""

    name: str
    netns: str
    host: int
    mgmt_ip: str
    encap_ip: str
    ovs: OvsInstance

    @property
    def db_remote(self) -> str:
        return self.ovs.db_remote

    def record(self) -> dict[str, Any]:
        return {
            "netns": self.netns,
            "host": self.host,
            "mgmt_ip": self.mgmt_ip,
            "encap_ip": self.encap_ip,
            "workdir": str(self.ovs.workdir),
            "db_remote": self.ovs.db_remote,
            "vswitchd_pid": self.ovs.vswitchd_pid,
            "ovsdb_pid": self.ovs._ovsdb.pid if self.ovs._ovsdb else None,
        }


def make_mgmt(sb: LabSandbox, state: LabState) -> dict[str, str]:
    """The root-namespace management bridge on a free 100.64.x.0/24."""
    bridge = mgmt_bridge_name(sb.prefix)
    with nsutil.mgmt_lock():
        subnet = nsutil.free_mgmt_subnet(24)
        host_ip = str(next(subnet.hosts()))
        sb.record_link(bridge, None)
        nsutil.run(["ip", "link", "add", bridge, "type", "bridge"])
        nsutil.add_address(bridge, f"{host_ip}/24")
    nsutil.disable_offloads(bridge)
    nsutil.link_up(bridge)
    mgmt = {"bridge": bridge, "subnet": str(subnet), "host_ip": host_ip}
    state.data["mgmt"] = mgmt
    state.save()
    return mgmt


def make_underlay(sb: LabSandbox, state: LabState) -> dict[str, str]:
    """The underlay namespace and its bridge (IPv6 off: a quiet wire to capture on)."""
    ns = sb.add_netns("ul")
    _quiet_ipv6(ns)
    nsutil.run(["ip", "link", "add", UNDERLAY_BRIDGE, "type", "bridge"], netns=ns)
    nsutil.disable_offloads(UNDERLAY_BRIDGE, netns=ns)
    nsutil.link_up(UNDERLAY_BRIDGE, netns=ns)
    underlay = {"netns": ns, "bridge": UNDERLAY_BRIDGE, "subnet": str(UNDERLAY)}
    state.data["underlay"] = underlay
    state.save()
    return underlay


def free_host(state: LabState) -> int:
    used = {int(h["host"]) for h in state.data["hypervisors"].values()}
    host = FIRST_HOST
    while host in used:
        host += 1
    if host >= UNDERLAY.num_addresses - 1:
        raise RuntimeError("no free host number on the underlay")
    return host


def make_hypervisor(sb: LabSandbox, state: LabState, name: str, progress: Progress) -> Hypervisor:
    """Namespace, mgmt + underlay links, a private OVS with system-id, encap IP and br-phy."""
    host = free_host(state)
    mgmt_net = ipaddress.IPv4Network(state.data["mgmt"]["subnet"])
    mgmt_ip = str(mgmt_net.network_address + host)
    encap_ip = str(UNDERLAY.network_address + host)
    state.set("hypervisors", name, {"host": host, "mgmt_ip": mgmt_ip, "encap_ip": encap_ip})
    ns = sb.add_netns(name)
    state.data["hypervisors"][name]["netns"] = ns
    _quiet_ipv6(ns)
    # management: root end is a port of the lab's bridge
    root_end = sb.name("m" + name)
    state.data["hypervisors"][name]["mgmt_link"] = root_end
    sb.add_veth(root_end, MGMT_IF, None, ns)
    nsutil.run(["ip", "link", "set", root_end, "master", state.data["mgmt"]["bridge"]])
    nsutil.add_address(MGMT_IF, f"{mgmt_ip}/{mgmt_net.prefixlen}", netns=ns)
    # underlay: eth1 <-> <name> in the underlay namespace, a port of br-ul
    ul = state.data["underlay"]["netns"]
    sb.add_veth(UNDERLAY_IF, name, ns, ul)
    nsutil.run(["ip", "link", "set", name, "master", UNDERLAY_BRIDGE], netns=ul)
    # OVS
    workdir = state.workdir / name
    shutil.rmtree(workdir, ignore_errors=True)
    ovs = OvsInstance(name, netns=ns, workdir=workdir, sandbox=sb, system_id=name)
    ovs.start()
    ovs.vsctl("set", "Open_vSwitch", ".", f"external_ids:loom-encap-ip={encap_ip}")
    hv = Hypervisor(name, ns, host, mgmt_ip, encap_ip, ovs)
    state.set("hypervisors", name, {**state.data["hypervisors"][name], **hv.record()})
    _make_br_phy(hv)
    progress(f"hypervisor {name}: netns {ns}, mgmt {mgmt_ip}, encap {encap_ip} on {PHYS_BRIDGE}, "
             f"ovs-vswitchd pid {ovs.vswitchd_pid}")
    return hv


def _make_br_phy(hv: Hypervisor) -> None:
    ovs = hv.ovs
    ovs.add_bridge(PHYS_BRIDGE, fail_mode="standalone")
    ovs.vsctl("--may-exist", "add-port", PHYS_BRIDGE, UNDERLAY_IF)
    nsutil.add_address(PHYS_BRIDGE, f"{hv.encap_ip}/{UNDERLAY.prefixlen}", netns=hv.netns)
    nsutil.link_up(PHYS_BRIDGE, netns=hv.netns)
    ensure_tunnel_route(ovs)


def ensure_tunnel_route(ovs: OvsInstance) -> str:
    """ovs-vswitchd caches the kernel's routes; add the underlay route by hand if it
    has not (yet) picked it up, as the how-to says. Returns the route table."""
    wanted = f"{UNDERLAY} dev {PHYS_BRIDGE}"
    table = ovs.appctl("ovs/route/show")
    if wanted not in table:
        ovs.appctl("ovs/route/add", str(UNDERLAY), PHYS_BRIDGE)
        table = ovs.appctl("ovs/route/show")
    if wanted not in table:
        raise RuntimeError(f"{ovs.name}: no tunnel route {wanted}:\n{table}")
    return table


TUNNEL_TYPES = ("vxlan", "gre", "geneve")


def tunnel_ports(hv: Hypervisor, bridge: str) -> list[str]:
    """Names of the tunnel interfaces on `bridge` of a hypervisor."""
    on_bridge = set(hv.ovs.vsctl("list-ports", bridge).split())
    out = hv.ovs.vsctl("--columns=name,type", "--format=csv", "--no-headings", "list",
                       "Interface")
    rows = [[field.strip('"') for field in line.split(",")] for line in out.splitlines()]
    return sorted(r[0] for r in rows if len(r) == 2 and r[1] in TUNNEL_TYPES
                  and r[0] in on_bridge)


def ping_underlay(hvs: list[Hypervisor]) -> list[str]:
    """Each hypervisor pings every other's encap IP from its kernel, through br-phy.

    Proves the underlay; once a bridge has a tunnel port (OVS's native tunnelling is
    then on), ovs-vswitchd also snoops the ARP replies into its tunnel neighbour
    cache, so the first tunnelled packet is not dropped while OVS resolves the
    remote's MAC. Returns the pairs that did not answer."""
    failed = []
    for a in hvs:
        for b in hvs:
            if a is not b:
                proc = nsutil.run(["ping", "-n", "-q", "-c", "1", "-W", "2", b.encap_ip],
                                  netns=a.netns, check=False)
                if proc.returncode != 0:
                    failed.append(f"{a.name}->{b.name}")
    return failed


def adopt_hypervisor(sb: LabSandbox, name: str, rec: dict[str, Any]) -> Hypervisor:
    """A handle on a hypervisor made by another process (its daemons are not ours)."""
    ovs = OvsInstance(name, netns=rec["netns"], workdir=Path(rec["workdir"]), sandbox=sb,
                      system_id=name)
    return Hypervisor(name, rec["netns"], int(rec["host"]), rec["mgmt_ip"], rec["encap_ip"], ovs)


def remove_hypervisor(sb: LabSandbox, state: LabState, name: str) -> None:
    """Delete one hypervisor's namespace (its daemons, taps and veths go with it), the
    root end of its management veth, and its workdir."""
    rec = state.data["hypervisors"].get(name, {})
    if rec.get("netns") in sb.netns:
        sb.delete_netns(rec["netns"])
    if rec.get("mgmt_link"):
        sb.delete_link(rec["mgmt_link"])
    if rec.get("workdir"):
        sb.drop_processes(rec["workdir"])
        shutil.rmtree(rec["workdir"], ignore_errors=True)
    state.drop("hypervisors", name)


def _quiet_ipv6(ns: str) -> None:
    for key in ("net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"):
        nsutil.sysctl(key, 1, netns=ns)


# -- the external ("provider") network ---------------------------------------------------
# A physical network outside Loom: one Linux bridge EXT_SWITCH in the namespace
# ``<prefix>-ext`` is the physical switch; every hypervisor that maps the physnet has
# EXT_UPLINK (a veth into it) as a port of its provider bridge PROVIDER_BRIDGE
# (standalone, a learning switch; Loom patches br-int to it). The outside host
# ``<prefix>-outside`` hangs off the same switch.
PROVIDER_BRIDGE = "br-ex"
EXT_SWITCH = "extsw"
EXT_UPLINK = "ext0"
OUTSIDE_PEER = "outside"
ECHO_HTTP = Path(__file__).resolve().parent / "echo_http.py"


def make_external_switch(sb: LabSandbox, state: LabState, physnet: str) -> str:
    """The physical switch's namespace and Linux bridge; returns the namespace."""
    ns = sb.add_netns("ext")
    _quiet_ipv6(ns)
    nsutil.run(["ip", "link", "add", EXT_SWITCH, "type", "bridge"], netns=ns)
    nsutil.disable_offloads(EXT_SWITCH, netns=ns)
    nsutil.link_up(EXT_SWITCH, netns=ns)
    state.data.setdefault("external", {}).update(
        netns=ns, bridge=EXT_SWITCH, physical_network=physnet, hypervisors={})
    state.save()
    return ns


def plumb_external(sb: LabSandbox, state: LabState, hv: Hypervisor, gateway: bool) -> None:
    """br-ex on `hv`, its uplink into the physical switch, the bridge mapping, and
    `loom-gateway=true` if `gateway`."""
    ext = state.data["external"]
    sb.add_veth(EXT_UPLINK, hv.name, hv.netns, ext["netns"])
    nsutil.run(["ip", "link", "set", hv.name, "master", EXT_SWITCH], netns=ext["netns"])
    hv.ovs.add_bridge(PROVIDER_BRIDGE, fail_mode="standalone")
    hv.ovs.vsctl("--may-exist", "add-port", PROVIDER_BRIDGE, EXT_UPLINK)
    hv.ovs.vsctl("set", "Open_vSwitch", ".",
                 f"external_ids:loom-bridge-mappings={ext['physical_network']}:"
                 f"{PROVIDER_BRIDGE}")
    if gateway:
        hv.ovs.vsctl("set", "Open_vSwitch", ".", "external_ids:loom-gateway=true")
    ext["hypervisors"][hv.name] = {"gateway": gateway}
    state.save()


def unplumb_external(sb: LabSandbox, state: LabState, name: str) -> None:
    """Forget a removed hypervisor's uplink (the veth went with its namespace)."""
    ext = state.data.get("external") or {}
    if name in ext.get("hypervisors", {}):
        sb.delete_link(name, ext["netns"])
        ext["hypervisors"].pop(name)
        state.save()


def make_outside(sb: LabSandbox, state: LabState, cidr: str, http_port: int) -> str:
    """The outside host: a namespace on the physical switch with `cidr`, and (unless
    `http_port` is 0) the echo HTTP server. Returns the namespace."""
    ext = state.data["external"]
    ns = sb.add_netns("outside")
    _quiet_ipv6(ns)
    sb.add_veth("eth0", OUTSIDE_PEER, ns, ext["netns"])
    nsutil.run(["ip", "link", "set", OUTSIDE_PEER, "master", EXT_SWITCH], netns=ext["netns"])
    nsutil.add_address("eth0", cidr, netns=ns)
    out = nsutil.run(["ip", "-j", "link", "show", "dev", "eth0"], netns=ns).stdout
    mac = str(json.loads(out)[0]["address"]).lower()
    ext.update(outside_netns=ns, outside=cidr, outside_mac=mac, http_port=http_port)
    state.save()
    if http_port:
        log = state.workdir / "outside" / "http.log"
        ext["http_pid"] = start_echo_http(sb, ns, http_port, log)
        ext["http_log"] = str(log)
        state.save()
    return ns


def start_echo_http(sb: LabSandbox, netns: str, port: int, log: Path,
                    timeout: float = 10.0) -> int:
    """echo_http.py in `netns` on `port`, recorded (marker: its log path); returns its
    pid once it listens."""
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = nsutil.popen([sys.executable, str(ECHO_HTTP), "--port", str(port), "--log",
                         str(log)], netns=netns)
    sb.record_process(proc.pid, str(log))
    deadline = time.monotonic() + timeout
    while not nsutil.run(["ss", "-Hltn", f"sport = :{port}"], netns=netns,
                         check=False).stdout.strip():
        if proc.poll() is not None:
            raise RuntimeError(f"echo_http.py on port {port} in {netns} exited "
                               f"{proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"echo_http.py in {netns} not listening on {port} "
                               f"in {timeout:.0f}s")
        time.sleep(0.05)
    return proc.pid
