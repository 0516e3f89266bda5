"""Per-snapshot lookup tables, kept for each snapshot and shared by all requests.

The intent snapshot is keyed by id; requests need "subnets of network N", "IPs used
in subnet S", "segmentation ids used by type T", "interfaces of router R", "the
router (or floating IP) whose port P is". Building those is O(objects), so it
is done once (cached by snapshot identity) and then carried from snapshot to
snapshot: the index of a new snapshot is its predecessor's updated for the ids the
store says changed (`intent_delta.delta_between`), copying only the groups those
touch. Without a known delta (first load, reconnect) it is built afresh.
"""

from __future__ import annotations

import ipaddress
import threading
import weakref
from typing import Any, Optional

import immutables

from controller import intent as model
from controller.intent_delta import IntentDelta, delta_between, make_delta, published

_INDEXED = frozenset({"subnets", "ports", "networks", "routers", "router_interfaces",
                      "floating_ips", "port_forwardings"})


def _subnet_order(s: model.Subnet) -> tuple[str, str]:
    return (s.created_at, s.id)


class IntentIndex:
    def __init__(self, intent: model.Intent, *, _empty: bool = False) -> None:
        self.intent = intent
        # network -> its subnets by (created_at, id)
        self.subnets_by_network: dict[str, list[model.Subnet]] = {}
        # network -> port id -> port
        self.ports_by_network: dict[str, dict[str, model.Port]] = {}
        self.used_ips: dict[str, dict[str, str]] = {}  # subnet -> ip -> port id
        self.macs: dict[str, dict[str, str]] = {}  # network -> mac -> port id
        self.segments: dict[str, dict[int, str]] = {}  # type -> id -> network
        # subnet -> an address (as an int) below which every pool address is held
        # (or is the gateway) in this snapshot: where a first-free scan may start.
        # Learnt by the scans themselves (ports.resolve_fixed_ips), carried over by
        # `derive`, lowered when an address is given back, dropped when the subnet
        # changes; a lower value is always right, only slower.
        self.free_from: dict[str, int] = {}
        # L3 rows by what names them (group -> row id -> row, or -> owner id): a
        # router's interfaces, the interface row naming a port, a subnet's interfaces,
        # the router whose gateway port a port is, the floating IP whose port it is.
        # Persistent maps (`_MapGroups`): a write costs what it touched, not a copy.
        self.router_ifaces: immutables.Map[str, dict[str, model.RouterInterface]] = _NO_GROUPS
        self.port_ifaces: immutables.Map[str, dict[str, model.RouterInterface]] = _NO_GROUPS
        self.subnet_ifaces: immutables.Map[str, dict[str, model.RouterInterface]] = _NO_GROUPS
        self.gateway_routers: immutables.Map[str, dict[str, str]] = _NO_GROUPS  # -> router ids
        self.floating_ports: immutables.Map[str, dict[str, str]] = _NO_GROUPS  # -> fip ids
        # the floating IPs associated with a (fixed) port; the port forwardings of a
        # floating IP, and those to an internal port
        self.fixed_fips: immutables.Map[str, dict[str, str]] = _NO_GROUPS  # port -> fip ids
        self.fip_pfs: immutables.Map[str, dict[str, str]] = _NO_GROUPS  # fip -> pf ids
        self.port_pfs: immutables.Map[str, dict[str, str]] = _NO_GROUPS  # port -> pf ids
        if _empty:
            return
        subnets: dict[str, list[model.Subnet]] = {}
        for s in intent.subnets.values():
            subnets.setdefault(s.network_id, []).append(s)
        self.subnets_by_network = {k: sorted(v, key=_subnet_order) for k, v in subnets.items()}
        for p in intent.ports.values():
            self.ports_by_network.setdefault(p.network_id, {})[p.id] = p
            self.macs.setdefault(p.network_id, {})[p.mac_address] = p.id
            for f in p.fixed_ips:
                self.used_ips.setdefault(f.subnet_id, {})[f.ip_address] = p.id
        for n in intent.networks.values():
            self.segments.setdefault(n.network_type, {})[n.segmentation_id] = n.id
        by_router: dict[str, dict[str, model.RouterInterface]] = {}
        by_port: dict[str, dict[str, model.RouterInterface]] = {}
        by_subnet: dict[str, dict[str, model.RouterInterface]] = {}
        for ri in intent.router_interfaces.values():
            by_router.setdefault(ri.router_id, {})[ri.id] = ri
            by_port.setdefault(ri.port_id, {})[ri.id] = ri
            by_subnet.setdefault(ri.subnet_id, {})[ri.id] = ri
        gateways: dict[str, dict[str, str]] = {}
        for r in intent.routers.values():
            if r.gateway_port_id:
                gateways.setdefault(r.gateway_port_id, {})[r.id] = r.id
        floating: dict[str, dict[str, str]] = {}
        fixed: dict[str, dict[str, str]] = {}
        for fip in intent.floating_ips.values():
            if fip.floating_port_id:
                floating.setdefault(fip.floating_port_id, {})[fip.id] = fip.id
            if fip.port_id:
                fixed.setdefault(fip.port_id, {})[fip.id] = fip.id
        fip_pfs: dict[str, dict[str, str]] = {}
        port_pfs: dict[str, dict[str, str]] = {}
        for pf in intent.port_forwardings.values():
            fip_pfs.setdefault(pf.floatingip_id, {})[pf.id] = pf.id
            port_pfs.setdefault(pf.internal_port_id, {})[pf.id] = pf.id
        self.fixed_fips = immutables.Map(fixed)
        self.fip_pfs, self.port_pfs = immutables.Map(fip_pfs), immutables.Map(port_pfs)
        self.router_ifaces, self.port_ifaces = immutables.Map(by_router), immutables.Map(by_port)
        self.subnet_ifaces = immutables.Map(by_subnet)
        self.gateway_routers, self.floating_ports = immutables.Map(gateways), \
            immutables.Map(floating)

    def subnets_of(self, network_id: str) -> list[model.Subnet]:
        return self.subnets_by_network.get(network_id, [])

    def ports_of(self, network_id: str) -> list[model.Port]:
        """The network's ports in id order."""
        ports = self.ports_by_network.get(network_id)
        return sorted(ports.values(), key=lambda p: p.id) if ports else []

    def interfaces_of(self, router_id: str) -> list[model.RouterInterface]:
        """The router's interfaces, by port id: O(its interfaces), whatever the fleet."""
        ifaces = self.router_ifaces.get(router_id)
        return sorted(ifaces.values(), key=lambda i: i.port_id) if ifaces else []

    def interfaces_on_port(self, port_id: str) -> list[model.RouterInterface]:
        """The Router_Interface rows naming the port (one, for a router's port), by id."""
        ifaces = self.port_ifaces.get(port_id)
        return [ifaces[k] for k in sorted(ifaces)] if ifaces else []

    def interfaces_on_subnet(self, subnet_id: str) -> list[model.RouterInterface]:
        """The Router_Interface rows on the subnet (one per router attached to it), by id."""
        ifaces = self.subnet_ifaces.get(subnet_id)
        return [ifaces[k] for k in sorted(ifaces)] if ifaces else []

    def gateway_router(self, port_id: str) -> Optional[str]:
        """The router whose gateway port `port_id` is, if any."""
        routers = self.gateway_routers.get(port_id)
        return min(routers) if routers else None

    def floating_ip_of_port(self, port_id: str) -> Optional[str]:
        """The floating IP whose floating port `port_id` is, if any."""
        fips = self.floating_ports.get(port_id)
        return min(fips) if fips else None

    def fips_on_port(self, port_id: str) -> list[str]:
        """The floating IPs associated with port `port_id` (as its fixed port), by id."""
        fips = self.fixed_fips.get(port_id)
        return sorted(fips) if fips else []

    def pfs_of_fip(self, fip_id: str) -> list[model.PortForwarding]:
        """The floating IP's port forwardings, by id."""
        pfs = self.fip_pfs.get(fip_id)
        table = self.intent.port_forwardings
        return [table[k] for k in sorted(pfs) if k in table] if pfs else []

    def pfs_to_port(self, port_id: str) -> list[model.PortForwarding]:
        """The port forwardings to internal port `port_id`, by id."""
        pfs = self.port_pfs.get(port_id)
        table = self.intent.port_forwardings
        return [table[k] for k in sorted(pfs) if k in table] if pfs else []

    def derive(self, intent: model.Intent, delta: IntentDelta) -> IntentIndex:
        """The index of `intent`, which is this index's snapshot changed by `delta`.

        Copy on write: the outer maps are copied (C level) and only the groups the
        touched objects belong to (before or after) are copied and edited, so this
        index stays valid for the requests still reading it."""
        old = self.intent
        new = IntentIndex(intent, _empty=True)
        new.subnets_by_network = self.subnets_by_network
        new.ports_by_network = self.ports_by_network
        new.used_ips, new.macs, new.segments = self.used_ips, self.macs, self.segments
        new.free_from = dict(self.free_from)

        subnet_ids = delta.ids("subnets")
        for sid in subnet_ids:
            new.free_from.pop(sid, None)  # its pools or gateway may have changed
        if subnet_ids:
            by_net = dict(self.subnets_by_network)
            nets: set[str] = set()
            for sid in subnet_ids:
                for s in (old.subnets.get(sid), intent.subnets.get(sid)):
                    if s is not None:
                        nets.add(s.network_id)
            for net in nets:
                kept = [s for s in by_net.get(net, ()) if s.id not in subnet_ids]
                kept.extend(s for sid in subnet_ids
                            if (s := intent.subnets.get(sid)) is not None and s.network_id == net)
                if kept:
                    by_net[net] = sorted(kept, key=_subnet_order)
                else:
                    by_net.pop(net, None)
            new.subnets_by_network = by_net

        port_ids = delta.ids("ports")
        if port_ids:
            ports = _Groups(self.ports_by_network)
            macs = _Groups(self.macs)
            ips = _Groups(self.used_ips)
            released: set[tuple[str, str]] = set()
            for pid in port_ids:
                before = old.ports.get(pid)
                if before is not None:
                    ports.remove(before.network_id, pid, before)
                    macs.remove(before.network_id, before.mac_address, pid)
                    for f in before.fixed_ips:
                        ips.remove(f.subnet_id, f.ip_address, pid)
                        released.add((f.subnet_id, f.ip_address))
            for pid in port_ids:
                after = intent.ports.get(pid)
                if after is not None:
                    ports.set(after.network_id, pid, after)
                    macs.set(after.network_id, after.mac_address, pid)
                    for f in after.fixed_ips:
                        ips.set(f.subnet_id, f.ip_address, pid)
            new.ports_by_network, new.macs, new.used_ips = ports.out, macs.out, ips.out
            for sid, ip in released:
                if sid in new.free_from and ip not in new.used_ips.get(sid, ()):
                    _lower(new.free_from, sid, ip)

        net_ids = delta.ids("networks")
        if net_ids:
            segs = _Groups(self.segments)
            for nid in net_ids:
                before_n = old.networks.get(nid)
                if before_n is not None:
                    segs.remove(before_n.network_type, before_n.segmentation_id, nid)
            for nid in net_ids:
                after_n = intent.networks.get(nid)
                if after_n is not None:
                    segs.set(after_n.network_type, after_n.segmentation_id, nid)
            new.segments = segs.out
        new._derive_l3(self, old, intent, delta)
        return new

    def _derive_l3(self, base: IntentIndex, old: model.Intent, intent: model.Intent,
                   delta: IntentDelta) -> None:
        """The L3 groups of `base` (the index of `old`) updated for the routers, router
        interfaces, floating IPs and port forwardings `delta` touched: O(those ids x log),
        copy on write, never a pass over (or a copy of) a table or a map."""
        self.router_ifaces, self.port_ifaces = base.router_ifaces, base.port_ifaces
        self.subnet_ifaces = base.subnet_ifaces
        self.gateway_routers, self.floating_ports = base.gateway_routers, base.floating_ports
        iface_ids = delta.ids("router_interfaces")
        if iface_ids:
            by_router = _MapGroups(base.router_ifaces)
            by_port = _MapGroups(base.port_ifaces)
            by_subnet = _MapGroups(base.subnet_ifaces)
            for iid in iface_ids:
                before = old.router_interfaces.get(iid)
                if before is not None:
                    by_router.remove(before.router_id, iid, before)
                    by_port.remove(before.port_id, iid, before)
                    by_subnet.remove(before.subnet_id, iid, before)
            for iid in iface_ids:
                after = intent.router_interfaces.get(iid)
                if after is not None:
                    by_router.set(after.router_id, iid, after)
                    by_port.set(after.port_id, iid, after)
                    by_subnet.set(after.subnet_id, iid, after)
            self.router_ifaces, self.port_ifaces = by_router.finish(), by_port.finish()
            self.subnet_ifaces = by_subnet.finish()
        self.gateway_routers = _regroup_owners(
            base.gateway_routers, delta.ids("routers"), old.routers, intent.routers,
            lambda r: r.gateway_port_id)
        self.floating_ports = _regroup_owners(
            base.floating_ports, delta.ids("floating_ips"), old.floating_ips,
            intent.floating_ips, lambda f: f.floating_port_id)
        self.fixed_fips = _regroup_owners(
            base.fixed_fips, delta.ids("floating_ips"), old.floating_ips,
            intent.floating_ips, lambda f: f.port_id)
        pf_ids = delta.ids("port_forwardings")
        self.fip_pfs = _regroup_owners(base.fip_pfs, pf_ids, old.port_forwardings,
                                       intent.port_forwardings, lambda p: p.floatingip_id)
        self.port_pfs = _regroup_owners(base.port_pfs, pf_ids, old.port_forwardings,
                                        intent.port_forwardings, lambda p: p.internal_port_id)


