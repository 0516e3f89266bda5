"""A multi-host Loom lab on one machine: hypervisors as namespaces, each with its own OVS.

    python -m topologies.lab up SPEC [--name NAME] [--no-controller] [--keep-on-error]
    python -m topologies.lab status [SPEC|NAME] [--json]
    python -m topologies.lab add-hypervisor SPEC|NAME HV
    python -m topologies.lab remove-hypervisor SPEC|NAME HV
    python -m topologies.lab down SPEC|NAME [--keep-logs]

Python: ``lab = Lab.up(load_spec(path))``; ``lab.guest("a1").ping(...)``;
``lab.hypervisor("hv1").ovs.dump_flows("br-int")``; ``lab.api.get(...)``; ``lab.down()``.
``Lab.load(name)`` attaches to a lab brought up by another process.

`up` prints one line per step and records everything it makes, as it makes it, in
``/run/loom-lab/<name>.json``; `down` removes exactly that (see labstate.py), also
after `up` was killed half-way. The plumbing is in labnet.py, the spec in labspec.py.

With `external` in the spec, `up` also builds a provider network outside Loom (br-ex
on the mapped hypervisors, joined by one Linux bridge, the "physical switch", in
``<prefix>-ext``; the outside host ``<prefix>-outside`` with an HTTP server that
answers with the caller's address), sets loom-bridge-mappings and loom-gateway, and
creates the flat ``router:external`` network and its subnet, the spec's routers and
the guests' floating IPs through the API. ``lab.external``, ``lab.outside``.

Guests on a subnet with ``dhcp: true`` (labspec.DHCP_DEFAULT for subnets that do not
say) get no static IPv4 configuration: once their ports are ACTIVE, a real DHCP client
runs in each (`Guest.dhcp()`, state in ``<workdir>/dhcp/<guest>``) and keeps running;
`up` fails unless every guest got exactly what the API says (`dhcp_problems`).

With `controllers: N` (> 1) or `nb_members: M` in the spec (an HA lab, issue 14),
`up` first runs the lab's own northbound in ``<workdir>/nb/nb<i>`` (M = 1: one
ovsdb-server; M = 3 or 5: a raft cluster made with controller/store/nb_cluster.py,
raft on 127.0.0.1, clients on each member's unix socket), then N controllers c1..cN,
each with ``--nb-db <every member's socket>`` and ``--instance-name c<i>``, its own
state dir (``<workdir>/controller/c<i>``) and ports, and the same chassis. It waits
until every instance sees every other alive and every chassis has an owner
(`wait_instances`). ``lab.controller`` is c1, ``lab.controllers`` all of them;
``kill_controller`` / ``start_controller`` and ``nb_member_stop`` /
``nb_member_start`` are for failover tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from topologies import netns as nsutil
from topologies.api_client import ApiClient
from topologies.controller_process import ROOT, ControllerProcess, free_port
from topologies.dhcp_client import DhcpError, DhcpLease, remove_netns_etc
from topologies.guest import Guest
from topologies.labnet import (
    PHYS_BRIDGE,
    PROVIDER_BRIDGE,
    UNDERLAY_IF,
    Hypervisor,
    adopt_hypervisor,
    make_external_switch,
    make_hypervisor,
    make_mgmt,
    make_outside,
    make_underlay,
    plumb_external,
    remove_hypervisor,
    tunnel_ports,
    unplumb_external,
)
from topologies.labspec import ControllerSpec, LabSpec, PlacedGuest, SpecError, load_spec
from topologies.labstate import (
    LabError,
    LabSandbox,
    LabState,
    Progress,
    controller_records,
    lab_lock,
    lab_names,
    nb_member_pid,
    pid_alive,
    state_path,
    stop_controller,
    teardown,
)
from topologies.netns import Sandbox

# python-ovs (imported with controller.store, for the HA lab's northbound) imports
# eventlet, which prints a deprecation notice on import: not the lab's to show.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

INTEGRATION_BRIDGE = "br-int"
# How long the underlay may take to answer, and OVS's tunnel neighbour cache to hold
# every peer: conditions waited on with a deadline, because one 2 s ping failed whole
# bring-ups on a loaded machine.
UNDERLAY_TIMEOUT = 30.0
NEIGHBOUR_TIMEOUT = 15.0
# Only the interface that holds an address answers ARP for it (arp_ignore=1), and ARP
# requests use the outgoing interface's own address (arp_announce=2). With the
# defaults (0, 0) the kernel also answers for the encap IP from eth1, the underlay
# NIC inside br-phy, with eth1's MAC: a peer that caches that MAC sends its tunnel
# packets where OVS's br-phy never takes them in, and the tunnel drops everything.
ARP_SYSCTLS = (("arp_ignore", 1), ("arp_announce", 2))
ARP_SYSCTL_SCOPES = ("all", "default", UNDERLAY_IF, PHYS_BRIDGE)
# How long a DHCP guest may take to get its lease (dhclient's first try).
DHCP_TIMEOUT = 20.0
# How long a controller may take to answer /v1/health after its start.
CONTROLLER_START_TIMEOUT = 30.0
# How long the instances of an HA lab may take to see each other and own every chassis
# (an instance first seen counts as alive for dead_after_s, 3 s, before any decision).
INSTANCES_TIMEOUT = 30.0
# Signals after which a controller is waited for until it has exited.
ENDING_SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)


def dhcp_problems(lease: DhcpLease, fixed_ip: str, subnet: dict[str, Any], mtu: int,
                  configured: list[str] | None = None) -> list[str]:
    """What is wrong with a guest's DHCP lease, given its port's fixed IPv4 address, its
    API subnet and its network's MTU (empty: all as the API says). Expected: the fixed
    IP with the subnet's prefix; router = gateway_ip; DNS = dns_nameservers (in order);
    option 26 = the network MTU; option 121 = host_routes plus the default route via
    gateway_ip when there are host routes, none otherwise. `configured`: the guest's
    addresses now (the leased one must be among them)."""
    prefix = ipaddress.ip_network(subnet["cidr"]).prefixlen
    want = f"{fixed_ip}/{prefix}"
    gw = subnet.get("gateway_ip")
    problems = []
    if lease.cidr != want:
        problems.append(f"address {lease.cidr}, but the port's fixed IP is {want}")
    if list(lease.routers) != ([gw] if gw else []):
        problems.append(f"routers {list(lease.routers)}, but gateway_ip is {gw}")
    dns = [str(d) for d in subnet.get("dns_nameservers") or []]
    if list(lease.dns) != dns:
        problems.append(f"DNS servers {list(lease.dns)}, but dns_nameservers is {dns}")
    if lease.mtu != mtu:
        problems.append(f"MTU {lease.mtu}, but the network's is {mtu}")

    def norm(dest: str, hop: str) -> tuple[str, str]:
        return str(ipaddress.ip_network(dest, strict=False)), str(ipaddress.ip_address(hop))

    routes = {norm(r["destination"], r["nexthop"]) for r in subnet.get("host_routes") or []}
    if routes and gw:
        routes.add(("0.0.0.0/0", str(gw)))
    got = {norm(d, h) for d, h in lease.routes}
    if got != routes:
        problems.append(f"classless routes {sorted(got)}, but want {sorted(routes)} "
                        "(host_routes, plus the default route if there are any)")
    if configured is not None and lease.cidr not in configured:
        problems.append(f"{lease.cidr} is not configured on eth0 (addresses: {configured})")
    return problems


def harden_arp(hv: Hypervisor) -> None:
    """One ARP answer per encap IP, from br-phy (see ARP_SYSCTLS)."""
    for scope in ARP_SYSCTL_SCOPES:
        for key, value in ARP_SYSCTLS:
            nsutil.sysctl(f"net.ipv4.conf.{scope}.{key}", value, netns=hv.netns)


def _pings(hv: Hypervisor, ip: str, timeout: float = 1.0) -> bool:
    argv = ["ping", "-n", "-q", "-c", "1", "-W", str(max(1, int(timeout))), ip]
    return nsutil.run(argv, netns=hv.netns, check=False).returncode == 0


def wait_underlay(hvs: list[Hypervisor], timeout: float = UNDERLAY_TIMEOUT) -> int:
    """Wait until every hypervisor's kernel pings every other's encap IP through br-phy.

    Pairs are retried until the deadline, not tried once: on a loaded machine a fresh
    ovs-vswitchd can take seconds to forward its first frames. Returns the number of
    rounds it took; raises LabError naming the pairs still silent at the deadline.
    """
    pending = [(a, b) for a in hvs for b in hvs if a is not b]
    deadline = time.monotonic() + timeout
    rounds = 0
    while pending:
        rounds += 1
        pending = [(a, b) for a, b in pending if not _pings(a, b.encap_ip)]
        if not pending:
            break
        if time.monotonic() > deadline:
            pairs = ", ".join(f"{a.name}->{b.name} ({b.encap_ip})" for a, b in pending)
            raise LabError(f"underlay: no answer in {timeout:.0f}s for {pairs}")
        time.sleep(0.2)
    return rounds


def bridge_mac(hv: Hypervisor, ifname: str = PHYS_BRIDGE) -> str:
    """The MAC of an interface in a hypervisor's namespace (br-phy: the encap IP's)."""
    out = nsutil.run(["ip", "-j", "link", "show", "dev", ifname], netns=hv.netns).stdout
    return str(json.loads(out)[0]["address"]).lower()


def tunnel_neighbours(hv: Hypervisor) -> dict[str, tuple[str, str]]:
    """OVS's tunnel neighbour cache (`tnl/neigh/show`): IP -> (MAC, bridge), live
    entries only (an entry marked STALE is not used for the next packet)."""
    out: dict[str, tuple[str, str]] = {}
    for line in hv.ovs.appctl("tnl/neigh/show").splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[1].count(":") == 5:
            out[fields[0]] = (fields[1].lower(), fields[2])
    return out


def prime_tunnel_neighbours(hvs: list[Hypervisor],
                            timeout: float = NEIGHBOUR_TIMEOUT) -> dict[str, str]:
    """Put every peer's encap IP -> br-phy MAC into each OVS's tunnel neighbour cache,
    and check with `tnl/neigh/show` that it holds exactly that.

    Without an entry, OVS drops the first packet into a tunnel while it ARPs for the
    remote endpoint. Snooping cannot be relied on to fill it: the warm-up pings ran
    before any tunnel port existed (OVS snoops only once native tunnelling is on),
    and afterwards the kernel's own neighbour entries mean no ARP is sent at all.
    `tnl/neigh/set` entries age like snooped ones (15 min unused; every tunnelled
    packet refreshes them). Returns encap IP -> MAC; raises LabError if a cache still
    lacks a peer, or holds another MAC for it, at the deadline.
    """
    macs = {hv.encap_ip: bridge_mac(hv) for hv in hvs}
    deadline = time.monotonic() + timeout
    while True:
        wrong: list[str] = []
        for hv in hvs:
            held = tunnel_neighbours(hv)
            for peer in hvs:
                if peer is hv:
                    continue
                want = macs[peer.encap_ip]
                if held.get(peer.encap_ip) != (want, PHYS_BRIDGE):
                    hv.ovs.appctl("tnl/neigh/set", PHYS_BRIDGE, peer.encap_ip, want)
                    wrong.append(f"{hv.name}: {peer.encap_ip} is "
                                 f"{held.get(peer.encap_ip, ('nothing',))[0]}, want {want}")
        if not wrong:
            return macs
        if time.monotonic() > deadline:
            raise LabError("tunnel neighbours: OVS does not hold the peers' br-phy MACs: "
                           + "; ".join(wrong))
        time.sleep(0.1)


def _printer() -> Progress:
    start = time.monotonic()

    def say(line: str) -> None:
        print(f"[{time.monotonic() - start:6.1f}s] {line}", flush=True)

    return say


class Lab:
    """A running lab. Make one with `Lab.up(spec)` or attach with `Lab.load(name)`."""

    def __init__(self, state: LabState, spec: LabSpec | None, progress: Progress):
        self.state = state
        self.spec = spec
        self.progress = progress
        self.sandbox = LabSandbox(state)
        self.hypervisors: dict[str, Hypervisor] = {}
        self.guests: dict[str, Guest] = {}
        self.controller: ControllerProcess | None = None  # the first (c1 in an HA lab)
        # every controller: an HA lab's by instance name (c1..cN), else {"controller": it}
        self.controllers: dict[str, ControllerProcess] = {}
        self._gateways: dict[str, str | None] = {}  # project/network -> IPv4 gateway_ip
        self._v4_subnets: dict[str, dict[str, Any]] = {}  # project/network -> API subnet

    # -- public API -------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.state.name

    @property
    def prefix(self) -> str:
        return self.state.prefix

    @property
    def api(self) -> ApiClient:
        """The API as admin: the controller's; in an HA lab the first running one's
        (every instance serves the same northbound)."""
        recs = [r for r in controller_records(self.state.data) if r.get("rest_url")]
        if not recs:
            raise LabError(f"lab {self.name} has no controller")
        rec = next((r for r in recs if _running(r)), recs[0]) if len(recs) > 1 else recs[0]
        return ApiClient(rec["rest_url"], token=admin_token(rec))

    def guest(self, name: str) -> Guest:
        try:
            return self.guests[name]
        except KeyError:
            raise KeyError(f"lab {self.name} has no guest {name!r}") from None

    def guest_info(self, name: str) -> dict[str, Any]:
        """project, network, hypervisor, ip_cidr, mac, port_id, netns of a guest."""
        return dict(self.state.data["guests"][name])

    def hypervisor(self, name: str) -> Hypervisor:
        try:
            return self.hypervisors[name]
        except KeyError:
            raise KeyError(f"lab {self.name} has no hypervisor {name!r}") from None

    @property
    def underlay_netns(self) -> str:
        return str(self.state.data["underlay"]["netns"])

    @property
    def external(self) -> dict[str, Any]:
        """The external network as made: netns, physical_network, hypervisors
        ({name: {gateway}}), outside, outside_netns, http_port, network_id,
        subnet_id, cidr, gateway_ip; {} if the spec has none."""
        return dict(self.state.data.get("external") or {})

    @property
    def outside(self) -> Guest:
        """A handle on the outside host (ping, tcp_connect, run, like a guest)."""
        ext = self.state.data.get("external") or {}
        if not ext.get("outside_netns"):
            raise LabError(f"lab {self.name} has no external network")
        return Guest.existing("outside", ext["outside_netns"], ext["outside_mac"],
                              ext["outside"], sandbox=self.sandbox, port_id="outside")

    def router_info(self, project: str, router: str) -> dict[str, Any]:
        """id, gateway_ip (None without an external gateway), interfaces of a router."""
        return dict(self.state.data["api"]["routers"][f"{project}/{router}"])

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- up -----------------------------------------------------------------------
    @classmethod
    def up(
        cls,
        spec: LabSpec | str | Path,
        *,
        name: str | None = None,
        controller: bool = True,
        keep_on_error: bool = False,
        wait_active: bool = True,
        progress: Progress | None = None,
    ) -> Lab:
        """Bring a lab up; on failure remove what was made (logs stay) unless keep_on_error.

        `controller=False`: hypervisors, management and underlay only (no controller,
        no API objects, no guests), e.g. to test the underlay by itself.
        """
        say = progress or _printer()
        if not isinstance(spec, LabSpec):
            spec = load_spec(spec, name)
        elif name:
            spec = dataclasses.replace(spec, name=name)
        with lab_lock(spec.name):
            prefix = Sandbox._fresh_prefix()
            state = LabState.create(spec.name, prefix, spec_file=spec.source,
                                    with_controller=controller)
            lab = cls(state, spec, say)
            say(f"lab {spec.name}: prefix {prefix}, state {state.path}, "
                f"{len(spec.hypervisors)} hypervisor(s), {len(spec.guests())} guest(s)")
            try:
                lab._bring_up(controller, wait_active)
            except BaseException as exc:
                lab._failed(exc, keep_on_error)
                raise
        return lab

    def _bring_up(self, with_controller: bool, wait_active: bool) -> None:
        assert self.spec is not None
        t0 = time.monotonic()
        mgmt = make_mgmt(self.sandbox, self.state)
        self.progress(f"management bridge {mgmt['bridge']}: {mgmt['host_ip']}/24 "
                      f"({mgmt['subnet']})")
        ul = make_underlay(self.sandbox, self.state)
        self.progress(f"underlay: netns {ul['netns']}, bridge {ul['bridge']}, {ul['subnet']}")
        for hv in self.spec.hypervisors:
            self.hypervisors[hv.name] = made = make_hypervisor(self.sandbox, self.state,
                                                               hv.name, self.progress)
            harden_arp(made)
        self._warm_up(list(self.hypervisors.values()))
        if self.spec.external is not None:
            self._make_external()
        self._timing("plumbing", t0)
        if with_controller:
            t1 = time.monotonic()
            for rec in self.state.data["hypervisors"].values():
                rec["chassis_source"] = "command-line"
            if self.spec.shared_nb:
                self._start_nb()
                self._timing("northbound", t1)
                self._plan_controllers()
                t1 = time.monotonic()
            self._start_controllers()
            if self.ha:
                self.wait_instances()
            self._wait_integration_bridges(self.hypervisors.values())
            self._wait_provider_patches()
            self._timing("controller", t1)
            t2 = time.monotonic()
            ports = self._create_api_objects()
            self._timing("api", t2)
            t3 = time.monotonic()
            for pg in self.spec.guests():
                self._make_guest(pg, ports[pg.name])
            self._timing("guests", t3)
            if wait_active:
                t4 = time.monotonic()
                self.wait_ports_active([p["id"] for p in ports.values()])
                if len(self.hypervisors) > 1:
                    self._prime_tunnels()
                self._timing("ports_active", t4)
            dhcp = [pg for pg in self.spec.guests() if self._dhcp_subnet(pg) is not None]
            if dhcp:
                t5 = time.monotonic()
                if not wait_active:  # DHCP needs the port's flows: wait for those ports
                    self.wait_ports_active([ports[pg.name]["id"] for pg in dhcp])
                self._dhcp_guests(dhcp, ports)
                self._timing("dhcp", t5)
        self.state.data["phase"] = "up"
        self._timing("total", t0)
        self.progress(f"lab {self.name} is up in {time.monotonic() - t0:.1f}s; "
                      f"tear down: python -m topologies.lab down {self.name}")

    def _make_external(self) -> None:
        """The physical switch, br-ex and its uplink on each mapped hypervisor (gateways
        flagged), and the outside host with its HTTP server."""
        assert self.spec is not None and self.spec.external is not None
        ext = self.spec.external
        ns = make_external_switch(self.sandbox, self.state, ext.physical_network)
        self.state.data["external"]["all_hypervisors"] = ext.all_hypervisors
        for name in ext.hypervisors:
            plumb_external(self.sandbox, self.state, self.hypervisor(name),
                           gateway=name in ext.gateways)
        gateways = ", ".join(ext.gateways) or "none flagged: every mapping chassis may SNAT"
        self.progress(f"external {ext.physical_network}: switch netns {ns}; {PROVIDER_BRIDGE} "
                      f"on {', '.join(ext.hypervisors)} (gateways: {gateways})")
        outside = make_outside(self.sandbox, self.state, ext.outside, ext.http_port)
        self.progress(f"outside host: netns {outside}, {ext.outside}"
                      + (f", HTTP on :{ext.http_port} (answers with the client's address)"
                         if ext.http_port else ""))

    def _wait_provider_patches(self, timeout: float = 30) -> None:
        """Loom patches br-int to br-ex on every hypervisor mapping the physnet."""
        ext = self.state.data.get("external") or {}
        deadline = time.monotonic() + timeout
        for name in ext.get("hypervisors", {}):
            hv = self.hypervisor(name)
            while len(hv.ovs.vsctl("--bare", "--columns=name", "find", "Interface",
                                   "type=patch").split()) < 2:
                if time.monotonic() > deadline:
                    raise LabError(f"{name}: no patch between {INTEGRATION_BRIDGE} and "
                                   f"{PROVIDER_BRIDGE} in {timeout:.0f}s (loom-bridge-mappings "
                                   f"{ext.get('physical_network')}:{PROVIDER_BRIDGE})")
                time.sleep(0.1)
        if ext.get("hypervisors"):
            self.progress(f"{INTEGRATION_BRIDGE} patched to {PROVIDER_BRIDGE} on "
                          f"{', '.join(ext['hypervisors'])}")

    def _warm_up(self, hvs: list[Hypervisor]) -> None:
        """The underlay answers everywhere, and OVS knows every peer's MAC."""
        rounds = wait_underlay(hvs)
        self.progress(f"underlay: {len(hvs)} encap IP(s) reach each other"
                      + (f" (after {rounds} rounds)" if rounds > 1 else ""))
        if len(hvs) > 1:
            prime_tunnel_neighbours(hvs)
            self.progress(f"tunnel neighbours: each OVS holds the {len(hvs) - 1} other "
                          f"encap IP(s) with their {PHYS_BRIDGE} MACs (tnl/neigh/show)")

    def _prime_tunnels(self, timeout: float = 15) -> None:
        """Wait for the controller's tunnel mesh, then check (and re-prime where
        needed) OVS's tunnel neighbour caches, so the first packet into each tunnel
        is not dropped. A missing mesh is reported, not fatal; a cache that cannot
        be made right is fatal (the first packets would be lost)."""
        hvs = list(self.hypervisors.values())
        deadline = time.monotonic() + timeout
        while any(not tunnel_ports(hv, INTEGRATION_BRIDGE) for hv in hvs):
            if time.monotonic() > deadline:
                self.progress("tunnels: the controller made no tunnel ports (yet)")
                break
            time.sleep(0.1)
        macs = prime_tunnel_neighbours(hvs)
        counts = ", ".join(f"{hv.name} {len(tunnel_ports(hv, INTEGRATION_BRIDGE))}"
                           for hv in hvs)
        held = ", ".join(f"{ip} {mac}" for ip, mac in sorted(macs.items()))
        self.progress(f"tunnels on {INTEGRATION_BRIDGE}: {counts}; tunnel neighbours "
                      f"primed and verified with tnl/neigh/show: {held}")

    def _timing(self, what: str, since: float) -> None:
        self.state.data["timings"][what] = round(time.monotonic() - since, 2)
        self.state.save()

    def _failed(self, exc: BaseException, keep: bool) -> None:
        self.progress(f"up failed: {type(exc).__name__}: {exc}")
        for key, ctl in self.controllers.items():
            self.progress(f"{'controller' if key == 'controller' else f'controller {key}'} "
                          f"log tail:\n" + ctl.log_tail(20))
        if keep:
            self.state.data["phase"] = "failed"
            self.state.save()
            self.progress(f"left as it is for inspection; remove with: "
                          f"python -m topologies.lab down {self.name}")
            return
        problems = teardown(self.state, self.progress, keep_workdir=True)
        self.progress(f"removed what was made; logs kept in {self.state.workdir}"
                      + (f"; problems: {problems}" if problems else ""))

    # -- controller -----------------------------------------------------------------
    def chassis_remotes(self) -> list[str]:
        """The --chassis flags: every hypervisor not added through the API."""
        return [str(h["db_remote"]) for h in self.state.data["hypervisors"].values()
                if h.get("chassis_source") == "command-line"]

    @property
    def ha(self) -> bool:
        """Whether this lab's controllers share a northbound of the lab's own (each with
        an --instance-name), rather than one controller with its embedded database."""
        return bool(self.state.data.get("controllers"))

    def _controller_names(self) -> list[str | None]:
        """What to start: an HA lab's instance names, else [None] (the one controller)."""
        return list(self.state.data.get("controllers") or {}) or [None]

    def _controller_rec(self, name: str | None) -> dict[str, Any]:
        if name is None:
            first: dict[str, Any] = self.state.data.setdefault("controller", {})
            return first
        ctls = self.state.data.get("controllers") or {}
        if name not in ctls:
            raise KeyError(f"lab {self.name} has no controller {name!r} "
                           f"(it has: {', '.join(ctls) or 'no named ones'})")
        rec: dict[str, Any] = ctls[name]
        return rec

    def _plan_controllers(self) -> None:
        """An HA lab's controller records, all written before the first one starts;
        the first one is also `controller` (what older code and tests read)."""
        assert self.spec is not None
        if self.state.data.get("controllers"):
            return
        remote = self.nb_remote
        recs: dict[str, dict[str, Any]] = {}
        for index, name in enumerate(self.spec.instance_names()):
            recs[name] = {"instance_name": name, "index": index, "nb_db": remote,
                          "state_dir": str(self.state.workdir / "controller" / name)}
        self.state.data["controllers"] = recs
        self.state.data["controller"] = next(iter(recs.values()))
        self.state.save()

    def _start_controllers(self) -> None:
        """Start every controller, then wait until each answers /v1/health."""
        started = [(name, self._start_controller(name, wait=False))
                   for name in self._controller_names()]
        for name, ctl in started:
            self._wait_healthy(ctl, name)

    def _start_controller(self, name: str | None = None, wait: bool = True) -> ControllerProcess:
        """Start `python -m controller` (as ControllerProcess would) and record its pid
        the moment it exists, so a crash of this process never orphans it. `name`: an
        HA lab's instance (c1..cN); None: the lab's one controller. A restart keeps the
        recorded state dir, ports and arguments."""
        rec = self._controller_rec(name)
        spec_ctl = self.spec.controller if self.spec else None
        host = self.state.data["mgmt"]["host_ip"]
        index = int(rec.get("index", 0))
        shared_dir = self.state.workdir / "controller"
        state_dir = Path(rec.get("state_dir") or shared_dir)
        first = self.state.data.setdefault("controller", {})
        if not first.get("auth_tokens_file") and spec_ctl is not None and spec_ctl.auth_tokens:
            first.update(self._write_tokens(spec_ctl, shared_dir))
        for key in ("auth_tokens_file", "admin_token_file"):  # one file for every instance
            if first.get(key) and not rec.get(key):
                rec[key] = first[key]
        taken = {p for r in controller_records(self.state.data) if r is not rec
                 for p in (r.get("rest_port"), r.get("of_port")) if p}

        def port(key: str, given: int | None, pick: Any) -> int:
            if rec.get(key):
                return int(rec[key])
            if given:
                return given + index
            while True:
                chosen = int(pick())
                if chosen not in taken:
                    taken.add(chosen)
                    return chosen

        ctl = ControllerProcess(
            state_dir, self.chassis_remotes(), of_host=host,
            rest_port=port("rest_port", spec_ctl.rest_port if spec_ctl else None, free_port),
            of_port=port("of_port", spec_ctl.of_port if spec_ctl else None,
                         lambda: free_port(host)),
            extra_args=controller_args(rec))
        ctl.api.token = admin_token(rec)
        rec.update(state_dir=str(state_dir), rest_port=ctl.rest_port, of_port=ctl.of_port,
                   of_target=ctl.of_target, rest_url=ctl.api.base_url, chassis=ctl.chassis,
                   log=str(ctl.log_path), pid=None)
        self.state.save()
        state_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(ctl.log_path, "ab") as log:
            ctl.proc = subprocess.Popen(ctl.argv(), cwd=ROOT, stdout=log,
                                        stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)
        rec["pid"] = ctl.proc.pid
        self.state.save()
        self.controllers[name or "controller"] = ctl
        if rec is self.state.data.get("controller"):
            self.controller = ctl
        if wait:
            self._wait_healthy(ctl, name)
        return ctl

    def _wait_healthy(self, ctl: ControllerProcess, name: str | None,
                      timeout: float = CONTROLLER_START_TIMEOUT) -> None:
        who = f"controller {name}" if name else "controller"
        assert ctl.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if ctl.proc.poll() is not None:
                raise LabError(f"{who} exited {ctl.proc.returncode}: {ctl.log_tail()}")
            try:
                if ctl.api.get("/v1/health").status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise LabError(f"{who} not healthy in {timeout:.0f}s: {ctl.log_tail()}")
            time.sleep(0.1)
        rec = self._controller_rec(name)
        self.progress(f"{who} pid {ctl.proc.pid}: REST {ctl.api.base_url}, OpenFlow "
                      f"{ctl.of_target}, {len(ctl.chassis)} chassis"
                      + (", on the lab's northbound" if rec.get("nb_db") else "")
                      + f", log {ctl.log_path}")

    def _write_tokens(self, spec_ctl: ControllerSpec, state_dir: Path) -> dict[str, str]:
        """The spec's tokens as the controller's --auth-tokens file, in the lab's state
        dir. The lab itself needs an admin token for the API: the spec's first one,
        else one it adds (`lab-admin-<random>`, project admin). Both files are 0600 and
        only their paths go into the state file, which any local user may read."""
        tokens = spec_ctl.tokens_file_data()
        admin = spec_ctl.admin_token
        note = "the spec's first admin token"
        if admin is None:
            admin = f"lab-admin-{secrets.token_hex(8)}"
            tokens[admin] = {"project_id": "admin", "role": "admin"}
            note = "lab-admin-..., added for the lab itself (the spec has no admin token)"
        path, admin_path = state_dir / "auth-tokens.yaml", state_dir / "lab-admin-token"
        _write_private(path, "# Written by `python -m topologies.lab up` from the spec's "
                       "controller.auth_tokens.\n"
                       + yaml.safe_dump(tokens, default_flow_style=False, sort_keys=False))
        _write_private(admin_path, admin + "\n")
        self.progress(f"auth tokens: {len(tokens)} in {path}; the lab calls the API with {note}"
                      f" (in {admin_path})")
        return {"auth_tokens_file": str(path), "admin_token_file": str(admin_path)}

    def _restart_controller(self) -> None:
        """Stop every controller and start them again (same state dirs, ports, names)."""
        for rec in controller_records(self.state.data):
            stop_controller(rec)
        self.controller = None
        self.controllers.clear()
        self._start_controllers()
        if self.ha:
            self.wait_instances()

    def _wait_integration_bridges(self, hvs: Iterable[Hypervisor], timeout: float = 30) -> None:
        for hv in hvs:
            dpid = hv.ovs.wait_for_bridge(INTEGRATION_BRIDGE, timeout)
            self.progress(f"hypervisor {hv.name}: {INTEGRATION_BRIDGE} made by the controller "
                          f"(dpid {dpid:016x})")
        self._wait_switches(len(self.state.data["hypervisors"]), timeout)

    def _wait_switches(self, n: int, timeout: float) -> None:
        if self.ha:
            self._wait_switches_ha(n, timeout)
            return
        deadline = time.monotonic() + timeout
        ready: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            resp = self.api.get("/v1/switches")
            if resp.status == 200:
                ready = [s for s in resp.body.get("switches", [])
                         if s.get("connected") and s.get("synced_generation") is not None]
                if len(ready) >= n:
                    self.progress(f"{len(ready)} switch(es) connected to the controller and synced")
                    return
            time.sleep(0.1)
        raise LabError(f"only {len(ready)} of {n} switches connected and synced in {timeout}s")

    def wait_switches(self, timeout: float = 30.0) -> None:
        """Wait until every hypervisor's br-int is connected and synced (in an HA lab:
        connected to every running controller and synced by its master)."""
        self._wait_switches(len(self.state.data["hypervisors"]), timeout)

    def _wait_switches_ha(self, n: int, timeout: float) -> None:
        """HA: every running instance has all n switches connected (each bridge lists
        every instance's target), and each switch is synced by its master."""
        deadline = time.monotonic() + timeout
        masters: dict[str, str] = {}
        seen: dict[str, int] = {}
        while time.monotonic() < deadline:
            masters, seen = {}, {}
            for name in self.running_controllers():
                switches = self._get(name, "/v1/switches", "switches")
                if switches is None:
                    continue
                seen[name] = sum(1 for s in switches if s.get("connected"))
                for s in switches:
                    if s.get("connected") and s.get("role") == "master" \
                            and s.get("synced_generation") is not None:
                        masters[s["datapath_id"]] = name
            running = self.running_controllers()
            if len(masters) >= n and running and all(seen.get(c, 0) >= n for c in running):
                self.progress(f"{len(masters)} switch(es) connected to all {len(running)} "
                              f"controllers and synced by their masters ("
                              + ", ".join(f"{d}: {c}" for d, c in sorted(masters.items()))
                              + ")")
                return
            time.sleep(0.2)
        raise LabError(f"switches not ready in {timeout}s: {len(masters)} of {n} synced by a "
                       f"master, connected per controller: {seen}")

    # -- several controllers (HA) -----------------------------------------------------
    def controller_by_name(self, name: str) -> ControllerProcess:
        """A controller of this lab: c1..cN in an HA lab ("controller" otherwise)."""
        try:
            return self.controllers[name]
        except KeyError:
            raise KeyError(f"lab {self.name} has no controller {name!r} "
                           f"(it has: {', '.join(self.controllers) or 'none'})") from None

    def controller_info(self, name: str) -> dict[str, Any]:
        """The recorded controller: instance_name, pid, state_dir, rest_url, of_target,
        nb_db, log, ..."""
        return dict(self._controller_rec(None if name == "controller" else name))

    def running_controllers(self) -> list[str]:
        """Names of the controllers that run now (not exited, not stopped by SIGSTOP)."""
        return [rec.get("instance_name") or "controller"
                for rec in controller_records(self.state.data) if _running(rec)]

    def kill_controller(self, name: str, sig: int = signal.SIGKILL,
                        timeout: float = 15.0) -> None:
        """Send `sig` to a controller; after SIGKILL/SIGTERM/SIGINT wait until it is gone.
        (SIGSTOP pauses it, SIGCONT resumes it: nothing is waited for then.)"""
        rec = self._controller_rec(None if name == "controller" else name)
        pid = rec.get("pid")
        if not pid_alive(pid, rec.get("state_dir")):
            raise LabError(f"controller {name} of lab {self.name} is not running")
        assert pid is not None
        os.kill(int(pid), sig)
        if sig not in ENDING_SIGNALS:
            return
        ctl = self.controllers.get(name)
        deadline = time.monotonic() + timeout
        while pid_alive(pid):
            if ctl is not None and ctl.proc is not None and ctl.proc.pid == pid:
                ctl.proc.poll()  # reap our own child
            if time.monotonic() > deadline:
                raise LabError(f"controller {name} (pid {pid}) still runs {timeout:.0f}s "
                               f"after signal {sig}")
            time.sleep(0.05)
        if ctl is not None and ctl.proc is not None and ctl.proc.pid == pid:
            ctl.proc.poll()
        self.progress(f"controller {name} pid {pid}: {signal.Signals(sig).name}, gone")

    def start_controller(self, name: str) -> ControllerProcess:
        """Start a stopped controller again: same instance name, state dir, ports and
        arguments; returns once it answers /v1/health."""
        key = None if name == "controller" else name
        rec = self._controller_rec(key)
        if pid_alive(rec.get("pid"), rec.get("state_dir")):
            raise LabError(f"controller {name} of lab {self.name} already runs "
                           f"(pid {rec.get('pid')})")
        return self._start_controller(key)

    def health(self, name: str) -> dict[str, Any] | None:
        """GET /v1/health of one controller (None: no answer, or not 200)."""
        return self._get(name, "/v1/health")

    def _get(self, name: str, path: str, key: str | None = None) -> Any:
        """A GET on one controller's API, None on no answer or an error status."""
        try:
            rec = self._controller_rec(None if name == "controller" else name)
            resp = ApiClient(rec["rest_url"], token=admin_token(rec), timeout=5).get(path)
        except (OSError, KeyError):
            return None
        if resp.status != 200 or not isinstance(resp.body, dict):
            return None
        return resp.body.get(key) if key else resp.body

    def ownership_keys(self) -> set[str]:
        """What the instances elect owners for: `chassis:<remote>` of each chassis the
        controllers know (controller/ownership.py `keys_of`)."""
        return {f"chassis:{h['db_remote']}" for h in self.state.data["hypervisors"].values()
                if h.get("chassis_source") in ("command-line", "api") and h.get("db_remote")}

    def wait_instances(self, alive: Iterable[str] | None = None,
                       timeout: float = INSTANCES_TIMEOUT) -> dict[str, dict[str, Any]]:
        """Wait until every running controller's /v1/health lists exactly `alive`
        (default: the running controllers) as the instances alive, and each chassis
        owned by one of them; returns name -> its health's `instances` (the shape of
        controller/ownership.py `Ownership.status()`)."""
        deadline = time.monotonic() + timeout
        seen: dict[str, Any] = {}
        while True:
            want = set(alive) if alive is not None else set(self.running_controllers())
            keys = self.ownership_keys()
            seen = {}
            ok = bool(want)
            for name in sorted(want):
                inst = (self.health(name) or {}).get("instances")
                seen[name] = inst
                if not isinstance(inst, dict):
                    ok = False
                    continue
                live = {i.get("name") for i in inst.get("instances", []) if i.get("alive")}
                owners = inst.get("owners") or {}
                if live != want or any((owners.get(k) or {}).get("owner") not in want
                                       for k in keys):
                    ok = False
            if ok:
                first = seen[min(want)]
                owned = ", ".join(f"{i['name']} {len(i.get('owns', []))}"
                                  for i in first.get("instances", []) if i.get("alive"))
                self.progress(f"instances {', '.join(sorted(want))}: all alive; "
                              f"{len(keys)} chassis owned ({owned})")
                return seen
            if time.monotonic() > deadline:
                raise LabError(f"instances not settled in {timeout:.0f}s (want alive: "
                               f"{sorted(want)}, chassis {sorted(keys)}); seen: "
                               f"{json.dumps(seen, default=str)[:2000]}")
            time.sleep(0.2)

    # -- the lab's own northbound (HA) ------------------------------------------------
    @property
    def nb_remote(self) -> str:
        """The client remote of the lab's northbound (--nb-db): its members' sockets."""
        nb = self.state.data.get("nb") or {}
        if not nb.get("remote"):
            raise LabError(f"lab {self.name} has no northbound of its own")
        return str(nb["remote"])

    def nb_members(self) -> list[dict[str, Any]]:
        """The northbound's members as recorded: name, dir, remote, raft, pidfile, log."""
        return [dict(m) for m in (self.state.data.get("nb") or {}).get("members", [])]

    def _nb_member(self, i: int) -> dict[str, Any]:
        members = (self.state.data.get("nb") or {}).get("members", [])
        if not 1 <= i <= len(members):
            raise LabError(f"lab {self.name} has no northbound member {i} "
                           f"(members 1-{len(members)})")
        member: dict[str, Any] = members[i - 1]
        return member

    def _start_nb(self) -> None:
        """The lab's northbound: one ovsdb-server, or a raft cluster (create, then join
        one by one), each member in <workdir>/nb/nb<i>; recorded before it is made."""
        from controller.store import nb_cluster as nbc

        assert self.spec is not None
        count = self.spec.nb_members
        raft = count > 1
        members: list[dict[str, Any]] = []
        used: set[int] = set()
        for i in range(1, count + 1):
            m = nbc.Member.at(self.state.workdir / "nb" / f"nb{i}")
            port = free_port()
            while port in used:
                port = free_port()
            used.add(port)
            members.append({"name": f"nb{i}", "dir": str(m.dir), "remote": m.remote,
                            "pidfile": str(m.pidfile), "log": str(m.log),
                            "raft": f"tcp:127.0.0.1:{port}" if raft else None})
        self.state.data["nb"] = {"kind": "raft" if raft else "standalone",
                                 "members": members,
                                 "remote": ",".join(str(r["remote"]) for r in members)}
        self.state.save()
        for i in range(1, count + 1):
            self._make_nb_member(i)
        self.progress(f"northbound: {'raft cluster of ' if raft else ''}{count} "
                      f"ovsdb-server(s); controllers use --nb-db {self.nb_remote}")

    def _make_nb_member(self, i: int) -> None:
        from controller.store import nb_cluster as nbc

        rec = self._nb_member(i)
        m = nbc.Member.at(rec["dir"])
        try:
            if not rec.get("raft"):
                _start_standalone_nb(rec)
                what = "ovsdb-server"
            elif i == 1:
                st = nbc.create(m, rec["raft"])
                what = f"raft cluster created ({st.role}, raft {rec['raft']})"
            else:
                peers = [self._nb_member(k)["raft"] for k in range(1, i)]
                st = nbc.join(m, rec["raft"], peers)
                what = f"joined the cluster ({st.role}, raft {rec['raft']})"
        except nbc.NbClusterError as exc:
            raise LabError(f"northbound {rec['name']}: {exc}") from None
        self.progress(f"northbound {rec['name']}: {what}, pid {nb_member_pid(rec)}, "
                      f"clients {rec['remote']}")

    def nb_member_stop(self, i: int) -> None:
        """Stop northbound member i (1-based: nb<i>), keeping its files."""
        from controller.store import nb_cluster as nbc

        rec = self._nb_member(i)
        try:
            nbc.stop(nbc.Member.at(rec["dir"]))
        except nbc.NbClusterError as exc:
            raise LabError(f"northbound {rec['name']}: {exc}") from None
        self.progress(f"northbound {rec['name']}: stopped")

    def nb_member_start(self, i: int) -> None:
        """Start northbound member i again on its files (a raft member catches up)."""
        from controller.store import nb_cluster as nbc

        rec = self._nb_member(i)
        try:
            if rec.get("raft"):
                st = nbc.start(nbc.Member.at(rec["dir"]))
                what = f"started ({st.role}, term {st.term})"
            else:
                _start_standalone_nb(rec)
                what = "started"
        except nbc.NbClusterError as exc:
            raise LabError(f"northbound {rec['name']}: {exc}") from None
        self.progress(f"northbound {rec['name']}: {what}, pid {nb_member_pid(rec)}")

    def wait_stores(self, timeout: float = 30.0) -> None:
        """Wait until every running controller's store is connected to the northbound
        again (/v1/health `store.connected`), e.g. after nb_member_stop/start."""
        deadline = time.monotonic() + timeout
        while True:
            down = [n for n in self.running_controllers()
                    if not ((self.health(n) or {}).get("store") or {}).get("connected")]
            if not down:
                return
            if time.monotonic() > deadline:
                raise LabError(f"controllers {', '.join(down)}: store not connected to the "
                               f"northbound after {timeout:.0f}s")
            time.sleep(0.1)

    def nb_member_running(self, i: int) -> bool:
        return nb_member_pid(self._nb_member(i)) is not None

    def nb_status(self, i: int) -> Any:
        """`cluster/status` of raft member i (nb_cluster.ClusterStatus)."""
        from controller.store import nb_cluster as nbc

        rec = self._nb_member(i)
        if not rec.get("raft"):
            raise LabError(f"northbound {rec['name']} is not a raft member")
        return nbc.status(nbc.Member.at(rec["dir"]))

    def nb_leader(self) -> int | None:
        """The number (1-based) of the raft member that says it is the leader, if any."""
        from controller.store import nb_cluster as nbc

        for i, rec in enumerate((self.state.data.get("nb") or {}).get("members", []), 1):
            if not rec.get("raft") or nb_member_pid(rec) is None:
                continue
            try:
                if nbc.status(nbc.Member.at(rec["dir"])).role == "leader":
                    return i
            except nbc.NbClusterError:
                continue
        return None

    # ---------------------------------------------------------------------------------
    # CHASSIS REGISTRATION: the one place that tells the controller about chassis.
    # Chassis of `up` are --chassis flags (source "command-line"); hypervisors added
    # later go through POST /v1/chassis (source "api", stored in the controller's
    # northbound db). DELETE /v1/chassis refuses a command-line chassis (409
    # ChassisFromCommandLine): the controller is then restarted without its flag, with
    # the same state dir (so the same intent) and ports; flows stay installed on the
    # switches meanwhile (fail_mode secure).
    # ---------------------------------------------------------------------------------
    def register_chassis(self, hv: Hypervisor) -> str:
        resp = self.api.post("/v1/chassis", {"chassis": {"name": hv.name,
                                                         "remote": hv.db_remote}})
        if not 200 <= resp.status < 300:
            raise LabError(f"POST /v1/chassis {hv.name}: HTTP {resp.status}: {resp.body}")
        self.state.data["hypervisors"][hv.name]["chassis_source"] = "api"
        self.state.save()
        return "registered with POST /v1/chassis"

    def unregister_chassis(self, name: str) -> str:
        resp = self.api.delete(f"/v1/chassis/{name}")
        if 200 <= resp.status < 300:
            return f"removed with DELETE /v1/chassis/{name}"
        if resp.status == 409 and _error_type(resp.body) == "ChassisFromCommandLine":
            self.state.data["hypervisors"][name]["chassis_source"] = "removed"
            self._restart_controller()
            return "controller restarted without its --chassis (given on the command line)"
        raise LabError(f"DELETE /v1/chassis/{name}: HTTP {resp.status}: {resp.body}")

    # -- API objects and guests -------------------------------------------------------
    def _create_api_objects(self) -> dict[str, dict[str, Any]]:
        """Networks, subnets and one port per guest, through the REST API as admin."""
        assert self.spec is not None
        api, rec = self.api, self.state.data["api"]
        rec.setdefault("routers", {})
        rec.setdefault("floatingips", {})
        ports: dict[str, dict[str, Any]] = {}
        ext_net = self._create_external_network() if self.spec.external else None
        v4_subnets: dict[str, str] = {}  # project/network -> its IPv4 subnet id
        for project in self.spec.projects:
            for net in project.networks:
                key = f"{project.name}/{net.name}"
                body: dict[str, Any] = {"name": net.name, "project_id": project.name,
                                        "provider:network_type": net.type}
                if net.segmentation_id is not None:
                    body["provider:segmentation_id"] = net.segmentation_id
                n = api.create("network", **body)
                rec["networks"][key] = {"id": n["id"], "type": n["provider:network_type"],
                                        "segmentation_id": n["provider:segmentation_id"],
                                        "mtu": n["mtu"]}
                self.state.save()
                subnet_ids = {}
                for sub in net.subnets:
                    version = sub.network.version
                    # said either way: a subnet whose guests are configured by hand
                    # does not serve DHCP (the API's default would)
                    extra: dict[str, Any] = {"enable_dhcp": sub.dhcp}
                    if sub.dns_nameservers:
                        extra["dns_nameservers"] = list(sub.dns_nameservers)
                    if sub.host_routes:
                        extra["host_routes"] = [{"destination": d, "nexthop": h}
                                                for d, h in sub.host_routes]
                    s = api.create("subnet", network_id=n["id"], cidr=sub.cidr,
                                   ip_version=version, project_id=project.name,
                                   name=f"{net.name}-v{version}", **extra)
                    rec["subnets"][f"{key}/{sub.cidr}"] = s["id"]
                    subnet_ids[sub.cidr] = s["id"]
                    if version == 4:
                        v4_subnets[key] = s["id"]
                        self._gateways[key] = s.get("gateway_ip")
                        self._v4_subnets[key] = s
                    if sub.dhcp and not s.get("enable_dhcp"):
                        raise LabError(f"subnet {key}/{sub.cidr}: created with enable_dhcp "
                                       f"true, the API says {s.get('enable_dhcp')!r}")
                    self.state.save()
                self.progress(f"network {key}: {n['provider:network_type']} "
                              f"{n['provider:segmentation_id']}, "
                              f"{', '.join(s.cidr for s in net.subnets)}"
                              + (" (DHCP)" if net.dhcp_subnet else "") + f", id {n['id']}")
                for g in net.guests:
                    body = {"network_id": n["id"], "project_id": project.name, "name": g.name,
                            "binding:host_id": g.hypervisor}
                    if g.ip:
                        cidr = next(s.cidr for s in net.subnets
                                    if ipaddress.ip_address(g.ip) in s.network)
                        body["fixed_ips"] = [{"subnet_id": subnet_ids[cidr], "ip_address": g.ip}]
                    port = api.create("port", **body)
                    rec["ports"][g.name] = port["id"]
                    self.state.save()
                    ports[g.name] = port
        self._create_routers(v4_subnets, ext_net)
        for project in self.spec.projects:
            for net in project.networks:
                for g in net.guests:
                    if g.floating_ip:
                        assert ext_net is not None
                        fip = api.create("floatingip", floating_network_id=ext_net,
                                         port_id=ports[g.name]["id"], project_id=project.name)
                        rec["floatingips"][g.name] = {"id": fip["id"],
                                                      "address": fip["floating_ip_address"]}
                        self.state.save()
                        self.progress(f"floating IP {fip['floating_ip_address']} -> {g.name}")
        self.progress(f"API: {len(rec['networks'])} network(s), {len(rec['subnets'])} "
                      f"subnet(s), {len(ports)} port(s)"
                      + (f", {len(rec['routers'])} router(s), {len(rec['floatingips'])} "
                         "floating IP(s)" if ext_net or rec["routers"] else ""))
        return ports

    def _create_external_network(self) -> str:
        """The flat, shared router:external network on the physnet and its subnet, whose
        gateway_ip is the outside host (the upstream router); returns the network id."""
        assert self.spec is not None and self.spec.external is not None
        ext, api = self.spec.external, self.api
        n = api.post("/v2.0/networks", {"network": {
            "name": ext.network, "project_id": "admin", "router:external": True,
            "shared": True, "provider:network_type": "flat",
            "provider:physical_network": ext.physical_network}}).ok()["network"]
        self.state.data["external"].update(network_id=n["id"], network=ext.network,
                                           mtu=n["mtu"])
        self.state.save()
        start, end = ext.allocation_pool
        s = api.create("subnet", network_id=n["id"], cidr=ext.cidr, ip_version=4,
                       gateway_ip=ext.outside_ip, enable_dhcp=False, project_id="admin",
                       name=f"{ext.network}-v4",
                       allocation_pools=[{"start": start, "end": end}])
        self.state.data["external"].update(subnet_id=s["id"], cidr=ext.cidr,
                                           gateway_ip=ext.outside_ip, pool=[start, end])
        self.state.save()
        self.progress(f"external network {ext.network}: flat on {ext.physical_network}, "
                      f"router:external, shared, {ext.cidr} (gateway_ip {ext.outside_ip}, "
                      f"pool {start}-{end}), id {n['id']}")
        return str(n["id"])

    def _create_routers(self, v4_subnets: dict[str, str], ext_net: str | None) -> None:
        assert self.spec is not None
        api, rec = self.api, self.state.data["api"]["routers"]
        for project in self.spec.projects:
            for r in project.routers:
                body: dict[str, Any] = {"name": r.name, "project_id": project.name}
                if r.external_gateway:
                    body["external_gateway_info"] = {"network_id": ext_net}
                router = api.create("router", **body)
                info = router.get("external_gateway_info") or {}
                fixed = info.get("external_fixed_ips") or [{}]
                key = f"{project.name}/{r.name}"
                rec[key] = {"id": router["id"], "gateway_ip": fixed[0].get("ip_address"),
                            "interfaces": list(r.interfaces)}
                self.state.save()
                for net in r.interfaces:
                    api.put(f"/v2.0/routers/{router['id']}/add_router_interface",
                            {"subnet_id": v4_subnets[f"{project.name}/{net}"]}).ok()
                gw = rec[key]["gateway_ip"]
                self.progress(f"router {key}: " + (f"gateway {gw}" if gw else "no gateway")
                              + (f", interfaces on {', '.join(r.interfaces)}"
                                 if r.interfaces else ""))

    def _dhcp_subnet(self, pg: PlacedGuest) -> str | None:
        """The CIDR of the subnet a guest gets its IPv4 address from by DHCP, if any."""
        assert self.spec is not None
        sub = self.spec.network(pg.project, pg.network).dhcp_subnet
        return sub.cidr if sub is not None else None

    def _make_guest(self, pg: PlacedGuest, port: dict[str, Any]) -> Guest:
        assert self.spec is not None
        net = self.spec.network(pg.project, pg.network)
        hv = self.hypervisor(pg.spec.hypervisor)
        cidrs: dict[int, str] = {}
        for fixed in port["fixed_ips"]:
            ip = ipaddress.ip_address(fixed["ip_address"])
            sub = next(s.network for s in net.subnets if ip in s.network)
            cidrs.setdefault(ip.version, f"{ip}/{sub.prefixlen}")
        mtu = int(self.state.data["api"]["networks"][f"{pg.project}/{pg.network}"]["mtu"])
        dhcp = self._dhcp_subnet(pg) is not None
        static4 = None if dhcp else cidrs.get(4)  # DHCP guests: IPv4 comes later, by DHCP
        gateway = self._gateways.get(f"{pg.project}/{pg.network}") if static4 else None
        g = Guest(pg.name, port["mac_address"], static4, cidrs.get(6), sandbox=self.sandbox,
                  ovs=hv.ovs, bridge=INTEGRATION_BRIDGE, port_id=port["id"], mtu=mtu,
                  gateway=gateway)
        fip = self.state.data["api"].get("floatingips", {}).get(pg.name, {}).get("address")
        self.guests[pg.name] = g
        self.state.set("guests", pg.name, {
            "project": pg.project, "network": pg.network, "hypervisor": hv.name,
            "netns": g.netns, "mac": g.mac, "ip_cidr": g.ip_cidr, "ipv6_cidr": g.ipv6_cidr,
            "port_id": g.port_id, "port_name": g.port_name, "mtu": mtu, "gateway": gateway,
            "floating_ip": fip, "dhcp": {"fixed_ip": cidrs.get(4)} if dhcp else None})
        addr = f"IPv4 by DHCP (port {cidrs.get(4)})" if dhcp else g.ip_cidr
        self.progress(f"guest {pg.name}: {pg.project}/{pg.network} on {hv.name}, "
                      f"{', '.join(a for a in (addr, g.ipv6_cidr) if a) or 'no address'}, "
                      f"{g.mac}, netns {g.netns}"
                      + (f", default via {gateway}" if gateway else "")
                      + (f", floating IP {fip}" if fip else ""))
        return g

    def _dhcp_guests(self, placed: list[PlacedGuest], ports: dict[str, dict[str, Any]]) -> None:
        """Start every DHCP guest's client at once, then check each lease against the
        API (`dhcp_problems`); raise LabError listing every guest that failed."""
        started, failures = [], []
        for pg in placed:
            state_dir = self.state.workdir / "dhcp" / pg.name
            self.guests[pg.name].dhcp(DHCP_TIMEOUT, state_dir=state_dir, wait=False)
            self.state.data["guests"][pg.name]["dhcp"]["state_dir"] = str(state_dir)
            self.state.save()
            started.append(pg)
        for pg in started:
            g, key = self.guests[pg.name], f"{pg.project}/{pg.network}"
            subnet = self._v4_subnets[key]
            fixed = next((f["ip_address"] for f in ports[pg.name]["fixed_ips"]
                          if f.get("subnet_id") == subnet["id"]), None)
            try:
                lease = g.dhcp_wait(DHCP_TIMEOUT)
            except DhcpError as exc:
                failures.append(f"guest {pg.name}: {exc}")
                continue
            mtu = int(self.state.data["api"]["networks"][key]["mtu"])
            problems = dhcp_problems(lease, str(fixed), subnet, mtu, g.addresses()) \
                if fixed else [f"port has no fixed IP on {subnet['cidr']}"]
            rec = self.state.data["guests"][pg.name]
            rec.update(ip_cidr=g.ip_cidr, gateway=g.gateway)
            rec["dhcp"].update(server_id=lease.server_id, lease_time=lease.lease_time,
                               routers=list(lease.routers), dns=list(lease.dns),
                               mtu=lease.mtu, routes=[list(r) for r in lease.routes])
            self.state.save()
            if problems:
                failures.append(f"guest {pg.name}: DHCP lease differs from the API: "
                                + "; ".join(problems))
                continue
            self.progress(
                f"guest {pg.name}: DHCP {lease.cidr} from {lease.server_id}"
                + (f", router {', '.join(lease.routers)}" if lease.routers else "")
                + (f", DNS {', '.join(lease.dns)}" if lease.dns else "")
                + (f", MTU {lease.mtu}" if lease.mtu else "")
                + (f", routes {', '.join(f'{d} via {h}' for d, h in lease.routes)}"
                   if lease.routes else "")
                + f", lease {lease.lease_time}s")
        if failures:
            raise LabError(f"{len(failures)} of {len(placed)} DHCP guest(s) failed:\n  "
                           + "\n  ".join(failures))

    def port_status(self, port_id: str) -> str:
        """A port's status; in an HA lab ACTIVE as soon as a running instance says so
        (the instances are asked in turn: one that is reconnecting is skipped)."""
        if not self.ha:
            return str(self.api.get(f"/v2.0/ports/{port_id}").ok()["port"]["status"])
        seen = "DOWN"
        for name in self.running_controllers():
            port = self._get(name, f"/v2.0/ports/{port_id}", "port")
            if isinstance(port, dict):
                seen = str(port.get("status"))
                if seen == "ACTIVE":
                    return seen
        return seen

    def wait_ports_active(self, port_ids: list[str], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        pending = list(port_ids)
        while pending:
            pending = [p for p in pending if self.port_status(p) != "ACTIVE"]
            if not pending:
                break
            if time.monotonic() > deadline:
                raise LabError(f"{len(pending)} port(s) not ACTIVE in {timeout}s: {pending}")
            time.sleep(0.2)
        self.progress(f"{len(port_ids)} port(s) ACTIVE")

    # -- attach, change, down -----------------------------------------------------------
    @classmethod
    def load(cls, name: str, progress: Progress | None = None) -> Lab:
        """Attach to a lab another process brought up (nothing is created)."""
        state = LabState.load(name)
        lab = cls(state, None, progress or _printer())
        for hv_name, rec in state.data["hypervisors"].items():
            if rec.get("workdir"):
                lab.hypervisors[hv_name] = adopt_hypervisor(lab.sandbox, hv_name, rec)
        for g_name, g in state.data["guests"].items():
            hv = lab.hypervisors.get(g["hypervisor"])
            lab.guests[g_name] = Guest.existing(
                g_name, g["netns"], g["mac"], g["ip_cidr"], g.get("ipv6_cidr"),
                sandbox=lab.sandbox, port_id=g["port_id"], ovs=hv.ovs if hv else None,
                bridge=INTEGRATION_BRIDGE, port_name=g.get("port_name"), mtu=g.get("mtu", 1500),
                dhcp_state_dir=(g.get("dhcp") or {}).get("state_dir"))
        for ctl in controller_records(state.data):
            if not ctl.get("rest_port"):
                continue  # planned, never started
            proc = ControllerProcess(
                Path(ctl["state_dir"]), list(ctl.get("chassis", [])),
                of_host=state.data["mgmt"]["host_ip"], rest_port=ctl["rest_port"],
                of_port=ctl["of_port"], log_path=Path(ctl["log"]),
                extra_args=controller_args(ctl))
            proc.api.token = admin_token(ctl)
            lab.controllers[ctl.get("instance_name") or "controller"] = proc
            if ctl is state.data.get("controller"):
                lab.controller = proc
        return lab

    def add_hypervisor(self, name: str) -> Hypervisor:
        """A new, empty hypervisor in the running lab, made known to the controller."""
        with lab_lock(self.name):
            if name in self.state.data["hypervisors"] or name in self.state.data["guests"]:
                raise LabError(f"lab {self.name} already has a {name!r}")
            hv = make_hypervisor(self.sandbox, self.state, name, self.progress)
            self.hypervisors[name] = hv
            harden_arp(hv)
            self._warm_up(list(self.hypervisors.values()))
            ext = self.state.data.get("external") or {}
            if ext.get("all_hypervisors"):
                plumb_external(self.sandbox, self.state, hv, gateway=False)
                self.progress(f"external {ext['physical_network']}: {PROVIDER_BRIDGE} on {name}")
            if self.state.data["controller"].get("state_dir"):
                self.progress(f"chassis {name}: {self.register_chassis(hv)}")
                self._wait_integration_bridges([hv])
                if self.state.data["guests"]:
                    self._prime_tunnels()
        return hv

    def remove_hypervisor(self, name: str) -> None:
        """Remove a hypervisor and its guests (their ports are deleted through the API)."""
        with lab_lock(self.name):
            if name not in self.state.data["hypervisors"]:
                raise LabError(f"lab {self.name} has no hypervisor {name!r}")
            has_ctl = bool(self.state.data["controller"].get("state_dir"))
            for g_name, g in list(self.state.data["guests"].items()):
                if g["hypervisor"] != name:
                    continue
                if has_ctl:
                    self.api.delete(f"/v2.0/ports/{g['port_id']}")
                    self.state.data["api"]["ports"].pop(g_name, None)
                if g["netns"] in self.sandbox.netns:
                    self.sandbox.delete_netns(g["netns"])  # stops its DHCP client too
                remove_netns_etc(g["netns"])
                self.guests.pop(g_name, None)
                self.state.drop("guests", g_name)
                self.progress(f"guest {g_name}: port deleted, namespace removed")
            if has_ctl:
                self.progress(f"chassis {name}: {self.unregister_chassis(name)}")
            unplumb_external(self.sandbox, self.state, name)
            remove_hypervisor(self.sandbox, self.state, name)
            self.hypervisors.pop(name, None)
            self.progress(f"hypervisor {name}: removed")

    def down(self, keep_workdir: bool = False) -> list[str]:
        """Remove everything the state file lists; return problems (empty: all gone)."""
        with lab_lock(self.name):
            return down_state(self.state, self.progress, keep_workdir)


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner (root) may read: tokens are secrets."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)  # an older file kept its mode through O_TRUNC


def controller_args(rec: dict[str, Any]) -> tuple[str, ...]:
    """The arguments of a recorded controller beyond ControllerProcess's own."""
    args: list[str] = []
    if rec.get("auth_tokens_file"):
        args += ["--auth-tokens", str(rec["auth_tokens_file"])]
    if rec.get("nb_db"):
        args += ["--nb-db", str(rec["nb_db"])]
    if rec.get("instance_name"):
        args += ["--instance-name", str(rec["instance_name"])]
    return tuple(args)


def _running(rec: dict[str, Any]) -> bool:
    """A recorded controller runs: alive (its state dir in its command line) and not
    stopped (SIGSTOP)."""
    pid = rec.get("pid")
    if not pid_alive(pid, rec.get("state_dir")):
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("T", "t")
    except (OSError, IndexError):
        return False


def _start_standalone_nb(rec: dict[str, Any], timeout: float = 10.0) -> None:
    """One ovsdb-server for Loom's schema, detached (it outlives `lab up`), with the
    same files as a raft member's (nb_cluster.Member): nb.db, nb.sock, ovsdb-server.ctl,
    .pid and .log in the member's directory."""
    from controller.store.embedded import SCHEMA_PATH

    d = Path(rec["dir"])
    d.mkdir(parents=True, exist_ok=True)
    db, sock = d / "nb.db", d / "nb.sock"
    if nb_member_pid(rec) is not None:
        raise LabError(f"northbound {rec['name']}: an ovsdb-server already runs in {d}")

    def tool(*args: str) -> None:
        exe = shutil.which("ovsdb-tool") or "/usr/bin/ovsdb-tool"
        done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise LabError(f"northbound {rec['name']}: ovsdb-tool {args[0]}: "
                           f"{(done.stderr or done.stdout).strip()}")

    if not db.exists():
        tool("create", str(db), str(SCHEMA_PATH))
    server = shutil.which("ovsdb-server") or "/usr/sbin/ovsdb-server"
    done = subprocess.run(
        [server, str(db), "--detach", "--no-chdir", f"--pidfile={rec['pidfile']}",
         f"--log-file={rec['log']}", f"--unixctl={d / 'ovsdb-server.ctl'}", "-vconsole:off",
         f"--remote=punix:{sock}"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise LabError(f"northbound {rec['name']}: ovsdb-server did not start: "
                       f"{(done.stderr or done.stdout).strip()}")
    from controller.store.nb_cluster import accepts as unix_accepts

    deadline = time.monotonic() + timeout
    while not unix_accepts(sock):
        if time.monotonic() > deadline:
            raise LabError(f"northbound {rec['name']}: {sock} does not accept connections "
                           f"after {timeout:.0f}s (log {rec['log']})")
        time.sleep(0.05)



def admin_token(ctl: dict[str, Any]) -> str | None:
    """The token the lab calls its controller's API with (None: no --auth-tokens)."""
    path = ctl.get("admin_token_file")
    if not path:
        return None
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


def _error_type(body: Any) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("NeutronError"), dict):
        return str(body["NeutronError"].get("type"))
    return None


def down_state(state: LabState, progress: Progress, keep_workdir: bool = False) -> list[str]:
    owner = int(state.data.get("owner_pid", 0))
    if state.data.get("phase") == "creating" and owner != os.getpid() and pid_alive(owner):
        raise LabError(f"lab {state.name} is being brought up by pid {owner}; "
                       "wait for it, or stop that process first")
    problems = teardown(state, progress, keep_workdir)
    progress(f"lab {state.name}: " + (f"problems: {problems}" if problems else "down"))
    return problems


# -- status ---------------------------------------------------------------------------
def status_text(state: LabState) -> str:
    d = state.data
    lines = [f"lab {state.name}: {d.get('phase')}, prefix {d['prefix']}, state {state.path}"]
    if d.get("timings"):
        lines.append("  timings: " + ", ".join(f"{k} {v}s" for k, v in d["timings"].items()))
    ctl, mgmt, ul = d.get("controller", {}), d.get("mgmt", {}), d.get("underlay", {})
    if mgmt:
        lines.append(f"  management: bridge {mgmt['bridge']} {mgmt['host_ip']} ({mgmt['subnet']})")
    if ul:
        lines.append(f"  underlay: netns {ul['netns']}, bridge {ul['bridge']}, {ul['subnet']}")
    lines += _nb_status_lines(d.get("nb") or {})
    apis: list[ApiClient] = []
    for rec in controller_records(d):
        alive = pid_alive(rec.get("pid"), rec["state_dir"])
        who = f"controller {rec['instance_name']}" if rec.get("instance_name") else "controller"
        lines.append(f"  {who}: pid {rec.get('pid')} {'running' if alive else 'NOT RUNNING'}"
                     f", REST {rec.get('rest_url')}, OpenFlow {rec.get('of_target')}, "
                     + (f"--nb-db {rec['nb_db']}, " if rec.get("nb_db")
                        and rec["nb_db"] != (d.get("nb") or {}).get("remote") else "")
                     + f"log {rec.get('log')}")
        if alive and rec.get("rest_url"):
            apis.append(ApiClient(rec["rest_url"], token=admin_token(rec), timeout=3))
    if ctl.get("auth_tokens_file"):
        lines.append(f"  auth tokens: {ctl['auth_tokens_file']}")
    if len(apis) > 1 or (apis and d.get("controllers")):
        lines += _instances_lines(apis[0])
    for name, h in d.get("hypervisors", {}).items():
        alive = pid_alive(h.get("vswitchd_pid"), str(h.get("workdir")))
        lines.append(f"  hypervisor {name}: netns {h.get('netns')}, mgmt {h.get('mgmt_ip')}, "
                     f"encap {h.get('encap_ip')}, ovs-vswitchd "
                     f"{'running' if alive else 'NOT RUNNING'}, db {h.get('db_remote')}")
    ext = d.get("external") or {}
    if ext:
        hvs = ", ".join(f"{n}{' (gateway)' if h.get('gateway') else ''}"
                        for n, h in ext.get("hypervisors", {}).items())
        lines.append(f"  external: {ext.get('physical_network')} switch netns {ext.get('netns')}"
                     f" (bridge {ext.get('bridge')}), {PROVIDER_BRIDGE} on {hvs or 'none'}")
        if ext.get("outside_netns"):
            http = ""
            if ext.get("http_port"):
                up = pid_alive(ext.get("http_pid"), ext.get("http_log"))
                http = (f", HTTP :{ext['http_port']} pid {ext.get('http_pid')} "
                        f"{'running' if up else 'NOT RUNNING'}")
            lines.append(f"  outside: {ext['outside']} netns {ext['outside_netns']}{http}")
        if ext.get("network_id"):
            lines.append(f"  network {ext.get('network')}: {ext.get('cidr')}, gateway_ip "
                         f"{ext.get('gateway_ip')}, id {ext['network_id']}")
    for key, r in d.get("api", {}).get("routers", {}).items():
        lines.append(f"  router {key}: gateway {r.get('gateway_ip') or 'none'}, interfaces "
                     f"{', '.join(r.get('interfaces', [])) or 'none'}, id {r['id']}")
    for name, g in d.get("guests", {}).items():
        status = "?"
        for api in apis:  # HA: the first running instance that answers ACTIVE
            try:
                resp = api.get(f"/v2.0/ports/{g['port_id']}")
                status = resp.body["port"]["status"] if resp.status == 200 else str(resp.status)
            except (OSError, KeyError, TypeError):
                status = "?"
            if status == "ACTIVE":
                break
        lines.append(f"  guest {name}: {g['project']}/{g['network']} on {g['hypervisor']}, "
                     f"{g.get('ip_cidr') or g.get('ipv6_cidr')}"
                     + (" (DHCP)" if g.get("dhcp") else "") + f", {g['mac']}, port "
                     f"{g['port_id']} {status}, netns {g['netns']}"
                     + (f", floating IP {g['floating_ip']}" if g.get("floating_ip") else ""))
    return "\n".join(lines)


def _nb_status_lines(nb: dict[str, Any]) -> list[str]:
    """The lab's own northbound: its members, running or not, and raft roles."""
    members = nb.get("members") or []
    if not members:
        return []
    lines = [f"  northbound: {'raft cluster, ' if nb.get('kind') == 'raft' else ''}"
             f"{len(members)} member(s), clients {nb.get('remote')}"]
    for m in members:
        pid = nb_member_pid(m)
        role = ""
        if pid is not None and m.get("raft"):
            try:
                from controller.store import nb_cluster as nbc

                st = nbc.status(nbc.Member.at(m["dir"]))
                role = f", {st.role} (term {st.term})"
            except Exception as exc:  # a status line must not fail `status`
                role = f", role unknown ({exc})"
        state = f"pid {pid} running" if pid else "NOT RUNNING"
        lines.append(f"    {m.get('name')}: {state}{role}"
                     + (f", raft {m['raft']}" if m.get("raft") else "") + f", {m.get('dir')}")
    return lines


def _instances_lines(api: ApiClient) -> list[str]:
    """Who is alive and who owns what, as one instance's /v1/health says."""
    try:
        resp = api.get("/v1/health")
    except OSError as exc:
        return [f"  instances: no answer ({exc})"]
    inst = resp.body.get("instances") if isinstance(resp.body, dict) else None
    if not isinstance(inst, dict):
        return [f"  instances: not in /v1/health (HTTP {resp.status})"]
    lines = [f"  instances (as {inst.get('instance')} sees them):"]
    for i in inst.get("instances", []):
        owns = ", ".join(i.get("owns", [])) or "nothing"
        lines.append(f"    {i.get('name')}: {'alive' if i.get('alive') else 'DEAD'}, "
                     f"OpenFlow {i.get('of_target')}, owns {owns}")
    return lines


# -- CLI ------------------------------------------------------------------------------
def _lab_name(arg: str) -> str:
    """SPEC (a YAML file: its name) or a lab name."""
    if arg.endswith((".yaml", ".yml")) or Path(arg).is_file():
        return load_spec(arg).name
    return arg


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m topologies.lab",
                                description="Multi-host Loom lab in network namespaces")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="bring a lab up from a YAML spec")
    up.add_argument("spec")
    up.add_argument("--name", help="lab name (default: the spec's name or file stem)")
    up.add_argument("--no-controller", action="store_true",
                    help="hypervisors, management and underlay only")
    up.add_argument("--keep-on-error", action="store_true",
                    help="leave a failed lab as it is for inspection")
    down = sub.add_parser("down", help="remove everything a lab's state file lists")
    down.add_argument("lab", help="SPEC file or lab name")
    down.add_argument("--keep-logs", action="store_true", help="keep the workdir (logs, dbs)")
    st = sub.add_parser("status", help="what is up")
    st.add_argument("lab", nargs="?", help="SPEC file or lab name (default: every lab)")
    st.add_argument("--json", action="store_true", help="print the state file(s)")
    for cmd in ("add-hypervisor", "remove-hypervisor"):
        c = sub.add_parser(cmd, help=f"{cmd.split('-')[0]} one hypervisor of a running lab")
        c.add_argument("lab", help="SPEC file or lab name")
        c.add_argument("hypervisor")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if os.geteuid() != 0:
        print("lab: needs root (network namespaces, OVS): run with sudo", file=sys.stderr)
        return 2
    try:
        return _run(args)
    except (LabError, SpecError) as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.cmd == "up":
        Lab.up(args.spec, name=args.name, controller=not args.no_controller,
               keep_on_error=args.keep_on_error)
        return 0
    if args.cmd == "status":
        names = [_lab_name(args.lab)] if args.lab else lab_names()
        if not names:
            print("no lab is up")
        for name in names:
            state = LabState.load(name)
            print(json.dumps(state.data, indent=1) if args.json else status_text(state))
        return 0
    name = _lab_name(args.lab)
    if args.cmd == "down":
        if not state_path(name).exists():
            print(f"lab {name}: not up (no {state_path(name)})")
            return 0
        with lab_lock(name):
            return 1 if down_state(LabState.load(name), _printer(), args.keep_logs) else 0
    lab = Lab.load(name)
    if args.cmd == "add-hypervisor":
        lab.add_hypervisor(args.hypervisor)
    else:
        lab.remove_hypervisor(args.hypervisor)
    return 0


if __name__ == "__main__":
    sys.exit(main())
