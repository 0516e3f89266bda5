"""The lab's YAML spec: dataclasses, and validation that reports every problem at once.

    name: demo                      # optional; default: the file's stem
    hypervisors: [{name: hv1}, {name: hv2}]
    controllers: 2                  # optional: controller instances c1..cN (1-5, default 1)
    nb_members: 3                   # optional: a shared northbound of 1, 3 or 5 members
                                    # (default: none with one controller, its embedded
                                    # database; 1 with several controllers)
    controller:                     # optional
      rest_port: 9696               # optional (default: a free port); of_port likewise
                                    # (several controllers: c<i> takes port + i - 1)
      auth_tokens:                  # optional: start the controller with --auth-tokens
        alpha-token: {project_id: alpha, role: member}   # role: member (default) | admin
    projects:
      - name: alpha                 # a project_id; the lab calls the API as admin
        networks:
          - name: web
            type: vxlan             # vxlan | gre | geneve | vlan
            segmentation_id: 1001   # optional (the API picks the lowest free one)
            subnets: [{cidr: 10.0.0.0/24}]   # optional per subnet: dhcp, dns_nameservers,
                                             # host_routes (see below)
            guests:
              - {name: a1, hypervisor: hv1, ip: 10.0.0.11}   # ip optional (IPAM picks)
              - {name: a2, hypervisor: hv1, floating_ip: true}  # needs a router (below)
        routers:                    # optional: Neutron routers of the project
          - name: router
            external_gateway: true  # optional (default false): needs `external` (below)
            interfaces: [web]       # networks whose (IPv4) subnet the router joins
    external:                       # optional: a provider "outside" network (physnet)
      physical_network: physnet1    # optional (default physnet1)
      hypervisors: [hv1, hv2]       # optional: those that map it (default: all)
      gateways: [hv2]               # optional: loom-gateway=true (default: none, so
                                    # every mapping chassis may SNAT)
      network: public               # optional: the API network's name (default public)
      outside: 198.51.100.1/24      # optional: the outside host = the subnet's gateway_ip
      allocation_pool: [198.51.100.10, 198.51.100.99]   # optional (default .10-.99)
      http_port: 80                 # optional: the outside host's HTTP server (0: none)

With `auth_tokens` the API needs a token, so the lab writes them to
``<workdir>/controller/auth-tokens.yaml`` and calls the API with the first admin
token of the list, or, if there is none, with one it adds (``lab-admin-<random>``,
project ``admin``), recorded in the lab's state file.

`external` builds a physical network outside Loom: a Linux bridge in its own
namespace (the "physical switch") with a veth to ``br-ex`` on every mapped
hypervisor, and the "outside" host (a namespace playing the internet, with an HTTP
server that answers with the client's address); through the API, a flat, shared
``router:external`` network on the physnet with the outside's subnet.

A subnet's optional keys: ``dhcp`` (IPv4 only; default `DHCP_DEFAULT`): the subnet is
created with ``enable_dhcp: true`` and its guests get their IPv4 address, routes, MTU
and resolv.conf from Loom's DHCP server (a real dhclient in the guest, after its port is
ACTIVE) instead of being configured statically; the lab fails if what they get is not
what the API says (the port's fixed IP, gateway_ip, dns_nameservers, host_routes, the
network's MTU). ``dns_nameservers: [IP, ...]`` and ``host_routes: [{destination: CIDR,
nexthop: IP}, ...]`` are passed to the API as they are.

With `controllers` > 1 or `nb_members` > 0, the lab runs a shared northbound first
(``nb_members: 1``: one ovsdb-server; 3 or 5: a raft cluster, see
controller/store/nb_cluster.py), then every controller with ``--nb-db`` and
``--instance-name c<i>`` (controller/ownership.py). A raft cluster needs an odd number
of members; several controllers cannot share embedded databases (``nb_members: 0``:
the controller's own, one controller only).

Names of hypervisors and guests become namespace and interface names
(``<prefix>-<name>``, and ``<prefix>-t<guest>`` for a guest's switch port), so they
are short: 1-8 characters of ``a-z 0-9 -``, starting with a letter, unique together.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

NETWORK_TYPES = ("vxlan", "gre", "geneve", "vlan")
SEGMENT_RANGES = {
    "vlan": (1, 4094),
    "vxlan": (1, (1 << 24) - 1),
    "geneve": (1, (1 << 24) - 1),
    "gre": (1, (1 << 32) - 1),
}
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,7}$")
LAB_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
PROJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Whether an IPv4 subnet without `dhcp:` gets its guests' addresses by DHCP: yes, as
# Neutron's enable_dhcp defaults to true (Loom answers DHCP, controller/dhcp.py).
DHCP_DEFAULT = True
MAX_CONTROLLERS = 5
NB_MEMBER_COUNTS = (1, 3, 5)  # 0: no shared northbound (the controller's embedded one)


class SpecError(ValueError):
    """The spec is invalid; `problems` lists every problem as ``where: what``."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid lab spec {source}: {len(problems)} problem(s)\n{lines}")