def _regroup_owners(groups: immutables.Map[str, dict[str, str]], ids: frozenset[str],
                    before: Any, after: Any, port_of: Any) -> immutables.Map[str, dict[str, str]]:
    """`groups` (port id -> {owner id: owner id}) with the owners `ids` moved from the
    port `port_of` gave them in `before` to the one it gives them in `after`."""
    if not ids:
        return groups
    out = _MapGroups(groups)
    for oid in ids:
        was = before.get(oid)
        if was is not None and port_of(was):
            out.remove(port_of(was), oid, oid)
    for oid in ids:
        now = after.get(oid)
        if now is not None and port_of(now):
            out.set(port_of(now), oid, oid)
    return out.finish()

def _lower(free_from: dict[str, int], subnet_id: str, ip: str) -> None:
    """`ip` is no longer held in the subnet: a first-free scan must start at it at the latest."""
    try:
        value = int(ipaddress.ip_address(ip))
    except ValueError:
        free_from.pop(subnet_id, None)
        return
    if value < free_from[subnet_id]:
        free_from[subnet_id] = value


class _Groups:
    """Copy-on-write edits of a group -> key -> value map: a group is copied the first
    time it is edited, the outer map once."""

    def __init__(self, base: dict[Any, dict[Any, Any]]) -> None:
        self.out: dict[Any, dict[Any, Any]] = dict(base)
        self._copied: set[Any] = set()

    def _group(self, group: Any) -> dict[Any, Any]:
        if group not in self._copied:
            self._copied.add(group)
            self.out[group] = dict(self.out.get(group, ()))
        return self.out[group]

    def remove(self, group: Any, key: Any, value: Any) -> None:
        current = self.out.get(group)
        if current is None or current.get(key) != value:
            return  # someone else holds it (or nobody): leave it
        g = self._group(group)
        del g[key]
        if not g:
            del self.out[group]
            self._copied.discard(group)

    def set(self, group: Any, key: Any, value: Any) -> None:
        self._group(group)[key] = value


