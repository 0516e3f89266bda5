"""Input that reaches the store must be input the store accepts (issue 9, item 1).

Each defect found in the REST edge has its own test here, written against a real
ovsdb-server (api_harness): the user sees 4xx with Neutron's error body, the
database is byte-for-byte unchanged (`Env.rejected`), and the controller's session
to the database was never dropped (`session`).

What ovsdb-server 3.1 was found to refuse (raw JSON-RPC probes, see the report in
validate.py's docstring): U+0000 in any form and a lone high surrogate escape close
the client's connection (JSON parse error); a lone low surrogate fails the
transaction (not valid UTF-8). Noncharacters, C0/C1 controls and U+2028/9 are
carried and read back intact, so they are accepted.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from api_harness import Env, start_env
from webob import Request

from controller.rest import ipam, limits, validate
from controller.rest.errors import InvalidInput
from controller.runtime import Detached
from controller.store import NorthboundStore

Body = Callable[[dict[str, str], str], Any]


class WaitRecorder(Detached):
    """A runtime that records `?wait=true` waits and says every change is installed."""

    def __init__(self) -> None:
        self.waits: list[tuple[int, float]] = []

    def wait_installed(self, generation: int, timeout: float) -> bool:
        self.waits.append((generation, timeout))
        return True


@pytest.fixture(scope="module")
def runtime() -> WaitRecorder:
    return WaitRecorder()


@pytest.fixture(scope="module")
def seeded(
    tmp_path_factory: pytest.TempPathFactory, runtime: WaitRecorder
) -> Iterator[tuple[Env, dict[str, str]]]:
    env = start_env(tmp_path_factory.mktemp("hardening") / "state", runtime=runtime)
    net = env.network(name="seed")
    v4 = env.subnet(net["id"], "10.0.0.0/24")
    v6 = env.subnet(net["id"], "2001:db8::/64")
    port = env.port(net["id"], fixed_ips=[{"ip_address": "2001:db8::5"}])
    sg = env.ok("POST", "/v2.0/security-groups", {"security_group": {"name": "sg"}}, 201)
    qos = env.ok("POST", "/v2.0/qos/policies", {"policy": {"name": "q"}}, 201)
    ids = {
        "net": net["id"],
        "v4": v4["id"],
        "v6": v6["id"],
        "port": port["id"],
        "sg": sg["security_group"]["id"],
        "qos": qos["policy"]["id"],
    }
    yield env, ids
    env.close()


def session(env: Env) -> tuple[int, int]:
    """(connection losses, session sequence number) of the controller's store connection.

    The seqno is python-ovs's count of session state changes: a connection that is
    dropped and re-established inside one IDL run moves it even when the
    `connection_losses` counter (which samples `connected` once per loop) misses it.
    """
    return env.store.health()["connection_losses"], env.store._idl._session.get_seqno()


def refused(
    env: Env,
    method: str,
    path: str,
    body: Any = None,
    *,
    status: int = 400,
    type: str = "InvalidInput",
    **kw: Any,
) -> dict[str, Any]:
    """`Env.rejected` (status, Neutron body, store byte-identical) plus an intact session."""
    before = session(env)
    error = env.rejected(method, path, body, status=status, type=type, **kw)
    assert session(env) == before, "the request dropped the store connection"
    return error


# -- 1. text the store cannot carry ----------------------------------------------------
UNCARRIABLE = ["\x00", "a\x00b", "a\ud800b", "\ud800", "\udfff", "\udc00\ud800"]

# (method, path, body) with the bad text in a value or a key, at various depths.
PLACES: dict[str, tuple[str, str, Body]] = {
    "sg-name": ("POST", "/v2.0/security-groups", lambda i, s: {"security_group": {"name": s}}),
    "sg-name-update": (
        "PUT",
        "/v2.0/security-groups/{sg}",
        lambda i, s: {"security_group": {"name": s}},
    ),
    "sg-rule-description": (
        "POST",
        "/v2.0/security-group-rules",
        lambda i, s: {
            "security_group_rule": {
                "security_group_id": i["sg"],
                "direction": "ingress",
                "description": s,
            }
        },
    ),
    "network-description": ("POST", "/v2.0/networks", lambda i, s: {"network": {"description": s}}),
    "networks-bulk": (
        "POST",
        "/v2.0/networks",
        lambda i, s: {"networks": [{"name": "ok"}, {"name": s}]},
    ),
    "subnet-name": (
        "POST",
        "/v2.0/subnets",
        lambda i, s: {"subnet": {"network_id": i["net"], "cidr": "10.9.0.0/24", "name": s}},
    ),
    "port-name": (
        "POST",
        "/v2.0/ports",
        lambda i, s: {"port": {"network_id": i["net"], "name": s}},
    ),
    "port-name-update": ("PUT", "/v2.0/ports/{port}", lambda i, s: {"port": {"name": s}}),
    "port-device-owner": (
        "POST",
        "/v2.0/ports",
        lambda i, s: {"port": {"network_id": i["net"], "device_owner": s}},
    ),
    "binding-profile-key-deep": (
        "POST",
        "/v2.0/ports",
        lambda i, s: {"port": {"network_id": i["net"], "binding:profile": {"a": [{s: 1}]}}},
    ),
    "binding-profile-value": (
        "PUT",
        "/v2.0/ports/{port}",
        lambda i, s: {"port": {"binding:profile": {"k": s}}},
    ),
    "qos-policy-name": ("POST", "/v2.0/qos/policies", lambda i, s: {"policy": {"name": s}}),
    "qos-policy-update": ("PUT", "/v2.0/qos/policies/{qos}", lambda i, s: {"policy": {"name": s}}),
    "unknown-attribute-key": ("POST", "/v2.0/networks", lambda i, s: {"network": {s: "x"}}),
    "envelope-key": ("POST", "/v2.0/networks", lambda i, s: {s: {"name": "x"}}),
    "chassis-name": ("POST", "/v1/chassis", lambda i, s: {"chassis": {"name": s}}),
}


@pytest.mark.parametrize("bad", UNCARRIABLE, ids=ascii)
@pytest.mark.parametrize("place", sorted(PLACES))
def test_uncarriable_text_is_400_and_never_reaches_the_store(
    seeded: tuple[Env, dict[str, str]], place: str, bad: str
) -> None:
    env, ids = seeded
    method, path, body = PLACES[place]
    error = refused(env, method, path.format(**ids), body(ids, bad))
    assert "cannot be stored" in error["message"], error


def test_uncarriable_text_in_a_raw_body_is_400(seeded: tuple[Env, dict[str, str]]) -> None:
    """The same check holds however the client escapes its JSON."""
    env, _ = seeded
    for raw in (b'{"network": {"name": "a\\u0000"}}', b'{"network": {"name": "\\udfff"}}'):
        refused(env, "POST", "/v2.0/networks", raw=raw)


@pytest.mark.parametrize(
    "text",
    ["\uffff", "\ufffe", "\ufdd0", "\x01\x1f\x7f\x85", "\u2028\u2029", "\ufeff", "\U0001f600"],
    ids=ascii,
)
def test_text_the_store_carries_is_accepted_and_reads_back_intact(
    seeded: tuple[Env, dict[str, str]], text: str
) -> None:
    env, _ = seeded
    before = session(env)
    sg = env.ok("POST", "/v2.0/security-groups", {"security_group": {"name": text}}, 201)
    sg_id = sg["security_group"]["id"]
    assert sg["security_group"]["name"] == text
    other = NorthboundStore(env.db.remote).connect(10)  # what the server itself holds
    try:
        assert other.latest().security_groups[sg_id].name == text
    finally:
        other.close()
    assert env.ok("GET", f"/v2.0/security-groups/{sg_id}")["security_group"]["name"] == text
    env.ok("DELETE", f"/v2.0/security-groups/{sg_id}", status=204)
    assert session(env) == before


@pytest.mark.parametrize(
    "query",
    [
        "name=%00",
        "name=%ff",
        "name=%ed%a0%80",  # a surrogate, UTF-8 encoded: not valid UTF-8
        "na%ffme=x",
        "fields=%ff&limit=1",
        "sort_key=%00",
    ],
)
def test_query_strings_are_checked_at_the_edge(
    seeded: tuple[Env, dict[str, str]], query: str
) -> None:
    env, _ = seeded
    refused(env, "GET", f"/v2.0/networks?{query}")


def test_an_undecodable_path_is_400_not_500(seeded: tuple[Env, dict[str, str]]) -> None:
    env, _ = seeded
    refused(env, "GET", "/v2.0/networks/%ff")


# -- 2. depth -------------------------------------------------------------------------
def test_deep_nesting_within_the_size_limit_is_400(seeded: tuple[Env, dict[str, str]]) -> None:
    env, _ = seeded
    for raw in (b"[" * 50_000 + b"]" * 50_000, b'{"":' * 20_000 + b"1" + b"}" * 20_000):
        assert len(raw) <= limits.MAX_BODY_BYTES
        error = refused(env, "POST", "/v2.0/networks", raw=raw)
        assert str(limits.MAX_JSON_DEPTH) in error["message"]


def test_100k_levels_is_refused_not_500(seeded: tuple[Env, dict[str, str]]) -> None:
    """100k levels cannot fit in the body limit (2 bytes a level): 413 by size, 400 by depth."""
    env, _ = seeded
    raw = b"[" * 100_000 + b"]" * 100_000
    refused(env, "POST", "/v2.0/networks", raw=raw, status=413, type="RequestEntityTooLarge")
    with pytest.raises(InvalidInput, match="deeper than"):
        validate.check_json_depth(raw.decode())
    validate.check_json_depth("[" * limits.MAX_JSON_DEPTH + "]" * limits.MAX_JSON_DEPTH)


def _profile_nested(total_depth: int) -> dict[str, Any]:
    """A port body whose deepest container is `total_depth` levels down (envelope = 1)."""
    inner: Any = {}
    for _ in range(total_depth - 3):  # envelope, port, binding:profile are three
        inner = {"k": inner}
    return {"port": {"binding:profile": inner}}


def test_nesting_up_to_the_limit_is_accepted(seeded: tuple[Env, dict[str, str]]) -> None:
    env, ids = seeded
    at_limit = _profile_nested(limits.MAX_JSON_DEPTH)
    env.ok("PUT", f"/v2.0/ports/{ids['port']}", at_limit)
    refused(env, "PUT", f"/v2.0/ports/{ids['port']}", _profile_nested(limits.MAX_JSON_DEPTH + 1))
    env.ok("PUT", f"/v2.0/ports/{ids['port']}", {"port": {"binding:profile": {}}})


def test_brackets_inside_strings_do_not_count_as_depth(seeded: tuple[Env, dict[str, str]]) -> None:
    env, ids = seeded
    text = '[{"\\"' * 50
    port = env.ok("PUT", f"/v2.0/ports/{ids['port']}", {"port": {"binding:profile": {"x": text}}})
    assert port["port"]["binding:profile"] == {"x": text}
    env.ok("PUT", f"/v2.0/ports/{ids['port']}", {"port": {"binding:profile": {}}})


# -- 3. body size ---------------------------------------------------------------------
class Unreadable:
    """A wsgi.input that fails the test if the app reads it."""

    def read(self, *args: Any) -> bytes:
        raise AssertionError("the app read a body it should have refused by its length")

    readline = readlines = read


def test_an_oversized_body_is_413_before_it_is_read(seeded: tuple[Env, dict[str, str]]) -> None:
    env, _ = seeded
    before, generation = env.dump(), env.store.latest().generation
    req = Request.blank("/v2.0/networks", method="POST", content_type="application/json")
    req.environ["wsgi.input"] = Unreadable()
    req.environ["CONTENT_LENGTH"] = str(limits.MAX_BODY_BYTES + 1)
    resp = req.get_response(env.app)
    assert resp.status_int == 413, resp.text
    error = resp.json["NeutronError"]
    assert set(error) == {"type", "message", "detail"}
    assert error["type"] == "RequestEntityTooLarge"
    assert env.dump() == before and env.store.latest().generation == generation


def test_body_size_limit_is_neutrons_and_inclusive(seeded: tuple[Env, dict[str, str]]) -> None:
    env, _ = seeded
    assert limits.MAX_BODY_BYTES == 114_688
    body = json.dumps({"network": {"name": "exactly-at-the-limit"}}).encode()
    at_limit = body + b" " * (limits.MAX_BODY_BYTES - len(body))
    resp = env.call("POST", "/v2.0/networks", raw=at_limit)
    assert resp.status_int == 201, resp.text
    env.ok("DELETE", f"/v2.0/networks/{resp.json['network']['id']}", status=204)
    refused(
        env, "POST", "/v2.0/networks", raw=at_limit + b" ", status=413, type="RequestEntityTooLarge"
    )


def test_a_malformed_content_length_is_400(seeded: tuple[Env, dict[str, str]]) -> None:
    env, _ = seeded
    req = Request.blank("/v2.0/networks", method="POST", content_type="application/json")
    req.environ["wsgi.input"] = Unreadable()
    req.environ["CONTENT_LENGTH"] = "-5"
    resp = req.get_response(env.app)
    assert resp.status_int == 400 and resp.json["NeutronError"]["type"] == "HTTPBadRequest"


# -- 4. wait_timeout --------------------------------------------------------------------
BAD_TIMEOUTS = [
    "-1",
    "0",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "Infinity",
    "1e400",
    "abc",
    "",
    "301",
    "0x10",
    "1_0",
]


@pytest.mark.parametrize("raw", BAD_TIMEOUTS)
def test_bad_wait_timeout_is_400_and_writes_nothing(
    seeded: tuple[Env, dict[str, str]], runtime: WaitRecorder, raw: str
) -> None:
    env, _ = seeded
    waits = len(runtime.waits)
    refused(env, "POST", f"/v2.0/networks?wait=true&wait_timeout={raw}", {"network": {"name": "w"}})
    refused(
        env,
        "POST",
        "/v2.0/networks",
        {"network": {"name": "w"}},
        headers={"X-Loom-Wait": "true", "X-Loom-Wait-Timeout": raw},
    )
    assert len(runtime.waits) == waits


@pytest.mark.parametrize("raw,expected", [("0.5", 0.5), ("300", 300.0), ("7", 7.0)])
def test_valid_wait_timeout_is_used(
    seeded: tuple[Env, dict[str, str]], runtime: WaitRecorder, raw: str, expected: float
) -> None:
    env, _ = seeded
    resp = env.call(
        "POST",
        "/v2.0/networks",
        {"network": {"name": "w"}},
        headers={"X-Loom-Wait": "true", "X-Loom-Wait-Timeout": raw},
    )
    assert resp.status_int == 201, resp.text
    assert runtime.waits[-1] == (int(resp.headers["X-Loom-Generation"]), expected)
    env.ok("DELETE", f"/v2.0/networks/{resp.json['network']['id']}", status=204)


# -- 5. non-finite numbers ------------------------------------------------------------
@pytest.mark.parametrize(
    "raw",
    [
        b'{"port": {"binding:profile": {"x": NaN}}}',
        b'{"port": {"binding:profile": {"x": [1, Infinity]}}}',
        b'{"port": {"binding:profile": {"x": -Infinity}}}',
        b'{"port": {"binding:profile": {"x": 1e999}}}',  # Python parses this as inf
        b'{"port": {"name": NaN}}',
    ],
)
def test_non_finite_numbers_are_400(seeded: tuple[Env, dict[str, str]], raw: bytes) -> None:
    env, ids = seeded
    refused(env, "PUT", f"/v2.0/ports/{ids['port']}", raw=raw)
    resp = env.call("GET", "/v2.0/ports")
    assert resp.status_int == 200
    json.loads(resp.text, parse_constant=lambda c: pytest.fail(f"{c} in a response"))


# -- 6. IPv6 zone suffixes ----------------------------------------------------------------
def fill(value: Any, **names: str) -> Any:
    """`value` with every string formatted with `names` (ids and the zone)."""
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, dict):
        return {k: fill(v, **names) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, **names) for v in value]
    return value


ROUTE = {"destination": "2001:db8:9::/64", "nexthop": "2001:db8::1"}
ZONED: dict[str, tuple[str, str, Any]] = {
    "fixed-ip-duplicate": (
        "POST",
        "/v2.0/ports",
        {"port": {"network_id": "{net}", "fixed_ips": [{"ip_address": "2001:db8::5{z}"}]}},
    ),
    "fixed-ip-update": (
        "PUT",
        "/v2.0/ports/{port}",
        {"port": {"fixed_ips": [{"ip_address": "2001:db8::9{z}"}]}},
    ),
    "cidr": (
        "POST",
        "/v2.0/subnets",
        {"subnet": {"network_id": "{net}", "cidr": "2001:db8:1::{z}/64"}},
    ),
    "gateway": ("PUT", "/v2.0/subnets/{v6}", {"subnet": {"gateway_ip": "2001:db8::1{z}"}}),
    "dns": ("PUT", "/v2.0/subnets/{v6}", {"subnet": {"dns_nameservers": ["2001:db8::53{z}"]}}),
    "route-destination": (
        "PUT",
        "/v2.0/subnets/{v6}",
        {"subnet": {"host_routes": [{**ROUTE, "destination": "2001:db8:9::{z}/64"}]}},
    ),
    "route-nexthop": (
        "PUT",
        "/v2.0/subnets/{v6}",
        {"subnet": {"host_routes": [{**ROUTE, "nexthop": "2001:db8::1{z}"}]}},
    ),
    "pool": (
        "PUT",
        "/v2.0/subnets/{v6}",
        {"subnet": {"allocation_pools": [{"start": "2001:db8::100{z}", "end": "2001:db8::200"}]}},
    ),
}


@pytest.mark.parametrize("zone", ["%eth0", "%1", "%"])
@pytest.mark.parametrize("place", sorted(ZONED))
def test_ipv6_zone_suffixes_are_refused(
    seeded: tuple[Env, dict[str, str]], place: str, zone: str
) -> None:
    env, ids = seeded
    method, path, body = ZONED[place]
    refused(env, method, path.format(**ids), fill(body, z=zone, **ids))


@pytest.mark.parametrize(
    "convert,text",
    [
        (validate.ip_address, "fe80::1%eth0"),
        (validate.ip_address, "2001:db8::5%1"),
        (validate.cidr, "fe80::%eth0/64"),
        (validate.cidr, "2001:db8::%0/64"),
    ],
)
def test_validators_refuse_zones(convert: Callable[[Any], Any], text: str) -> None:
    with pytest.raises(InvalidInput):
        convert(text)
    with pytest.raises(InvalidInput):
        validate.parse_ip(text.split("/")[0])


# -- 7. default gateway in the subnet's family -------------------------------------------
@pytest.mark.parametrize(
    "cidr,gateway,pool_start",
    [
        ("::/64", "::1", "::2"),
        ("::/120", "::1", "::2"),
        ("2001:db8:7::/64", "2001:db8:7::1", "2001:db8:7::2"),
    ],
)
def test_ipv6_default_gateway_is_ipv6(
    seeded: tuple[Env, dict[str, str]], cidr: str, gateway: str, pool_start: str
) -> None:
    env, _ = seeded
    net = env.network(name=f"gw-{cidr}")
    subnet = env.subnet(net["id"], cidr)
    assert subnet["gateway_ip"] == gateway
    assert subnet["allocation_pools"][0]["start"] == pool_start
    assert env.store.latest().subnets[subnet["id"]].gateway_ip == gateway
    env.ok("DELETE", f"/v2.0/subnets/{subnet['id']}", status=204)
    env.ok("DELETE", f"/v2.0/networks/{net['id']}", status=204)


def test_default_gateway_is_pure_and_in_family() -> None:
    import ipaddress

    assert ipam.default_gateway(ipaddress.ip_network("::/64")) == "::1"
    assert ipam.default_gateway(ipaddress.ip_network("::100/120")) == "::101"
    assert ipam.default_gateway(ipaddress.ip_network("0.0.0.0/24")) == "0.0.0.1"