@dataclass(frozen=True)
class HypervisorSpec:
    name: str


@dataclass(frozen=True)
class SubnetSpec:
    cidr: str
    dhcp: bool = False  # IPv4 only: enable_dhcp, and guests configured by DHCP
    dns_nameservers: tuple[str, ...] = ()
    host_routes: tuple[tuple[str, str], ...] = ()  # (destination, nexthop)

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.cidr)


@dataclass(frozen=True)
class GuestSpec:
    name: str
    hypervisor: str
    ip: str | None = None
    floating_ip: bool = False


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    type: str
    segmentation_id: int | None
    subnets: tuple[SubnetSpec, ...]
    guests: tuple[GuestSpec, ...] = ()

    @property
    def dhcp_subnet(self) -> SubnetSpec | None:
        """The IPv4 subnet whose guests get their address by DHCP, if any."""
        return next((s for s in self.subnets if s.dhcp), None)


@dataclass(frozen=True)
class RouterSpec:
    name: str
    external_gateway: bool = False
    interfaces: tuple[str, ...] = ()  # network names of the project


@dataclass(frozen=True)
class ProjectSpec:
    name: str
    networks: tuple[NetworkSpec, ...]
    routers: tuple[RouterSpec, ...] = ()

    def router_of(self, network: str) -> RouterSpec | None:
        return next((r for r in self.routers if network in r.interfaces), None)


DEFAULT_OUTSIDE = "198.51.100.1/24"  # TEST-NET-2: documentation space, never routed


@dataclass(frozen=True)
class ExternalSpec:
    """The provider network the lab builds outside Loom, and its API network."""

    physical_network: str = "physnet1"
    hypervisors: tuple[str, ...] = ()  # mapping the physnet; resolved: never empty
    all_hypervisors: bool = True       # the default: hypervisors added later map it too
    gateways: tuple[str, ...] = ()
    network: str = "public"
    outside: str = DEFAULT_OUTSIDE     # address/prefix of the outside host
    allocation_pool: tuple[str, str] = ("198.51.100.10", "198.51.100.99")
    http_port: int = 80                # 0: no HTTP server

    @property
    def cidr(self) -> str:
        return str(ipaddress.ip_interface(self.outside).network)

    @property
    def outside_ip(self) -> str:
        return str(ipaddress.ip_interface(self.outside).ip)


ROLES = ("admin", "member")
MIN_TOKEN_LENGTH = 8  # as the controller's --auth-tokens loader requires


@dataclass(frozen=True)
class TokenSpec:
    """One static API token, as in the controller's --auth-tokens file."""

    token: str
    project_id: str
    role: str = "member"


@dataclass(frozen=True)
class ControllerSpec:
    rest_port: int | None = None
    of_port: int | None = None
    auth_tokens: tuple[TokenSpec, ...] = ()

    @property
    def admin_token(self) -> str | None:
        """The first admin token given, which the lab then uses itself."""
        return next((t.token for t in self.auth_tokens if t.role == "admin"), None)

    def tokens_file_data(self) -> dict[str, dict[str, str]]:
        """The tokens as the controller's --auth-tokens file maps them."""
        return {t.token: {"project_id": t.project_id, "role": t.role}
                for t in self.auth_tokens}