_NO_GROUPS: immutables.Map[Any, Any] = immutables.Map()


class _MapGroups:
    """`_Groups` over a persistent map (immutables.Map of group -> dict): an edit costs
    O(log groups) plus a copy of the group edited (the first time), the map itself is
    never copied. The groups of a finished map are shared: never edited in place."""

    def __init__(self, base: immutables.Map[Any, dict[Any, Any]]) -> None:
        self._map = base.mutate()
        self._copied: set[Any] = set()

    def _group(self, group: Any) -> dict[Any, Any]:
        if group not in self._copied:
            self._copied.add(group)
            self._map[group] = dict(self._map.get(group, ()))
        return self._map[group]  # type: ignore[no-any-return]

    def remove(self, group: Any, key: Any, value: Any) -> None:
        current = self._map.get(group)
        if current is None or current.get(key) != value:
            return  # someone else holds it (or nobody): leave it
        g = self._group(group)
        del g[key]
        if not g:
            del self._map[group]
            self._copied.discard(group)

    def set(self, group: Any, key: Any, value: Any) -> None:
        self._group(group)[key] = value

    def finish(self) -> immutables.Map[Any, dict[Any, Any]]:
        return self._map.finish()


_lock = threading.Lock()
_cache: list[IntentIndex] = []  # of published snapshots, newest first
_others: list[IntentIndex] = []  # of any other Intent (tests, a transaction's view)
_CACHE_SIZE = 4
# transaction -> the index of its latest view (see index_for_write)
_writes: weakref.WeakKeyDictionary[Any, IntentIndex] = weakref.WeakKeyDictionary()


