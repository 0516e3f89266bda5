"""controller.explain: parsing real ofproto/trace output and explaining it in intent terms.

The fixtures in tests/unit/fixtures/ofproto_trace are real captures: the JSON ones
were written by tests/integration/test_trace.py (LOOM_TRACE_FIXTURES=DIR) from two
private OVS 3.1 instances under a running controller, each with the context the
controller had (which ofport is which port or tunnel, the owners of the cookies)
and the answer /v1/trace gave; no_match_table.txt is a trace through a table with
no flow at all, from a private OVS's br-phy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import pytest
from webob import Request

from controller import pipeline as pl
from controller.explain import TraceError, Tracer
from controller.explain.runner import (
    TraceUnavailable,
    TraceUnsupported,
    control_socket,
    ofproto_trace_argv,
)
from controller.explain.trace import (
    Endpoint,
    Hop,
    HopContext,
    Packet,
    TraceParseError,
    decisions_of,
    judge,
    owner_of,
    parse_trace,
    priority_name,
    trace_flow,
)
from controller.intent import (
    FixedIP,
    Intent,
    Network,
    Port,
    SecurityGroupRule,
    Subnet,
    object_key,
)
from controller.rest.app import LoomApi
from controller.rest.auth import Principal, TokenAuth
from controller.runtime import Detached
from controller.topology import BridgeState, ChassisState, InterfaceState, Topology

FIXTURES = Path(__file__).parent / "fixtures" / "ofproto_trace"
SCENARIOS = sorted(p.stem for p in FIXTURES.glob("*.json"))


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def owners_of(fx: Mapping[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(o["kind"], object_key(o["id"])): o for o in fx["owners"]}


def context(hop: Mapping[str, Any]) -> HopContext:
    return HopContext(
        chassis=hop["chassis"], bridge=hop["bridge"], datapath_id=int(hop["datapath_id"], 16),
        ports={int(k): v for k, v in hop["context"]["ports"].items()},
        tunnels={int(k): (v[0], v[1]) for k, v in hop["context"]["tunnels"].items()})


def hops_of(fx: Mapping[str, Any]) -> list[Hop]:
    owners = owners_of(fx)
    out = []
    for h in fx["hops"]:
        parsed = parse_trace(h["ofproto_trace"])
        ctx = context(h)
        out.append(Hop(ctx, h["flow"], h["in_port"]["ofport"], h["tun_id"], parsed,
                       decisions_of(parsed, ctx, owners), h["ofproto_trace"]))
    return out


def endpoint(d: Optional[Mapping[str, Any]]) -> Optional[Endpoint]:
    if d is None:
        return None
    return Endpoint(d["port"], d["network"], d["chassis"], d["ofport"])


# ---------------------------------------------------------------- every capture
@pytest.mark.parametrize("name", SCENARIOS)
def test_capture_gives_the_recorded_verdict_and_reason(name: str) -> None:
    fx = load(name)
    src = endpoint(fx["source"])
    assert src is not None
    verdict, reason = judge(hops_of(fx), src, endpoint(fx["destination"]))
    assert (verdict, reason) == (fx["expected"]["verdict"], fx["expected"]["reason"])


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_cookie_of_the_integration_bridge_has_an_owner(name: str) -> None:
    fx = load(name)
    owners = owners_of(fx)
    for hop in hops_of(fx):
        for e in hop.parsed.entries:
            if e.bridge != "br-int":
                continue
            assert e.cookie is not None and e.priority is not None
            owner = owner_of(e.cookie, owners)
            assert owner is not None and owner["kind"] != "unknown", e
            assert owner["kind"] == "pipeline" or owner["id"], (e, owner)
            assert pl.TABLE_NAMES[e.table]


# ---------------------------------------------------------------- parsing in detail
def test_cross_chassis_parse() -> None:
    fx = load("cross_chassis_tcp_8080_allowed")
    first, second = hops_of(fx)
    # hv1: classify .. egress ACL (conntrack, then the rule) .. l2_lookup -> tunnel
    assert [p.ct_state for p in first.parsed.passes] == [None, "new|trk"]
    assert not any(p.ct_defaulted for p in first.parsed.passes)
    tables = [(e.bridge, e.table, e.priority) for e in first.parsed.entries]
    assert tables == [("br-int", 0, 100), ("br-int", 10, 100), ("br-int", 20, 0),
                      ("br-int", 30, 200), ("br-int", 30, 100), ("br-int", 40, 0),
                      ("br-int", 50, 100), ("br-phy", 0, 0)]
    [out] = first.parsed.outputs
    assert out.ofport == 1 and out.tunnel and out.tun_id == second.tun_id == 1
    assert first.tunnel_outputs() == [out] and first.deliveries() == []
    assert "tnl_push" in first.parsed.datapath_actions[-1]
    phy = first.parsed.entries[-1]
    assert phy.actions == ["NORMAL"] and phy.cookie is None and phy.depth == 0
    assert priority_name("l2_lookup", 100, first.parsed.entries[6]) == "remote_mac"
    # hv2: from the tunnel straight to l2_lookup, ingress ACL, delivered to s2
    assert second.parsed.passes[0].flow["tun_id"] == "0x1"
    assert second.parsed.entries[0].match == "tun_id=0x1,in_port=1"
    assert priority_name("classify", 100, second.parsed.entries[0]) == "tunnel"
    assert priority_name("l2_lookup", 100, second.parsed.entries[1]) == "known_mac"
    ingress = [e for e in second.parsed.entries if e.table == 60]
    assert [e.reg7 for e in ingress] == [2, 2]
    assert second.deliveries() == [(2, fx["destination"]["port"])]
    [rule] = [d for d in second.decisions if d.kind == "security_group_rule"]
    assert rule.allow and rule.direction == "ingress" and rule.chassis == "hv2"
    assert rule.owner is not None and rule.owner["id"] == fx["expected"]["reason"]["id"]
    assert rule.owner["port_range_min"] == 8080


def test_flood_parse_follows_resubmits_groups_and_registers() -> None:
    fx = load("isolation_flood_other_project")
    first = hops_of(fx)[0]
    flood = [e for e in first.parsed.entries if e.table == 50][0]
    assert flood.priority == 10 and "resubmit(,60)" in flood.actions
    nested = [e for e in first.parsed.entries if e.depth == 1]
    assert [(e.table, e.reg7) for e in nested] == [(60, 2), (60, 3)]
    # the copy back to the sender is skipped; the group's bucket tunnels to hv2
    outs = {o.ofport: o for o in first.parsed.outputs}
    assert outs[2].skipped and outs[1].tunnel and outs[1].tun_id == 1
    assert first.deliveries() == [(3, first.ctx.ports[3])]
    # OVS ran out of --ct-next flags in neither pass
    assert len(first.parsed.passes) == 4 and not any(p.ct_defaulted for p in first.parsed.passes)


def test_default_deny_parse() -> None:
    fx = load("same_chassis_tcp_8081_default_deny")
    [hop] = hops_of(fx)
    last = hop.parsed.entries[-1]
    assert (last.table, last.priority, last.actions) == (60, 10, ["drop"])
    assert hop.parsed.datapath_actions[-1] == "drop"
    deny = [d for d in hop.decisions if not d.allow]
    assert [(d.kind, d.direction, d.port_id) for d in deny] == [
        ("default_deny", "ingress", fx["destination"]["port"])]


def test_no_match_table() -> None:
    parsed = parse_trace((FIXTURES / "no_match_table.txt").read_text())
    [p] = parsed.passes
    assert [(e.bridge, e.table, e.priority, e.cookie) for e in p.entries] == [
        ("br-phy", 0, 5, 0x77), ("br-phy", 5, None, None)]
    assert p.entries[1].actions == ["drop"] and p.datapath_actions == "drop"


def test_garbage_is_refused() -> None:
    with pytest.raises(TraceParseError):
        parse_trace("ovs-appctl: cannot connect to ...\n")


# ---------------------------------------------------------------- small pure parts
def _packet(protocol: str, v6: bool = False, **kw: Any) -> Packet:
    ips = ("fd00::1", "fd00::2") if v6 else ("10.0.0.1", "10.0.0.2")
    return Packet(protocol, "fa:16:3e:00:00:01", "fa:16:3e:00:00:02", *ips, **kw)


def test_trace_flow_strings() -> None:
    assert trace_flow(_packet("tcp", src_port=33000, dst_port=8080), 2) == (
        "in_port=2,tcp,dl_src=fa:16:3e:00:00:01,dl_dst=fa:16:3e:00:00:02,nw_src=10.0.0.1,"
        "nw_dst=10.0.0.2,nw_ttl=64,tcp_src=33000,tcp_dst=8080,tcp_flags=0x002")
    assert trace_flow(_packet("udp", v6=True, src_port=5, dst_port=53), 7, tun_id=100) == (
        "in_port=7,tun_id=0x64,udp6,dl_src=fa:16:3e:00:00:01,dl_dst=fa:16:3e:00:00:02,"
        "ipv6_src=fd00::1,ipv6_dst=fd00::2,nw_ttl=64,udp_src=5,udp_dst=53")
    assert trace_flow(_packet("icmp"), 1).endswith("icmp_type=8,icmp_code=0")
    assert trace_flow(_packet("icmpv6", v6=True), 1).endswith("icmpv6_type=128,icmpv6_code=0")
    for name in SCENARIOS:  # what the tracer built is what OVS was asked
        fx = load(name)
        pk = fx["packet"]
        packet = Packet(pk["protocol"], pk["src_mac"], pk["dst_mac"], pk["src_ip"], pk["dst_ip"],
                        pk.get("src_port"), pk.get("dst_port"))
        hop = fx["hops"][0]
        assert trace_flow(packet, hop["in_port"]["ofport"], hop["tun_id"]) == hop["flow"]


def test_owner_of() -> None:
    assert owner_of(None, {}) is None
    assert owner_of(pl.cookie(pl.Owner.PIPELINE, 0xAC1), {})["kind"] == "pipeline"  # type: ignore[index]
    miss = owner_of(pl.cookie(pl.Owner.PIPELINE, pl.TABLE_IDS["l3"]), {})
    assert miss is not None and miss["what"] == "miss of table l3"
    assert owner_of(0x77, {}) == {"kind": "unknown", "id": None}
    pid = "d3f3f61f-c446-4b78-8bb3-91dfcdd3aea1"
    stale = owner_of(pl.cookie(pl.Owner.PORT, object_key(pid)), {})
    assert stale == {"kind": "port", "id": None, "stale": True}
    found = owner_of(pl.cookie(pl.Owner.PORT, object_key(pid)),
                     {("port", object_key(pid)): {"kind": "port", "id": pid}})
    assert found == {"kind": "port", "id": pid}


def test_priority_names() -> None:
    assert priority_name("ingress_acl", 10) == "default_deny"
    assert priority_name("egress_acl", 90) == "rule_conj"
    assert priority_name("output", 0) == "miss"
    assert priority_name("classify", 100) == "fabric|port|tunnel|vlan"


def test_judge_without_destination_or_hops() -> None:
    src = Endpoint("p", "n", "hv1", 2)
    assert judge([], src, None) == ("dropped", {"kind": "unknown_destination"})
    reason = {"kind": "no_route", "ip": "192.0.2.1"}
    assert judge([], src, None, reason) == ("dropped", reason)


# ---------------------------------------------------------------- the runner
def test_control_socket(tmp_path: Path) -> None:
    db = f"unix:{tmp_path}/db.sock"
    with pytest.raises(TraceUnavailable):
        control_socket(db)
    (tmp_path / "ovs-vswitchd.ctl").touch()
    assert control_socket(db) == tmp_path / "ovs-vswitchd.ctl"
    (tmp_path / "ovs-vswitchd.pid").write_text("4242\n")
    (tmp_path / "ovs-vswitchd.4242.ctl").touch()
    assert control_socket(db) == tmp_path / "ovs-vswitchd.4242.ctl"
    for remote in ("tcp:192.0.2.1:6640", "ssl:192.0.2.1:6640"):
        with pytest.raises(TraceUnsupported):
            control_socket(remote)


def test_argv_models_conntrack() -> None:
    argv = ofproto_trace_argv(Path("/run/x.ctl"), "br-int", "in_port=1", "trk,new")
    assert argv[1:5] == ["-t", "/run/x.ctl", "--timeout=5", "ofproto/trace"]
    assert argv[5:7] == ["br-int", "in_port=1"]
    assert argv[7:9] == ["--ct-next", "trk,new"] and argv.count("--ct-next") >= 2


# ---------------------------------------------------------------- the tracer, end to end
class FakeStore:
    def __init__(self, intent: Intent) -> None:
        self.intent = intent

    def latest(self) -> Intent:
        return self.intent


class FakeRunner:
    """Answers with the captured output of the chassis whose socket is asked."""

    def __init__(self, fx: Mapping[str, Any]) -> None:
        self.hops = {h["chassis"]: h for h in fx["hops"]}
        self.asked: list[tuple[str, str, str, Optional[str]]] = []

    def socket_for(self, remote: str) -> Path:
        return control_socket(remote) if not remote.startswith("unix:") else \
            Path(remote[len("unix:"):])

    def trace(self, socket: Path, bridge: str, flow: str, ct_next: Optional[str]) -> str:
        chassis = socket.parent.name
        self.asked.append((chassis, bridge, flow, ct_next))
        hop = self.hops[chassis]
        assert flow == hop["flow"]
        return hop["ofproto_trace"]


def world(fx: Mapping[str, Any], remote: str = "unix:/run/{chassis}/db.sock"
          ) -> tuple[Intent, Topology]:
    """The intent and topology the capture was made under, rebuilt from the fixture."""
    pk, src, dst = fx["packet"], fx["source"], fx["destination"]
    seg = next((h["tun_id"] for h in fx["hops"] if h["tun_id"] is not None), 1)
    net = Network(src["network"], "p1", "net", "vxlan", seg)
    sub = Subnet("5a1e7c2d-0000-4000-8000-000000000001", "p1", net.id, "", 4, "10.0.0.0/24",
                 None)
    ports = {src["port"]: Port(src["port"], "p1", net.id, "src", pk["src_mac"],
                               (FixedIP(sub.id, pk["src_ip"]),))}
    networks = {net.id: net}
    if dst is not None:
        if dst["network"] not in networks:
            networks[dst["network"]] = Network(dst["network"], "p2", "other", "vxlan", seg + 1)
        ports[dst["port"]] = Port(dst["port"], "p1", dst["network"], "dst", pk["dst_mac"],
                                  (FixedIP(sub.id, pk["dst_ip"]),))
    rules = {o["id"]: SecurityGroupRule(o["id"], "p1", o["security_group_id"], o["direction"],
                                        o["ethertype"], o["protocol"], o["port_range_min"],
                                        o["port_range_max"], o["remote_ip_prefix"],
                                        o["remote_group_id"])
             for o in fx["owners"] if o["kind"] == "security_group_rule"}
    intent = Intent(generation=7, networks=networks, subnets={sub.id: sub}, ports=ports,
                    security_group_rules=rules)
    topo = Topology()
    for h in fx["hops"]:
        ifaces = [InterfaceState(f"p{k}", int(k), v) for k, v in h["context"]["ports"].items()]
        ifaces += [InterfaceState(f"t{k}", int(k), None, type=t, remote_chassis=r)
                   for k, (r, t) in h["context"]["tunnels"].items()]
        topo.update_chassis(ChassisState(
            h["chassis"], remote.format(chassis=h["chassis"]), True, None,
            (BridgeState("br-int", int(h["datapath_id"], 16), tuple(ifaces)),)))
    return intent, topo


def test_tracer_follows_the_tunnel_and_names_the_rule() -> None:
    fx = load("cross_chassis_tcp_8080_allowed")
    intent, topo = world(fx)
    runner = FakeRunner(fx)
    answer = Tracer(FakeStore(intent), topo, runner).trace_query(  # type: ignore[arg-type]
        {"port": fx["source"]["port"], "dst_ip": "10.0.0.13", "protocol": "tcp",
         "dst_port": "8080"})
    assert [a[0] for a in runner.asked] == ["hv1", "hv2"]
    assert all(a[1] == "br-int" and a[3] == "trk,new" for a in runner.asked)
    assert answer["verdict"] == "allowed"
    assert answer["reason"] == fx["expected"]["reason"]
    assert answer["conntrack"]["assumed"] == "trk,new"
    assert answer["intent_generation"] == 7
    first, second = answer["hops"]
    assert (first["chassis"], second["chassis"]) == ("hv1", "hv2")
    assert second["in_port"] == {"ofport": 1, "kind": "tunnel", "remote_chassis": "hv1",
                                 "tunnel_type": "vxlan"}
    assert "ofproto_trace" not in first
    rule = [t for t in second["tables"] if t["priority_name"] == "rule"]
    assert rule[0]["owner"]["id"] == fx["expected"]["reason"]["id"]
    assert rule[0]["table_name"] == "ingress_acl" and rule[0]["ct_state"] == "new|trk"
    assert [a["direction"] for a in answer["acl"]] == ["egress", "ingress"]


def test_tracer_refuses_tcp_chassis_with_501() -> None:
    fx = load("same_chassis_tcp_8080_allowed")
    intent, topo = world(fx, remote="tcp:192.0.2.10:6640")
    tracer = Tracer(FakeStore(intent), topo, FakeRunner(fx))  # type: ignore[arg-type]
    with pytest.raises(TraceError) as err:
        tracer.trace(fx["source"]["port"], "10.0.0.12", "tcp", dst_port=8080)
    assert err.value.status == 501 and err.value.type == "TraceNotSupported"
    assert "control socket" in err.value.detail


@pytest.mark.parametrize("query,status,fragment", [
    ({"port": "x", "dst_ip": "10.0.0.12"}, 404, "could not be found"),
    ({"dst_ip": "10.0.0.12"}, 400, "required"),
    ({"port": "SRC", "dst_ip": "10.0.0.256"}, 400, "not an IP address"),
    ({"port": "SRC", "dst_ip": "10.0.0.12", "protocol": "sctp"}, 400, "protocol"),
    ({"port": "SRC", "dst_ip": "10.0.0.12", "protocol": "udp"}, 400, "dst_port"),
    ({"port": "SRC", "dst_ip": "10.0.0.12", "dst_port": "80"}, 400, "no ports"),
    ({"port": "SRC", "dst_ip": "10.0.0.12", "protocol": "tcp", "dst_port": "0"}, 400, "1-65535"),
    ({"port": "SRC", "dst_ip": "10.0.0.12", "ct_state": "rel"}, 400, "ct_state"),
    ({"port": "SRC", "dst_ip": "10.0.0.12", "verbose": "1"}, 400, "unknown query"),
])
def test_tracer_input_errors(query: dict[str, str], status: int, fragment: str) -> None:
    fx = load("same_chassis_tcp_8080_allowed")
    intent, topo = world(fx)
    tracer = Tracer(FakeStore(intent), topo, FakeRunner(fx))  # type: ignore[arg-type]
    params = {k: (fx["source"]["port"] if v == "SRC" else v) for k, v in query.items()}
    with pytest.raises(TraceError) as err:
        tracer.trace_query(params)
    assert err.value.status == status and fragment in err.value.message


def test_tracer_unknown_destination_and_no_route_need_no_switch() -> None:
    fx = load("same_chassis_tcp_8080_allowed")
    intent, topo = world(fx)
    runner = FakeRunner(fx)
    tracer = Tracer(FakeStore(intent), topo, runner)  # type: ignore[arg-type]
    unknown = tracer.trace(fx["source"]["port"], "10.0.0.77")
    assert (unknown["verdict"], unknown["reason"]["kind"]) == ("dropped", "unknown_destination")
    assert unknown["hops"] == [] and unknown["packet"]["protocol"] == "icmp"
    no_route = tracer.trace(fx["source"]["port"], "192.0.2.1")
    assert no_route["reason"]["kind"] == "no_route" and runner.asked == []


# ---------------------------------------------------------------- the REST hook
class StubTracer:
    def __init__(self, error: Optional[TraceError] = None) -> None:
        self.error = error
        self.params: list[Mapping[str, str]] = []

    def trace_query(self, params: Mapping[str, str]) -> dict[str, Any]:
        self.params.append(params)
        if self.error is not None:
            raise self.error
        return {"verdict": "allowed"}


def _get(app: LoomApi, path: str, token: str = "admin") -> tuple[int, Any]:
    req = Request.blank(path, headers={"X-Auth-Token": token})
    resp = req.get_response(app)
    return resp.status_int, json.loads(resp.body)


def _app(tracer: Optional[StubTracer] = None) -> LoomApi:
    auth = TokenAuth({"admin": Principal("ops", "admin"), "alice": Principal("alice")})
    return LoomApi(FakeStore(Intent()), Detached(), auth, tracer=tracer)  # type: ignore[arg-type]


def test_rest_without_tracer_is_501() -> None:
    status, body = _get(_app(), "/v1/trace?port=p&dst_ip=10.0.0.1")
    assert status == 501 and body["NeutronError"]["type"] == "TraceNotSupported"


def test_rest_routes_to_the_tracer_for_admins_only() -> None:
    stub = StubTracer()
    app = _app()
    app.set_tracer(stub)
    status, body = _get(app, "/v1/trace?port=p&dst_ip=10.0.0.1&protocol=tcp&dst_port=80")
    assert (status, body) == (200, {"verdict": "allowed"})
    assert stub.params == [{"port": "p", "dst_ip": "10.0.0.1", "protocol": "tcp",
                            "dst_port": "80"}]
    status, _ = _get(app, "/v1/trace?port=p&dst_ip=10.0.0.1", token="alice")
    assert status == 404 and len(stub.params) == 1


def test_rest_maps_trace_errors() -> None:
    app = _app(StubTracer(TraceError("nope", 501, "TraceNotSupported", detail="why")))
    status, body = _get(app, "/v1/trace?port=p&dst_ip=10.0.0.1")
    assert status == 501
    assert body == {"NeutronError": {"type": "TraceNotSupported", "message": "nope",
                                     "detail": "why"}}