@dataclass(frozen=True)
class PlacedGuest:
    """A guest with where it lives in the spec."""

    spec: GuestSpec
    project: str
    network: str

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class LabSpec:
    name: str
    hypervisors: tuple[HypervisorSpec, ...]
    projects: tuple[ProjectSpec, ...] = ()
    controller: ControllerSpec = field(default_factory=ControllerSpec)
    source: str = "<dict>"
    external: ExternalSpec | None = None
    controllers: int = 1
    nb_members: int = 0  # 0: the controller's embedded database (one controller only)

    @property
    def shared_nb(self) -> bool:
        """Whether the lab runs a northbound of its own that its controllers share."""
        return self.nb_members > 0

    def instance_names(self) -> list[str]:
        """The controllers' --instance-name values (c1..cN); [] without a shared nb."""
        return [f"c{i}" for i in range(1, self.controllers + 1)] if self.shared_nb else []

    def guests(self) -> list[PlacedGuest]:
        return [
            PlacedGuest(g, p.name, n.name) for p in self.projects for n in p.networks
            for g in n.guests
        ]

    def network(self, project: str, network: str) -> NetworkSpec:
        for p in self.projects:
            for n in p.networks:
                if p.name == project and n.name == network:
                    return n
        raise KeyError(f"{project}/{network}")

    def project(self, name: str) -> ProjectSpec:
        for p in self.projects:
            if p.name == name:
                return p
        raise KeyError(name)


class _Checker:
    """Collects problems with their location instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, where: str, what: str) -> None:
        self.problems.append(f"{where}: {what}")

    def mapping(self, value: Any, where: str, allowed: set[str], required: set[str]) -> bool:
        if not isinstance(value, dict):
            self.fail(where, f"expected a mapping, got {type(value).__name__}")
            return False
        for key in sorted(set(value) - allowed, key=str):
            self.fail(where, f"unknown key {key!r} (allowed: {', '.join(sorted(allowed))})")
        for key in sorted(required - set(value)):
            self.fail(where, f"missing required key {key!r}")
        return True

    def items(self, value: Any, where: str, *, required: bool) -> list[Any]:
        if value is None:
            if required:
                self.fail(where, "must be a non-empty list")
            return []
        if not isinstance(value, list):
            self.fail(where, f"expected a list, got {type(value).__name__}")
            return []
        if required and not value:
            self.fail(where, "must be a non-empty list")
        return value

    def name(self, value: Any, where: str, pattern: re.Pattern[str], hint: str) -> str | None:
        if not isinstance(value, str) or not pattern.match(value):
            self.fail(where, f"{value!r} is not a valid name ({hint})")
            return None
        return value

    def port(self, value: Any, where: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            self.fail(where, f"{value!r} is not a TCP port (1-65535)")
            return None
        return value


_SHORT = "1-8 chars of a-z 0-9 -, starting with a letter"


def parse_spec(data: Any, source: str = "<dict>", name: str | None = None) -> LabSpec:
    """Validate a spec already loaded from YAML; raise SpecError listing every problem."""
    c = _Checker()
    if not c.mapping(data, "spec", {"name", "hypervisors", "projects", "controller",
                                    "external", "controllers", "nb_members"}, {"hypervisors"}):
        raise SpecError(source, c.problems)
    lab_name = name or data.get("name") or Path(source).stem
    c.name(lab_name, "name", LAB_NAME_RE, "1-64 chars of A-Z a-z 0-9 _ . -")
    hypervisors = _hypervisors(c, data.get("hypervisors"))
    controller = _controller(c, data.get("controller"))
    controllers, nb_members = _instances(c, data.get("controllers", 1), data.get("nb_members"))
    _check_ports(c, controller, controllers)
    hv_names = {h.name for h in hypervisors}
    projects = _projects(c, data.get("projects"), hv_names)
    external = _external(c, data.get("external"), [h.name for h in hypervisors])
    _check_global(c, hypervisors, projects)
    _check_l3(c, projects, data.get("external") is not None)
    if c.problems:
        raise SpecError(source, c.problems)
    return LabSpec(str(lab_name), tuple(hypervisors), tuple(projects), controller, source,
                   external, controllers, nb_members)


def load_spec(path: str | Path, name: str | None = None) -> LabSpec:
    """Read and validate a YAML spec file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SpecError(str(path), [f"cannot read: {exc.strerror}"]) from None
    except yaml.YAMLError as exc:
        raise SpecError(str(path), [f"not valid YAML: {exc}"]) from None
    return parse_spec(data, str(path), name)


def _hypervisors(c: _Checker, raw: Any) -> list[HypervisorSpec]:
    out = []
    for i, item in enumerate(c.items(raw, "hypervisors", required=True)):
        where = f"hypervisors[{i}]"
        if c.mapping(item, where, {"name"}, {"name"}) and "name" in item:
            hv = c.name(item["name"], f"{where}.name", NAME_RE, _SHORT)
            if hv:
                out.append(HypervisorSpec(hv))
    return out