def index_of(intent: model.Intent) -> IntentIndex:
    """The index of this exact snapshot object (identity, not equality): from the cache,
    else derived from a cached one the store knows the delta from, else built."""
    cache = _cache if published(intent) else _others
    with _lock:
        for cached in cache:
            if cached.intent is intent:
                return cached
        known = list(_cache)
    idx: Optional[IntentIndex] = None
    for candidate in known:
        delta = delta_between(candidate.intent, intent)
        if delta is not None:
            if _too_big(delta, intent):
                break  # cheaper to build afresh
            idx = candidate.derive(intent, delta)
            break
    if idx is None:
        idx = IntentIndex(intent)
    with _lock:
        for other in cache:
            if other.intent is intent:  # another thread got there first: share one
                return other
        cache.insert(0, idx)
        del cache[_CACHE_SIZE:]
    return idx


def _too_big(delta: IntentDelta, intent: model.Intent) -> bool:
    size = sum(len(delta.ids(attr)) for attr in _INDEXED)
    return size > max(64, sum(len(getattr(intent, attr)) for attr in _INDEXED) // 4)


def index_for_write(helper: Any) -> IntentIndex:
    """The index of a write transaction's current view (`helper.current()`).

    Derived from the index of the transaction's previous view (or of its base
    snapshot) and the objects its writes replaced since, so each item of a bulk
    create costs what it wrote, not what the store holds."""
    current: model.Intent = helper.current()
    base: model.Intent = helper.intent
    if current is base:
        return index_of(base)
    with _lock:
        last = _writes.get(helper)
    if last is not None and last.intent is current:
        return last
    overlay = getattr(helper, "_overlay", None)
    if not isinstance(overlay, dict):
        idx = IntentIndex(current)
    else:
        source = last if last is not None else index_of(base)
        was = source.intent
        touched = {
            attr: [k for k in changes
                   if getattr(was, attr).get(k) is not getattr(current, attr).get(k)]
            for attr, changes in overlay.items() if attr in _INDEXED
        }
        idx = source.derive(current, make_delta(touched))
    with _lock:
        _writes[helper] = idx
    return idx

