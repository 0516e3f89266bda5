"""Stateful security groups with real TCP, UDP and ICMP between guests.

web: TCP 8080 from anywhere, SSH only from the admin range. db: TCP 3306 only from
members of web. Connections are judged by conntrack: replies pass, a removed rule
cuts the connections it allowed, unrelated changes leave them alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.integration.harness import SingleHost, single_host
from tests.integration.streams import Stream

pytestmark = pytest.mark.integration

PROJECT = "project-sg"
ADMIN_RANGE = "10.0.0.128/25"


@dataclass
class Env:
    host: SingleHost
    web: dict
    db: dict
    sg_web: dict
    sg_db: dict
    rules: dict[str, dict]


def _rule(api, sg: dict, **kw) -> dict:
    return api.create("security_group_rule", wait=True, security_group_id=sg["id"],
                      project_id=PROJECT, **kw)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with single_host(tmp_path_factory.mktemp("sg-state")) as host:
        api = host.api
        net = api.create("network", name="sg-net", project_id=PROJECT)
        v4 = api.create("subnet", network_id=net["id"], cidr="10.0.0.0/24", project_id=PROJECT)
        v6 = api.create("subnet", network_id=net["id"], cidr="fd00:5::/64", ip_version=6,
                        project_id=PROJECT)
        sg_web = api.create("security_group", name="web", project_id=PROJECT)
        sg_db = api.create("security_group", name="db", project_id=PROJECT)
        rules = {
            "web8080": _rule(api, sg_web, direction="ingress", protocol="tcp",
                             port_range_min=8080, port_range_max=8080),
            "ssh": _rule(api, sg_web, direction="ingress", protocol="tcp", port_range_min=22,
                         port_range_max=22, remote_ip_prefix=ADMIN_RANGE),
            "web8080v6": _rule(api, sg_web, direction="ingress", ethertype="IPv6",
                               protocol="tcp", port_range_min=8080, port_range_max=8080),
            "db3306": _rule(api, sg_db, direction="ingress", protocol="tcp",
                            port_range_min=3306, port_range_max=3306,
                            remote_group_id=sg_web["id"]),
        }

        def port(name: str, ip: str, groups: list[str], ip6: str | None = None) -> dict:
            fixed = [{"subnet_id": v4["id"], "ip_address": ip}]
            if ip6:
                fixed.append({"subnet_id": v6["id"], "ip_address": ip6})
            p = api.create("port", wait=True, network_id=net["id"], project_id=PROJECT,
                           name=name, fixed_ips=fixed, security_groups=groups)
            host.guest_for(name, p)
            return p

        web = port("web", "10.0.0.10", [sg_web["id"]], "fd00:5::10")
        db = port("db", "10.0.0.20", [sg_db["id"]])
        port("outsider", "10.0.0.30", [], "fd00:5::30")  # egress-only: no groups at all
        port("admin", "10.0.0.200", [sg_web["id"]])  # inside the admin range
        # the outsider has no group: its own port is closed both ways; give it one
        # that only allows egress, like a typical client
        client_sg = api.create("security_group", name="client", project_id=PROJECT)
        api.put(f"/v2.0/ports/{host.guests['outsider'].port_id}?wait=true",
                {"port": {"security_groups": [client_sg["id"]]}}).ok()
        yield Env(host, web, db, sg_web, sg_db, rules)


def test_web_is_open_on_8080_to_everyone(env: Env) -> None:
    g = env.host.guests
    lst = g["web"].tcp_listen(8080, keep=True)
    assert g["outsider"].tcp_connect("10.0.0.10", 8080, "hello-8080", listener=lst)
    assert g["db"].tcp_connect("10.0.0.10", 8080, "from-db", listener=lst)


def test_other_ports_and_protocols_are_denied(env: Env) -> None:
    g = env.host.guests
    lst = g["web"].tcp_listen(8081, keep=True)
    assert not g["outsider"].tcp_connect("10.0.0.10", 8081, "nope", timeout=2, listener=lst)
    # ICMP in is allowed by neither side's rules. (TCP replies to the outsider pass
    # although its group has no ingress rule at all: that is conntrack at work.)
    assert g["outsider"].ping("10.0.0.10", count=2, interval=0.2, timeout=1)[1] == 0
    assert g["web"].ping("10.0.0.30", count=2, interval=0.2, timeout=1)[1] == 0


def test_ssh_only_from_the_admin_range(env: Env) -> None:
    g = env.host.guests
    lst = g["web"].tcp_listen(22, keep=True)
    assert g["admin"].tcp_connect("10.0.0.10", 22, "admin-ssh", listener=lst)
    assert not g["outsider"].tcp_connect("10.0.0.10", 22, "intruder-ssh", timeout=2,
                                         listener=lst)


def test_database_only_from_web_members(env: Env) -> None:
    g = env.host.guests
    lst = g["db"].tcp_listen(3306, keep=True)
    assert g["web"].tcp_connect("10.0.0.20", 3306, "from-web", listener=lst)
    assert g["admin"].tcp_connect("10.0.0.20", 3306, "from-admin-web-member", listener=lst)
    assert not g["outsider"].tcp_connect("10.0.0.20", 3306, "from-outsider", timeout=2,
                                         listener=lst)


def test_a_dry_run_names_the_pairs_a_rule_removal_cuts_and_traffic_agrees(env: Env) -> None:
    """Issue 15's reachability diff, on a real switch: the plan of removing db's MySQL
    rule says which connections stop (simulated on the compiled tables), and real
    connections then do exactly that."""
    host, api = env.host, env.host.api
    g = host.guests
    rule_id = env.rules["db3306"]["id"]
    dry = api.delete(f"/v2.0/security-group-rules/{rule_id}?dry_run=true")
    assert dry.status == 200, dry.body
    reach = dry.body["plan"]["reachability"]
    texts = sorted(c["text"] for c in reach["changes"])
    assert texts == ["admin → db tcp/3306: allowed → denied",
                     "web → db tcp/3306: allowed → denied"], reach
    assert not reach["truncated"]
    for listener in list(g["db"]._listeners):  # free port 3306 from earlier tests
        listener.close()
    lst = g["db"].tcp_listen(3306, keep=True)
    assert g["web"].tcp_connect("10.0.0.20", 3306, "before", listener=lst)
    api.delete(f"/v2.0/security-group-rules/{rule_id}?wait=true")
    try:
        for name in ("web", "admin"):
            assert not g[name].tcp_connect("10.0.0.20", 3306, f"after-{name}", timeout=2,
                                           listener=lst), f"{name} still reaches db:3306"
    finally:
        env.rules["db3306"] = _rule(api, env.sg_db, direction="ingress", protocol="tcp",
                                    port_range_min=3306, port_range_max=3306,
                                    remote_group_id=env.sg_web["id"])
    assert g["web"].tcp_connect("10.0.0.20", 3306, "restored", listener=lst)


def test_udp_is_denied_without_a_rule_and_allowed_with_one(env: Env) -> None:
    g, api = env.host.guests, env.host.api
    recv = ["nc", "-u", "-l", "-W", "1", "5353"]
    import subprocess

    def udp_arrives(payload: str) -> bool:
        srv = subprocess.Popen(["ip", "netns", "exec", g["web"].netns, *recv],
                               stdout=subprocess.PIPE, text=True)
        try:
            import time
            time.sleep(0.3)
            g["outsider"].run(["sh", "-c", f"echo {payload} | nc -u -w1 10.0.0.10 5353"])
            try:
                out, _ = srv.communicate(timeout=2)
            except subprocess.TimeoutExpired:
                srv.kill()
                out, _ = srv.communicate()
            return payload in out
        finally:
            if srv.poll() is None:
                srv.kill()

    assert not udp_arrives("udp-denied")
    rule = _rule(api, env.sg_web, direction="ingress", protocol="udp", port_range_min=5353,
                 port_range_max=5353)
    try:
        assert udp_arrives("udp-allowed")
    finally:
        api.delete(f"/v2.0/security-group-rules/{rule['id']}?wait=true")


def test_ipv6_rule(env: Env) -> None:
    g = env.host.guests
    lst = g["web"].tcp_listen(8080, ipv6=True, keep=True)
    assert g["outsider"].tcp_connect("fd00:5::10", 8080, "hello-v6", listener=lst)
    lst2 = g["web"].tcp_listen(8082, ipv6=True, keep=True)
    assert not g["outsider"].tcp_connect("fd00:5::10", 8082, "nope-v6", timeout=2,
                                         listener=lst2)


def test_established_survives_unrelated_changes_and_dies_with_its_rule(env: Env) -> None:
    host, api = env.host, env.host.api
    g = host.guests
    for listener in list(g["web"]._listeners):  # free port 8080 from earlier tests
        listener.close()
    stream = Stream(g["web"].netns, g["outsider"].netns, "10.0.0.10", 8080)
    try:
        assert stream.flowing(5), "stream never started"
        # unrelated: a new rule, and removing the SSH rule
        extra = _rule(api, env.sg_web, direction="ingress", protocol="tcp",
                      port_range_min=9999, port_range_max=9999)
        api.delete(f"/v2.0/security-group-rules/{env.rules['ssh']['id']}?wait=true")
        api.delete(f"/v2.0/security-group-rules/{extra['id']}?wait=true")
        assert stream.flowing(), "an unrelated rule change cut the connection"
        # the rule that allowed it: the connection stops
        api.delete(f"/v2.0/security-group-rules/{env.rules['web8080']['id']}?wait=true")
        stream.flowing(0.5)  # let in-flight data drain
        assert not stream.flowing(2.0), "connection survived the removal of its rule"
        # and a new connection is refused too
        lst = g["web"].tcp_listen(8080, keep=True)
        assert not g["outsider"].tcp_connect("10.0.0.10", 8080, "after-removal", timeout=2,
                                             listener=lst)
    finally:
        stream.close()