def _controller(c: _Checker, raw: Any) -> ControllerSpec:
    if raw is None:
        return ControllerSpec()
    if not c.mapping(raw, "controller", {"rest_port", "of_port", "auth_tokens"}, set()):
        return ControllerSpec()
    return ControllerSpec(c.port(raw.get("rest_port"), "controller.rest_port"),
                          c.port(raw.get("of_port"), "controller.of_port"),
                          _tokens(c, raw.get("auth_tokens"), "controller.auth_tokens"))


def _instances(c: _Checker, raw_ctl: Any, raw_nb: Any) -> tuple[int, int]:
    """`controllers` (1-5) and `nb_members` (1, 3 or 5; 0 = embedded, one controller
    only; absent: 0 with one controller, 1 with several)."""
    controllers = 1
    if isinstance(raw_ctl, bool) or not isinstance(raw_ctl, int) \
            or not 1 <= raw_ctl <= MAX_CONTROLLERS:
        c.fail("controllers", f"{raw_ctl!r} is not a number of controller instances "
                              f"(1-{MAX_CONTROLLERS})")
    else:
        controllers = raw_ctl
    if raw_nb is None:
        return controllers, (1 if controllers > 1 else 0)
    counts = ", ".join(str(n) for n in NB_MEMBER_COUNTS[:-1]) + f" or {NB_MEMBER_COUNTS[-1]}"
    if isinstance(raw_nb, bool) or not isinstance(raw_nb, int):
        c.fail("nb_members", f"{raw_nb!r} is not a number of northbound members ({counts})")
        return controllers, 1
    if raw_nb == 0:
        if controllers > 1:
            c.fail("nb_members", f"0 (each controller its own embedded database) cannot "
                                 f"serve {controllers} controllers: they must share one "
                                 f"northbound ({counts} members)")
        return controllers, 0
    if raw_nb in NB_MEMBER_COUNTS:
        return controllers, raw_nb
    if raw_nb > 0 and raw_nb % 2 == 0:
        tolerated = (raw_nb - 1) // 2
        c.fail("nb_members", f"{raw_nb}: a raft cluster needs an odd number of members "
                             f"({counts}); {raw_nb} members survive {tolerated} failure(s), "
                             f"no more than {raw_nb - 1} do")
    else:
        c.fail("nb_members", f"{raw_nb!r} is not {counts} (0: the controller's embedded "
                             "database)")
    return controllers, 1


def _check_ports(c: _Checker, ctl: ControllerSpec, controllers: int) -> None:
    """With several controllers, c<i> takes rest_port + i - 1 (of_port likewise): the
    ranges must stay below 65536. (REST listens on 127.0.0.1 and OpenFlow on the
    management address, so the two ranges may overlap.)"""
    for key, port in (("rest_port", ctl.rest_port), ("of_port", ctl.of_port)):
        last = (port or 0) + controllers - 1
        if port is not None and last > 65535:
            c.fail(f"controller.{key}", f"{controllers} controllers take ports {port}-{last}, "
                                        "past 65535")


def _tokens(c: _Checker, raw: Any, where: str) -> tuple[TokenSpec, ...]:
    """token -> {project_id, role}: the controller's rules, every problem reported.

    Problems name a token by its first 4 characters only (tokens are secrets)."""
    if raw is None:
        return ()
    if not isinstance(raw, dict) or not raw:
        c.fail(where, "expected a non-empty mapping of token -> {project_id, role}")
        return ()
    out = []
    for token, entry in raw.items():
        here = f"{where}[{str(token)[:4]}…]"
        if not isinstance(token, str) or len(token) < MIN_TOKEN_LENGTH \
                or any(ch.isspace() for ch in token):
            c.fail(here, f"a token is a string of at least {MIN_TOKEN_LENGTH} characters "
                         "without spaces")
            continue
        if not c.mapping(entry, here, {"project_id", "role"}, {"project_id"}):
            continue
        project, role = entry.get("project_id"), entry.get("role", "member")
        ok = True
        if not isinstance(project, str) or not PROJECT_RE.match(project):
            c.fail(f"{here}.project_id", f"{project!r} is not a valid project id "
                                         "(1-64 chars of A-Z a-z 0-9 _ . -)")
            ok = False
        if role not in ROLES:
            c.fail(f"{here}.role", f"{role!r} is not one of {', '.join(ROLES)}")
            ok = False
        if ok:
            out.append(TokenSpec(token, str(project), str(role)))
    return tuple(out)


