"""The lab spec's HA keys: `controllers` (1-5) and `nb_members` (1, 3 or 5; 0 = the
controller's embedded database, one controller only), accepted and refused values
with their messages, and the shipped ha.yaml."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from topologies.labspec import SpecError, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]
BASE: dict[str, Any] = {"name": "t", "hypervisors": [{"name": "hv1"}, {"name": "hv2"}]}


def _spec(**extra: Any) -> Any:
    return parse_spec({**BASE, **extra}, "ha-test.yaml")


def _problems(**extra: Any) -> list[str]:
    with pytest.raises(SpecError) as err:
        _spec(**extra)
    return err.value.problems


@pytest.mark.parametrize(("extra", "controllers", "nb_members", "names"), [
    ({}, 1, 0, []),                                        # as before: embedded db
    ({"controllers": 1}, 1, 0, []),
    ({"nb_members": 0}, 1, 0, []),                         # said explicitly
    ({"nb_members": 1}, 1, 1, ["c1"]),                     # one controller, shared nb
    ({"nb_members": 3}, 1, 3, ["c1"]),
    ({"controllers": 2}, 2, 1, ["c1", "c2"]),              # several: nb_members 1 default
    ({"controllers": 2, "nb_members": 3}, 2, 3, ["c1", "c2"]),
    ({"controllers": 5, "nb_members": 5}, 5, 5, ["c1", "c2", "c3", "c4", "c5"]),
])
def test_accepted(extra: dict[str, Any], controllers: int, nb_members: int,
                  names: list[str]) -> None:
    spec = _spec(**extra)
    assert (spec.controllers, spec.nb_members) == (controllers, nb_members)
    assert spec.shared_nb is (nb_members > 0)
    assert spec.instance_names() == names


@pytest.mark.parametrize(("extra", "message"), [
    ({"nb_members": 2}, "nb_members: 2: a raft cluster needs an odd number of members "
                        "(1, 3 or 5); 2 members survive 0 failure(s), no more than 1 do"),
    ({"nb_members": 4}, "nb_members: 4: a raft cluster needs an odd number of members "
                        "(1, 3 or 5); 4 members survive 1 failure(s), no more than 3 do"),
    ({"nb_members": 7}, "nb_members: 7 is not 1, 3 or 5 (0: the controller's embedded "
                        "database)"),
    ({"nb_members": -1}, "nb_members: -1 is not 1, 3 or 5"),
    ({"nb_members": "three"}, "nb_members: 'three' is not a number of northbound members "
                              "(1, 3 or 5)"),
    ({"nb_members": True}, "nb_members: True is not a number of northbound members"),
    ({"controllers": 2, "nb_members": 0},
     "nb_members: 0 (each controller its own embedded database) cannot serve 2 "
     "controllers: they must share one northbound (1, 3 or 5 members)"),
    ({"controllers": 0}, "controllers: 0 is not a number of controller instances (1-5)"),
    ({"controllers": 6}, "controllers: 6 is not a number of controller instances (1-5)"),
    ({"controllers": "2"}, "controllers: '2' is not a number of controller instances"),
    ({"controllers": False}, "controllers: False is not a number of controller instances"),
    ({"controllers": 3, "controller": {"rest_port": 65534}},
     "controller.rest_port: 3 controllers take ports 65534-65536, past 65535"),
    ({"controllers": 2, "controller": {"of_port": 65535}},
     "controller.of_port: 2 controllers take ports 65535-65536, past 65535"),
])
def test_refused_with_a_clear_message(extra: dict[str, Any], message: str) -> None:
    problems = _problems(**extra)
    assert any(message in p for p in problems), problems


def test_every_problem_at_once_with_the_others() -> None:
    problems = _problems(controllers=9, nb_members=2,
                         hypervisors=[{"name": "hv1"}, {"name": "hv1"}])
    text = "\n".join(problems)
    for expected in ("controllers: 9 is not", "nb_members: 2: a raft cluster",
                     "hypervisors[1].name: name 'hv1' already used"):
        assert expected in text, text


def test_ports_of_several_controllers_stay_in_range() -> None:
    spec = _spec(controllers=3, controller={"rest_port": 9696, "of_port": 6653})
    assert (spec.controller.rest_port, spec.controller.of_port) == (9696, 6653)
    spec = _spec(controllers=2, controller={"rest_port": 65534})  # 65534, 65535
    assert spec.controller.rest_port == 65534


def test_unknown_top_level_key_still_refused() -> None:
    with pytest.raises(SpecError, match=re.escape("spec: unknown key 'controller_count'")):
        _spec(controller_count=2)


def test_shipped_ha_spec() -> None:
    spec = load_spec(ROOT / "topologies" / "specs" / "ha.yaml")
    assert spec.name == "ha"
    assert (spec.controllers, spec.nb_members, spec.instance_names()) == (2, 3, ["c1", "c2"])
    assert 2 <= len(spec.hypervisors) <= 3
    assert len(spec.projects) == 2
    hosts = {g.spec.hypervisor for g in spec.guests()}
    assert len(hosts) == len(spec.hypervisors)  # every hypervisor has a guest
    for p in spec.projects:  # a network with guests on two hypervisors at least
        assert any(len({g.hypervisor for g in n.guests}) >= 2 for n in p.networks)


def test_shipped_specs_without_ha_keys_are_unchanged() -> None:
    for name in ("demo.yaml", "small.yaml"):
        spec = load_spec(ROOT / "topologies" / "specs" / name)
        assert (spec.controllers, spec.nb_members, spec.shared_nb) == (1, 0, False)
