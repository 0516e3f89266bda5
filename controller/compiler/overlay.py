"""Flows and groups that join one network's ports across chassis through tunnels.

The tunnel key is the network's segmentation id. A packet that arrives over a
tunnel is marked FLAG_FROM_REMOTE at classify, skips the sender-side stages (the
sending chassis already enforced port security and egress rules, as OVN does),
and is flooded only to local ports: split horizon, so BUM traffic is replicated
once, at the head end, to exactly the chassis that have ports on the network.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Optional

from controller import pipeline as pl
from controller.flows import Bucket, Flow, Group, Output, PopVlan, PushVlan, SetField, mac, match
from controller.intent import Network, Port
from controller.topology import TunnelView

_ALL_ONES_64 = (1 << 64) - 1


@lru_cache(maxsize=65536)
def tunnel_in_flow(network: Network, tunnel: TunnelView, zone: int) -> Flow:
    return pl.CLASSIFY.flow(
        "tunnel", match(in_port=tunnel.ofport, tunnel_id=network.segmentation_id),
        actions=(SetField(pl.REG_FLAGS, pl.FLAG_FROM_REMOTE), SetField(pl.REG_CT_ZONE, zone)),
        write_metadata=(network.key, _ALL_ONES_64), goto="l2_lookup",
        cookie=pl.cookie(pl.Owner.NETWORK, network.key))


@lru_cache(maxsize=65536)
def remote_mac_flow(port: Port, network: Network, tunnel: TunnelView) -> Flow:
    return pl.L2_LOOKUP.flow(
        "remote_mac", match(metadata=network.key, eth_dst=mac(port.mac_address)),
        actions=(SetField("tunnel_id", network.segmentation_id), Output(tunnel.ofport)),
        cookie=pl.cookie(pl.Owner.PORT, port.key))


def flood_group(network: Network, group_id: int, tunnels: tuple[TunnelView, ...]) -> Group:
    """Head-end replication: one bucket per remote chassis with ports on the network."""
    return Group(group_id, "all", tuple(
        Bucket((SetField("tunnel_id", network.segmentation_id), Output(t.ofport)))
        for t in tunnels), cookie_owner=pl.cookie(pl.Owner.NETWORK, network.key))


def zone_of(network: Network) -> int:
    """The network's conntrack zone: the one the store allocated (store/allocations.py).

    Allocated once, unique among all networks, so it never moves when another network
    appears or the controller restarts (a moved zone breaks live connections). 0 means
    an Intent built by hand (unit tests): the zone is then derived from the key as the
    store would, unprobed, so two hand-built networks whose keys collide modulo
    CT_ZONE_SPAN share a zone; that cannot happen to networks read from the store.
    """
    return network.ct_zone or network.key % pl.CT_ZONE_SPAN + 1


def flood_group_id(network: Network) -> int:
    """The network's flood group id (overlay, provider and fabric floods alike).

    Allocated by the store, unique among networks; 0 (an Intent built by hand) falls
    back to the key's low bits, unprobed (a collision there is a test-only situation).
    """
    return network.flood_group or (network.key & pl.GROUP_ID_MASK) or 1


def zones_for(networks: list[Network]) -> dict[str, int]:
    """Conntrack zones for the networks present on one switch: `zone_of` each."""
    return {network.id: zone_of(network) for network in networks}


def group_id_for(network: Network, taken: set[int]) -> int:
    """`flood_group_id(network)`, noted in `taken` (kept for callers that track ids)."""
    gid = flood_group_id(network)
    taken.add(gid)
    return gid


# ---------------------------------------------------------------- provider networks
# VLAN and flat networks ride a physical network: the patch port from br-int to the
# provider bridge that the chassis' loom-bridge-mappings names for it. A VLAN network's
# frames cross it tagged with the segmentation id; a flat network's untagged (its
# segmentation id is internal: rest/segments.py). One physical network may carry one
# flat network and any number of VLAN networks: classify tells them apart by the tag.
OFPVID_PRESENT = 0x1000
OFPVID_NONE = 0x0000  # vlan_vid=0 exactly: the frame has no 802.1Q header
PROVIDER_TYPES = ("flat", "vlan")


def physnet_of(network: Network) -> Optional[str]:
    """The physical network a VLAN or flat network rides (through the provider patches);
    None for the others."""
    if network.network_type in PROVIDER_TYPES and network.physical_network:
        return network.physical_network
    return None


def provider_tag(network: Network) -> int:
    """The network's vlan_vid on the physical network (OFPVID_NONE: untagged, flat)."""
    if network.network_type == "flat":
        return OFPVID_NONE
    return OFPVID_PRESENT | network.segmentation_id


@lru_cache(maxsize=16384)
def provider_in_flow(network: Network, patch_ofport: int, zone: int) -> Flow:
    """Frames of this network from the provider bridge: VLAN ones by their tag (popped),
    the flat one untagged; scoped to the network."""
    flat = network.network_type == "flat"
    return pl.CLASSIFY.flow(
        "vlan", match(in_port=patch_ofport, vlan_vid=provider_tag(network)),
        actions=(*(() if flat else (PopVlan(),)), SetField(pl.REG_FLAGS, pl.FLAG_FROM_REMOTE),
                 SetField(pl.REG_CT_ZONE, zone)),
        write_metadata=(network.key, _ALL_ONES_64), goto="l2_lookup",
        cookie=pl.cookie(pl.Owner.NETWORK, network.key))


def _to_provider(network: Network, patch_ofport: int) -> tuple:
    if network.network_type == "flat":
        return (Output(patch_ofport),)
    return (PushVlan(), SetField("vlan_vid", provider_tag(network)), Output(patch_ofport))


@lru_cache(maxsize=65536)
def provider_mac_flow(port: Port, network: Network, patch_ofport: int) -> Flow:
    return pl.L2_LOOKUP.flow(
        "remote_mac", match(metadata=network.key, eth_dst=mac(port.mac_address)),
        actions=_to_provider(network, patch_ofport),
        cookie=pl.cookie(pl.Owner.PORT, port.key))


def provider_flood_group(network: Network, group_id: int, patch_ofport: int) -> Group:
    """The physical network does its own flooding: one copy onto it (tagged for VLAN)."""
    return Group(group_id, "all", (Bucket(_to_provider(network, patch_ofport)),),
                 cookie_owner=pl.cookie(pl.Owner.NETWORK, network.key))


@lru_cache(maxsize=16384)
def tagged_drop_flow(network: Network) -> Flow:
    """A flat network never forwards a frame that carries an 802.1Q header (a guest's
    own tag, kept through routing): sent onto the physical network it would be a frame
    of the VLAN network of that tag. OVN drops VLAN-tagged frames of a logical port
    the same way (unless vlan-passthru); Neutron's access ports do."""
    return pl.L2_LOOKUP.flow(
        "tagged", match(metadata=network.key, vlan_vid=(OFPVID_PRESENT, OFPVID_PRESENT)),
        cookie=pl.cookie(pl.Owner.NETWORK, network.key))