def _projects(c: _Checker, raw: Any, hv_names: set[str]) -> list[ProjectSpec]:
    out = []
    for i, item in enumerate(c.items(raw, "projects", required=False)):
        where = f"projects[{i}]"
        if not c.mapping(item, where, {"name", "networks", "routers"}, {"name", "networks"}):
            continue
        pname = c.name(item.get("name"), f"{where}.name", PROJECT_RE,
                       "1-64 chars of A-Z a-z 0-9 _ . -")
        nets = [
            _network(c, n, f"{where}.networks[{j}]", hv_names)
            for j, n in enumerate(c.items(item.get("networks"), f"{where}.networks",
                                          required=True))
        ]
        routers = [
            _router(c, r, f"{where}.routers[{j}]")
            for j, r in enumerate(c.items(item.get("routers"), f"{where}.routers",
                                          required=False))
        ]
        if pname:
            out.append(ProjectSpec(pname, tuple(n for n in nets if n is not None),
                                   tuple(r for r in routers if r is not None)))
    return out


def _flag(c: _Checker, raw: Any, where: str) -> bool:
    if raw is None:
        return False
    if not isinstance(raw, bool):
        c.fail(where, f"{raw!r} is not true or false")
        return False
    return raw


def _router(c: _Checker, raw: Any, where: str) -> RouterSpec | None:
    if not c.mapping(raw, where, {"name", "external_gateway", "interfaces"}, {"name"}):
        return None
    rname = c.name(raw.get("name"), f"{where}.name", PROJECT_RE,
                   "1-64 chars of A-Z a-z 0-9 _ . -")
    gateway = _flag(c, raw.get("external_gateway"), f"{where}.external_gateway")
    interfaces = []
    for k, n in enumerate(c.items(raw.get("interfaces"), f"{where}.interfaces",
                                  required=False)):
        if not isinstance(n, str):
            c.fail(f"{where}.interfaces[{k}]", f"{n!r} is not a network name")
        elif n in interfaces:
            c.fail(f"{where}.interfaces[{k}]", f"network {n!r} listed twice")
        else:
            interfaces.append(n)
    if rname is None:
        return None
    return RouterSpec(rname, gateway, tuple(interfaces))


def _hv_list(c: _Checker, raw: Any, where: str, known: list[str]) -> list[str]:
    out: list[str] = []
    for k, hv in enumerate(c.items(raw, where, required=False)):
        if hv not in known:
            c.fail(f"{where}[{k}]", f"{hv!r} is not a hypervisor of this lab "
                                    f"(known: {', '.join(known) or 'none'})")
        elif hv in out:
            c.fail(f"{where}[{k}]", f"{hv!r} listed twice")
        else:
            out.append(str(hv))
    return out


PHYSNET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _external(c: _Checker, raw: Any, hv_names: list[str]) -> ExternalSpec | None:
    """The `external` section; defaults make `external: {}` a complete one."""
    if raw is None:
        return None
    keys = {"physical_network", "hypervisors", "gateways", "network", "outside",
            "allocation_pool", "http_port"}
    if not c.mapping(raw, "external", keys, set()):
        return None
    d = ExternalSpec()
    before = len(c.problems)
    ok = True
    physnet = raw.get("physical_network", d.physical_network)
    if c.name(physnet, "external.physical_network", PHYSNET_RE,
              "1-64 chars of A-Z a-z 0-9 _ . -, as in loom-bridge-mappings") is None:
        ok = False
    netname = raw.get("network", d.network)
    if c.name(netname, "external.network", PROJECT_RE,
              "1-64 chars of A-Z a-z 0-9 _ . -") is None:
        ok = False
    given = raw.get("hypervisors")
    hvs = _hv_list(c, given, "external.hypervisors", hv_names) if given is not None \
        else list(hv_names)
    if given == []:
        c.fail("external.hypervisors", "must be a non-empty list (or left out: all)")
    gateways = _hv_list(c, raw.get("gateways"), "external.gateways", hv_names)
    for k, gw in enumerate(gateways):
        if gw not in hvs:
            c.fail(f"external.gateways[{k}]", f"{gw!r} does not map "
                                              f"{physnet} (not in external.hypervisors)")
    outside = _external_outside(c, raw.get("outside", d.outside))
    pool = _external_pool(c, raw.get("allocation_pool"), outside)
    port = raw.get("http_port", d.http_port)
    if port != 0 and c.port(port, "external.http_port") is None:
        ok = False
    if not ok or outside is None or pool is None or len(c.problems) > before:
        return None
    return ExternalSpec(str(physnet), tuple(hvs), given is None, tuple(gateways),
                        str(netname), outside, pool, int(port))


