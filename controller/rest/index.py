"""Per-snapshot lookup tables, built once per snapshot and shared by all requests.

The intent snapshot is keyed by id; requests need "subnets of network N", "IPs used
in subnet S", "segmentation ids used by type T". Building those is O(objects), so it
is done once per snapshot object (cached by identity) rather than once per request.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Optional

from controller import intent as model


class IntentIndex:
    def __init__(self, intent: model.Intent) -> None:
        self.intent = intent
        subnets: dict[str, list[model.Subnet]] = defaultdict(list)
        for s in intent.subnets.values():
            subnets[s.network_id].append(s)
        self.subnets_by_network = {
            k: sorted(v, key=lambda s: (s.created_at, s.id)) for k, v in subnets.items()
        }
        self.ports_by_network: dict[str, list[model.Port]] = defaultdict(list)
        self.used_ips: dict[str, dict[str, str]] = defaultdict(dict)  # subnet -> ip -> port id
        self.macs: dict[str, dict[str, str]] = defaultdict(dict)  # network -> mac -> port id
        for p in intent.ports.values():
            self.ports_by_network[p.network_id].append(p)
            self.macs[p.network_id][p.mac_address] = p.id
            for f in p.fixed_ips:
                self.used_ips[f.subnet_id][f.ip_address] = p.id
        self.segments: dict[str, dict[int, str]] = defaultdict(dict)  # type -> id -> network
        for n in intent.networks.values():
            self.segments[n.network_type][n.segmentation_id] = n.id

    def subnets_of(self, network_id: str) -> list[model.Subnet]:
        return self.subnets_by_network.get(network_id, [])

    def ports_of(self, network_id: str) -> list[model.Port]:
        return self.ports_by_network.get(network_id, [])


_lock = threading.Lock()
_cache: list[IntentIndex] = []
_CACHE_SIZE = 4


def index_of(intent: model.Intent) -> IntentIndex:
    """The index of this exact snapshot object (identity, not equality)."""
    with _lock:
        for idx in _cache:
            if idx.intent is intent:
                return idx
    idx = IntentIndex(intent)
    with _lock:
        _cache.insert(0, idx)
        del _cache[_CACHE_SIZE:]
    return idx


def find(intent: model.Intent, attr: str, object_id: str) -> Optional[object]:
    return getattr(intent, attr).get(object_id)
