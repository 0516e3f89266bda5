"""Segmentation ids and MTUs per network type (pure functions).

Ranges: VLAN 1-4094; VXLAN and Geneve VNI 1-16777215 (24 bits); GRE key
1-4294967295 (the full 32-bit key, as Neutron's GRE type driver allows). Ids are
unique per type (schema index [network_type, segmentation_id]), so VLAN 100 on two
physical networks is one id, not two.

Flat networks (Neutron's type_flat) have no segmentation id in the API: their frames
cross the physical network untagged, so a physical network carries at most one flat
network (FlatNetworkInUse, enforced in the network create from the current intent).
The store's column is still required, so a flat network holds an internal id (the
lowest free one among flat networks, unique by the same index), never shown.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Optional

NETWORK_TYPES = ("flat", "vlan", "vxlan", "gre", "geneve")
# types carried on a physical network (a provider bridge mapped by loom-bridge-mappings)
PROVIDER_TYPES = ("flat", "vlan")
DEFAULT_TYPE = "vxlan"
DEFAULT_PHYSNET = "physnet1"
RANGES: dict[str, tuple[int, int]] = {
    "flat": (1, (1 << 32) - 1),  # internal ids only (see above)
    "vlan": (1, 4094),
    "vxlan": (1, (1 << 24) - 1),
    "geneve": (1, (1 << 24) - 1),
    "gre": (1, (1 << 32) - 1),
}
# Underlay MTU 1500 minus the encapsulation overhead over IPv4 (Neutron's numbers).
DEFAULT_MTU: dict[str, int] = {
    "flat": 1500, "vlan": 1500, "vxlan": 1450, "geneve": 1442, "gre": 1458,
}
MIN_MTU = 68


def in_range(network_type: str, segmentation_id: int) -> bool:
    low, high = RANGES[network_type]
    return low <= segmentation_id <= high


def lowest_free(network_type: str, used: Iterable[int]) -> Optional[int]:
    """The smallest id of the type's range not in `used`, or None when the range is full."""
    low, high = RANGES[network_type]
    taken = set(used)
    candidate = low
    while candidate in taken:
        candidate += 1
    return candidate if candidate <= high else None