def _external_outside(c: _Checker, raw: Any) -> str | None:
    try:
        iface = ipaddress.ip_interface(str(raw))
    except ValueError:
        c.fail("external.outside", f"{raw!r} is not an address/prefix (e.g. {DEFAULT_OUTSIDE})")
        return None
    net = iface.network
    if iface.version != 4 or "/" not in str(raw):
        c.fail("external.outside", f"{raw!r}: an IPv4 address with its prefix, "
                                   f"e.g. {DEFAULT_OUTSIDE}")
        return None
    if net.num_addresses < 8:
        c.fail("external.outside", f"{net} is too small for routers and floating IPs")
        return None
    if iface.ip in (net.network_address, net.broadcast_address):
        c.fail("external.outside", f"{iface.ip} is the network or broadcast address of {net}")
        return None
    return str(iface)


def _external_pool(c: _Checker, raw: Any, outside: str | None) -> tuple[str, str] | None:
    """[start, end] inside the outside's subnet, not holding the outside's address."""
    if outside is None:
        return None
    iface = ipaddress.IPv4Interface(outside)
    net = iface.network
    where = "external.allocation_pool"
    if raw is None:  # .10-.99, or the upper half of a small subnet
        hosts = list(net.hosts())
        first, last = (hosts[9], hosts[98]) if len(hosts) >= 99 else \
            (hosts[len(hosts) // 2], hosts[-1])
        if first <= iface.ip <= last:
            c.fail(where, f"the default pool {first}-{last} holds the outside host's address "
                          f"{iface.ip}: give external.allocation_pool")
            return None
        return str(first), str(last)
    if not isinstance(raw, list) or len(raw) != 2:
        c.fail(where, f"expected [start, end], got {raw!r}")
        return None
    try:
        start, end = (ipaddress.IPv4Address(str(a)) for a in raw)
    except ValueError as exc:
        c.fail(where, f"{raw!r}: {exc}")
        return None
    if start not in net or end not in net:
        c.fail(where, f"{start}-{end} is not inside {net}")
        return None
    if start > end:
        c.fail(where, f"start {start} is after end {end}")
        return None
    if start in (net.network_address, net.broadcast_address) \
            or end in (net.network_address, net.broadcast_address):
        c.fail(where, f"{start}-{end} holds the network or broadcast address of {net}")
        return None
    if start <= iface.ip <= end:
        c.fail(where, f"{start}-{end} holds the outside host's address {iface.ip}")
        return None
    return str(start), str(end)


def _network(c: _Checker, raw: Any, where: str, hv_names: set[str]) -> NetworkSpec | None:
    keys = {"name", "type", "segmentation_id", "subnets", "guests"}
    if not c.mapping(raw, where, keys, {"name", "type", "subnets"}):
        return None
    nname = c.name(raw.get("name"), f"{where}.name", PROJECT_RE, "1-64 chars of A-Z a-z 0-9 _ . -")
    ntype = raw.get("type")
    if ntype not in NETWORK_TYPES:
        c.fail(f"{where}.type", f"{ntype!r} is not one of {', '.join(NETWORK_TYPES)}")
        ntype = None
    seg = raw.get("segmentation_id")
    if seg is not None:
        if isinstance(seg, bool) or not isinstance(seg, int):
            c.fail(f"{where}.segmentation_id", f"{seg!r} is not an integer")
            seg = None
        elif ntype is not None:
            low, high = SEGMENT_RANGES[ntype]
            if not low <= seg <= high:
                c.fail(f"{where}.segmentation_id", f"{seg} out of range {low}-{high} for {ntype}")
    subnets = _subnets(c, raw.get("subnets"), f"{where}.subnets")
    guests = _guests(c, raw.get("guests"), f"{where}.guests", hv_names, subnets)
    if nname is None or ntype is None:
        return None
    return NetworkSpec(nname, ntype, seg, tuple(subnets), tuple(guests))


def _subnets(c: _Checker, raw: Any, where: str) -> list[SubnetSpec]:
    out: list[SubnetSpec] = []
    versions: set[int] = set()
    keys = {"cidr", "dhcp", "dns_nameservers", "host_routes"}
    for k, item in enumerate(c.items(raw, where, required=True)):
        here = f"{where}[{k}]"
        if not c.mapping(item, here, keys, {"cidr"}) or "cidr" not in item:
            continue
        try:
            net = ipaddress.ip_network(str(item["cidr"]), strict=True)
        except ValueError as exc:
            c.fail(f"{here}.cidr", f"{item['cidr']!r} is not a network address/prefix ({exc})")
            continue
        if net.num_addresses < 4:
            c.fail(f"{here}.cidr", f"{net} is too small for guests")
            continue
        if net.version in versions:
            c.fail(f"{here}.cidr", f"a network has at most one IPv{net.version} subnet here")
            continue
        versions.add(net.version)
        dhcp = DHCP_DEFAULT and net.version == 4
        if item.get("dhcp") is not None:
            dhcp = _flag(c, item.get("dhcp"), f"{here}.dhcp")
            if dhcp and net.version != 4:
                c.fail(f"{here}.dhcp", "DHCP is IPv4 only (Loom answers DHCPv4)")
        dns = _addresses(c, item.get("dns_nameservers"), f"{here}.dns_nameservers", net.version)
        routes = _host_routes(c, item.get("host_routes"), f"{here}.host_routes", net.version)
        out.append(SubnetSpec(str(net), dhcp, tuple(dns), tuple(routes)))
    return out


def _address(c: _Checker, value: Any, where: str, version: int) -> str | None:
    try:
        ip = ipaddress.ip_address(str(value))
    except ValueError:
        c.fail(where, f"{value!r} is not an IP address")
        return None
    if ip.version != version:
        c.fail(where, f"{ip} is not IPv{version} like its subnet")
        return None
    return str(ip)


def _addresses(c: _Checker, raw: Any, where: str, version: int) -> list[str]:
    found = (_address(c, v, f"{where}[{k}]", version)
             for k, v in enumerate(c.items(raw, where, required=False)))
    return [ip for ip in found if ip is not None]


def _host_routes(c: _Checker, raw: Any, where: str, version: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for k, item in enumerate(c.items(raw, where, required=False)):
        here = f"{where}[{k}]"
        if not c.mapping(item, here, {"destination", "nexthop"}, {"destination", "nexthop"}) \
                or "destination" not in item or "nexthop" not in item:
            continue
        try:
            dest = ipaddress.ip_network(str(item["destination"]), strict=True)
        except ValueError as exc:
            c.fail(f"{here}.destination", f"{item['destination']!r}: {exc}")
            continue
        hop = _address(c, item["nexthop"], f"{here}.nexthop", version)
        if dest.version != version:
            c.fail(f"{here}.destination", f"{dest} is not IPv{version} like its subnet")
        elif hop is not None:
            out.append((str(dest), hop))
    return out


def _guests(
    c: _Checker, raw: Any, where: str, hv_names: set[str], subnets: list[SubnetSpec]
) -> list[GuestSpec]:
    out = []
    for k, item in enumerate(c.items(raw, where, required=False)):
        here = f"{where}[{k}]"
        if not c.mapping(item, here, {"name", "hypervisor", "ip", "floating_ip"},
                         {"name", "hypervisor"}):
            continue
        gname = c.name(item.get("name"), f"{here}.name", NAME_RE, _SHORT)
        hv = item.get("hypervisor")
        if hv not in hv_names:
            known = ", ".join(sorted(hv_names)) or "none"
            c.fail(f"{here}.hypervisor", f"{hv!r} is not a hypervisor of this lab (known: {known})")
        ip = _guest_ip(c, item.get("ip"), f"{here}.ip", subnets)
        fip = _flag(c, item.get("floating_ip"), f"{here}.floating_ip")
        if gname and hv in hv_names:
            out.append(GuestSpec(gname, str(hv), ip, fip))
    return out


def _guest_ip(c: _Checker, raw: Any, where: str, subnets: list[SubnetSpec]) -> str | None:
    if raw is None:
        return None
    try:
        ip = ipaddress.ip_address(str(raw))
    except ValueError:
        c.fail(where, f"{raw!r} is not an IP address")
        return None
    owner = next((s.network for s in subnets if ip in s.network), None)
    if owner is None:
        c.fail(where, f"{ip} is in none of the network's subnets")
        return None
    if owner.version == 4 and ip in (owner.network_address, owner.broadcast_address):
        c.fail(where, f"{ip} is the network or broadcast address of {owner}")
        return None
    if ip == next(owner.hosts()):
        c.fail(where, f"{ip} is reserved for {owner}'s gateway (the first address)")
        return None
    return str(ip)


def _check_global(c: _Checker, hvs: list[HypervisorSpec], projects: list[ProjectSpec]) -> None:
    """Uniqueness across the whole lab: names, segmentation ids, guest IPs per network."""
    seen: dict[str, str] = {}
    for i, hv in enumerate(hvs):
        _unique(c, seen, hv.name, f"hypervisors[{i}].name")
    segs: dict[tuple[str, int], str] = {}
    pnames: set[str] = set()
    for i, p in enumerate(projects):
        if p.name in pnames:
            c.fail(f"projects[{i}].name", f"duplicate project {p.name!r}")
        pnames.add(p.name)
        nnames: set[str] = set()
        for j, n in enumerate(p.networks):
            where = f"projects[{i}].networks[{j}]"
            if n.name in nnames:
                c.fail(f"{where}.name", f"duplicate network {n.name!r} in project {p.name!r}")
            nnames.add(n.name)
            if n.segmentation_id is not None:
                key = (n.type, n.segmentation_id)
                if key in segs:
                    c.fail(f"{where}.segmentation_id",
                           f"{n.type} {n.segmentation_id} already used by {segs[key]}")
                segs.setdefault(key, f"{p.name}/{n.name}")
            ips: set[str] = set()
            for k, g in enumerate(n.guests):
                _unique(c, seen, g.name, f"{where}.guests[{k}].name")
                if g.ip is not None:
                    if g.ip in ips:
                        c.fail(f"{where}.guests[{k}].ip", f"{g.ip} used twice in {n.name!r}")
                    ips.add(g.ip)


def _check_l3(c: _Checker, projects: list[ProjectSpec], external: bool) -> None:
    """Routers join networks of their own project, one router per network; external
    gateways need `external`; a floating IP needs a router with one on its network."""
    for i, p in enumerate(projects):
        nets = {n.name: n for n in p.networks}
        owner: dict[str, str] = {}
        names: set[str] = set()
        for j, r in enumerate(p.routers):
            where = f"projects[{i}].routers[{j}]"
            if r.name in names:
                c.fail(f"{where}.name", f"duplicate router {r.name!r} in project {p.name!r}")
            names.add(r.name)
            if r.external_gateway and not external:
                c.fail(f"{where}.external_gateway", "needs a top-level `external` section "
                                                    "(the provider network)")
            for k, iface in enumerate(r.interfaces):
                if iface not in nets:
                    c.fail(f"{where}.interfaces[{k}]", f"{iface!r} is not a network of project "
                                                       f"{p.name!r} (known: "
                                                       f"{', '.join(sorted(nets)) or 'none'})")
                elif not any(s.network.version == 4 for s in nets[iface].subnets):
                    c.fail(f"{where}.interfaces[{k}]", f"network {iface!r} has no IPv4 subnet")
                elif iface in owner:
                    c.fail(f"{where}.interfaces[{k}]", f"network {iface!r} is already an "
                                                       f"interface of router {owner[iface]!r}")
                else:
                    owner[iface] = r.name
        for j, n in enumerate(p.networks):
            router = p.router_of(n.name)
            for k, g in enumerate(n.guests):
                if g.floating_ip and (router is None or not router.external_gateway):
                    c.fail(f"projects[{i}].networks[{j}].guests[{k}].floating_ip",
                           f"network {n.name!r} has no router with an external gateway")


RESERVED_NAMES = {"ul": "the underlay namespace", "ext": "the external network's switch",
                  "outside": "the external network's outside host"}


def _unique(c: _Checker, seen: dict[str, str], name: str, where: str) -> None:
    """Hypervisor and guest names share one namespace (they name network namespaces)."""
    if name in RESERVED_NAMES:
        c.fail(where, f"name {name!r} is reserved for {RESERVED_NAMES[name]}")
    elif name in seen:
        c.fail(where, f"name {name!r} already used at {seen[name]}")
    else:
        seen[name] = where
