"""Who owns which switch among several controller instances: the pure decision
(`controller.ownership.plan`), and the OpenFlow role request it leads to."""

from __future__ import annotations

import struct
from types import MappingProxyType

from controller.ownership import FABRIC_KEY, Grant, keys_of, next_generation, plan
from controller.southbound.roles import OFPCR_ROLE_MASTER, role_request
from controller.store.cluster_view import ClusterView, OwnerRow

KEYS = [f"chassis:hv{i}" for i in range(6)]


def view(owners: dict[str, str]) -> ClusterView:
    return ClusterView(MappingProxyType({}), MappingProxyType({
        k: OwnerRow(k, o, 10, 0) for k, o in owners.items()}))


def settle(names: list[str], alive: set[str], owners: dict[str, str]) -> dict[str, str]:
    """Every instance runs plan on the same view, in turn, until nothing changes."""
    for _ in range(50):
        moved = False
        for me in names:
            if me not in alive:
                continue
            for g in plan(view(owners), me, alive, KEYS):
                owners[g.key] = g.to
                moved = True
        if not moved:
            return owners
    raise AssertionError(f"no fixed point: {owners}")


def test_orphans_are_spread_and_every_instance_agrees_who_takes_what() -> None:
    names = ["c1", "c2", "c3"]
    claims = {me: plan(view({}), me, set(names), KEYS) for me in names}
    taken = [g.key for gs in claims.values() for g in gs]
    assert sorted(taken) == sorted(KEYS)  # each key claimed by exactly one instance
    assert all(len(gs) == 2 for gs in claims.values()), claims
    assert all(g.kind == "claim" and g.expected is None for gs in claims.values() for g in gs)


def test_a_dead_owners_keys_fail_over_to_the_survivors() -> None:
    owners = {k: ("c1" if i % 2 else "c2") for i, k in enumerate(KEYS)}
    grants = plan(view(owners), "c2", {"c2"}, KEYS)
    assert {g.key for g in grants} == {k for k, o in owners.items() if o == "c1"}
    assert all(g.kind == "failover" and g.expected is not None
               and g.expected.owner == "c1" for g in grants)


def test_a_live_owner_keeps_its_keys_and_a_newcomer_gets_a_fair_share() -> None:
    owners = {k: "c1" for k in KEYS}
    assert plan(view(owners), "c2", {"c1", "c2"}, KEYS) == []  # never taken from the living
    handover = plan(view(owners), "c1", {"c1", "c2"}, KEYS)
    assert [g.kind for g in handover] == ["handover"] and handover[0].to == "c2"
    final = settle(["c1", "c2"], {"c1", "c2"}, owners)
    counts = sorted(list(final.values()).count(n) for n in ("c1", "c2"))
    assert counts == [3, 3], final


def test_an_instance_coming_back_does_not_take_back_what_is_balanced() -> None:
    owners = {"chassis:hv0": "c2"}
    assert plan(view(owners), "c1", {"c1", "c2"}, ["chassis:hv0"]) == []
    assert plan(view(owners), "c2", {"c1", "c2"}, ["chassis:hv0"]) == []


def test_a_fabric_is_one_key_and_chassis_are_one_each() -> None:
    assert keys_of(["unix:/a", "unix:/b"], fabric=True) == {FABRIC_KEY}
    assert keys_of(["unix:/a", "unix:/b"], fabric=False) == {"chassis:unix:/a",
                                                            "chassis:unix:/b"}


def test_generations_only_grow() -> None:
    first = next_generation(0)
    assert next_generation(first) > first
    far_future = first + 10**9
    assert next_generation(far_future) == far_future + 1


def test_role_request_is_ofp13_role_request() -> None:
    data = role_request(OFPCR_ROLE_MASTER, 0x0102030405060708, xid=7)
    version, kind, length, xid, role, _pad, generation = struct.unpack("!BBHIIIQ", data)
    assert (version, kind, length, xid, role, generation) == (
        4, 24, 24, 7, OFPCR_ROLE_MASTER, 0x0102030405060708)
    assert isinstance(Grant("k", "c1", None, "claim"), Grant)
