"""The stock `openstack` CLI drives Loom's L3 story end to end (issue 12).

External network and subnet, a project network, subnet and port, a router with an
interface and an external gateway, a floating IP associated and disassociated, a
port forwarding created, listed and deleted, the gateway refused while a floating IP
needs it, then everything deleted: each step is a stock `openstack` command against
the in-process API (tests/unit/api_harness.py), and the store is checked after.

`cli(env)` is `api_harness.openstack_cli` with two additions: `run(*args)` returns
the finished process whatever its exit status (for the refusals), and every request
the CLI sent is recorded (method, path, JSON body), so a test can say which request
a command made.
"""

from __future__ import annotations

import io
import ipaddress
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from api_harness import Env

EXT_CIDR = "198.51.100.0/24"


@dataclass
class Cli:
    """The stock CLI against one env's API; `sent` is every request it made."""

    run: Callable[..., subprocess.CompletedProcess[str]]
    sent: list[tuple[str, str, Any]] = field(default_factory=list)

    def __call__(self, *args: str) -> str:
        """stdout of a command that must succeed."""
        done = self.run(*args)
        assert done.returncode == 0, f"openstack {' '.join(args)}: {done.stderr}"
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-f", "json"))

    def fails(self, *args: str) -> str:
        """stderr of a command that must fail (non-zero exit)."""
        done = self.run(*args)
        assert done.returncode != 0, f"openstack {' '.join(args)} succeeded: {done.stdout}"
        return done.stderr

    def writes(self) -> list[tuple[str, str, Any]]:
        """The non-GET requests sent since the last call."""
        out = [r for r in self.sent if r[0] != "GET"]
        self.sent.clear()
        return out


def _recording(app: Any, sent: list[tuple[str, str, Any]]) -> Any:
    """`app`, noting each request's method, path (with query) and JSON body."""

    def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(raw)
        path = environ.get("PATH_INFO", "")
        if environ.get("QUERY_STRING"):
            path += "?" + environ["QUERY_STRING"]
        sent.append((environ["REQUEST_METHOD"], path, json.loads(raw) if raw else None))
        return app(environ, start_response)

    return wrapped


@contextmanager
def cli(env: Env) -> Iterator[Cli]:
    from controller.rest.server import serve

    exe = Path(sys.executable).parent / "openstack"
    assert exe.exists(), "python-openstackclient is pinned in requirements.txt: run make deps"
    sent: list[tuple[str, str, Any]] = []
    serving = serve(_recording(env.app, sent), "127.0.0.1", 0)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    environ.update(
        OS_AUTH_TYPE="none",
        OS_ENDPOINT=serving.url,
        OS_NETWORK_ENDPOINT_OVERRIDE=serving.url + "/v2.0/",
        PYTHONWARNINGS="ignore",
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(exe), *args], env=environ, capture_output=True, text=True, timeout=120
        )

    try:
        yield Cli(run, sent)
    finally:
        serving.close()


def test_extension_list(env: Env) -> None:
    with cli(env) as osc:
        aliases = set(osc("extension", "list", "--network", "-f", "value", "-c", "Alias").split())
    assert {"router", "ext-gw-mode", "floating-ip-port-forwarding", "external-net"} <= aliases
    assert not {"external-gateway-multihoming", "l3-ha", "dvr"} & aliases


def test_openstack_cli_l3_story(env: Env) -> None:
    with cli(env) as osc:
        # -- the external network (admin: every caller is, without tokens) ---------
        public = osc.json("network", "create", "--external", "--provider-network-type", "flat",
                          "--provider-physical-network", "physnet1", "public")
        assert public["router:external"] is True
        assert public["provider:network_type"] == "flat"
        ext_subnet = osc.json("subnet", "create", "--network", "public", "--subnet-range",
                              EXT_CIDR, "--gateway", "198.51.100.1", "--no-dhcp",
                              "public-subnet")
        assert ext_subnet["cidr"] == EXT_CIDR and ext_subnet["enable_dhcp"] is False

        # -- the project's network, subnet and guest port --------------------------
        osc("network", "create", "inside")
        subnet = osc.json("subnet", "create", "--network", "inside", "--subnet-range",
                          "10.0.0.0/24", "inside-subnet")
        port = osc.json("port", "create", "--network", "inside", "vm")
        (vm_ip,) = [f["ip_address"] for f in port["fixed_ips"]]
        assert ipaddress.ip_address(vm_ip) in ipaddress.ip_network("10.0.0.0/24")

        # -- the router: an interface, then the external gateway -------------------
        router = osc.json("router", "create", "r1")
        osc("router", "add", "subnet", "r1", subnet["id"])
        osc.writes()
        osc("router", "set", "r1", "--external-gateway", "public")
        assert osc.writes() == [("PUT", f"/v2.0/routers/{router['id']}", {
            "router": {"external_gateway_info": {"network_id": public["id"]}}})]
        shown = osc.json("router", "show", "r1")
        info = shown["external_gateway_info"]
        assert info["network_id"] == public["id"] and info["enable_snat"] is True
        (gw_ip,) = info["external_fixed_ips"]
        assert gw_ip["subnet_id"] == ext_subnet["id"]
        assert ipaddress.ip_address(gw_ip["ip_address"]) in ipaddress.ip_network(EXT_CIDR)
        stored = env.store.latest().routers[router["id"]]
        assert stored.external_network_id == public["id"] and stored.enable_snat
        assert stored.snat_zone

        # -- a floating IP, associated with the port -------------------------------
        fip = osc.json("floating", "ip", "create", "public")
        assert fip["floating_network_id"] == public["id"] and fip["port_id"] is None
        assert ipaddress.ip_address(fip["floating_ip_address"]) in ipaddress.ip_network(EXT_CIDR)
        assert fip["floating_ip_address"] != gw_ip["ip_address"]
        osc("floating", "ip", "set", "--port", port["id"], fip["id"])
        shown = osc.json("floating", "ip", "show", fip["id"])
        assert (shown["fixed_ip_address"], shown["port_id"], shown["router_id"]) == (
            vm_ip, port["id"], router["id"])
        assert shown["status"] == "ACTIVE"

        # the gateway is needed by that floating IP: the CLI shows Neutron's refusal
        osc.writes()
        err = osc.fails("router", "unset", "--external-gateway", "r1")
        assert osc.writes() == [("PUT", f"/v2.0/routers/{router['id']}", {
            "router": {"external_gateway_info": {}}})]
        in_use = (f"Gateway cannot be updated for router {router['id']}, since a gateway to "
                  f"external network {public['id']} is required by one or more floating IPs.")
        assert "ConflictException: 409" in err and in_use in err, err
        assert env.store.latest().routers[router["id"]].external_network_id == public["id"]

        osc("floating", "ip", "unset", "--port", fip["id"])
        shown = osc.json("floating", "ip", "show", fip["id"])
        assert (shown["fixed_ip_address"], shown["port_id"], shown["router_id"]) == (
            None, None, None)
        assert shown["status"] == "DOWN"

        # -- a port forwarding on the (now unassociated) floating IP ---------------
        pf = osc.json("floating", "ip", "port", "forwarding", "create",
                      "--internal-ip-address", vm_ip, "--port", port["id"],
                      "--internal-protocol-port", "80", "--external-protocol-port", "10080",
                      "--protocol", "tcp", fip["id"])
        assert (pf["internal_ip_address"], pf["internal_port_id"], pf["protocol"]) == (
            vm_ip, port["id"], "tcp")
        assert (pf["internal_port"], pf["external_port"]) == (80, 10080)
        listed = osc.json("floating", "ip", "port", "forwarding", "list", fip["id"])
        assert [p["ID"] for p in listed] == [pf["id"]]
        assert osc.json("floating", "ip", "show", fip["id"])["router_id"] == router["id"]
        # a forwarding needs the gateway too
        err = osc.fails("router", "unset", "--external-gateway", "r1")
        assert "ConflictException: 409" in err and in_use in err, err
        osc("floating", "ip", "port", "forwarding", "delete", fip["id"], pf["id"])
        assert osc.json("floating", "ip", "port", "forwarding", "list", fip["id"]) == []
        assert osc.json("floating", "ip", "show", fip["id"])["router_id"] is None

        # -- no floating IP needs the gateway any more: it goes --------------------
        osc("router", "unset", "--external-gateway", "r1")
        assert osc.json("router", "show", "r1")["external_gateway_info"] is None
        osc("floating", "ip", "delete", fip["id"])
        osc("router", "remove", "subnet", "r1", subnet["id"])
        osc("router", "delete", "r1")
        osc("port", "delete", "vm")
        osc("subnet", "delete", "inside-subnet")
        osc("network", "delete", "inside")
        osc("subnet", "delete", "public-subnet")
        osc("network", "delete", "public")
        assert osc("floating", "ip", "list", "-f", "value").strip() == ""
        assert osc("router", "list", "-f", "value").strip() == ""

    intent = env.store.latest()
    assert intent.routers == {} and intent.router_interfaces == {}
    assert intent.floating_ips == {} and intent.port_forwardings == {}
    assert intent.ports == {} and intent.subnets == {} and intent.networks == {}


def test_openstack_cli_l3_refusals(env: Env) -> None:
    """One-step variants (router created with its gateway, floating IP created
    associated) and Neutron's 409s as the CLI shows them: an interface a floating IP
    needs, a floating IP with a port forwarding (not deletable, not associable), a
    router with interfaces."""
    with cli(env) as osc:
        public = osc.json("network", "create", "--external", "public")
        osc("subnet", "create", "--network", "public", "--subnet-range", EXT_CIDR,
            "--no-dhcp", "public-subnet")
        osc("network", "create", "inside")
        subnet = osc.json("subnet", "create", "--network", "inside", "--subnet-range",
                          "10.0.0.0/24", "inside-subnet")
        vm = osc.json("port", "create", "--network", "inside", "vm")
        other = osc.json("port", "create", "--network", "inside", "other")
        router = osc.json("router", "create", "--external-gateway", "public",
                          "--disable-snat", "r2")
        info = router["external_gateway_info"]
        assert info["network_id"] == public["id"] and info["enable_snat"] is False
        assert env.store.latest().routers[router["id"]].enable_snat is False
        osc("router", "add", "subnet", "r2", subnet["id"])

        fip = osc.json("floating", "ip", "create", "--port", vm["id"], "public")
        assert (fip["port_id"], fip["router_id"]) == (vm["id"], router["id"])
        (vm_ip,) = [f["ip_address"] for f in vm["fixed_ips"]]
        assert fip["fixed_ip_address"] == vm_ip

        err = osc.fails("router", "remove", "subnet", "r2", subnet["id"])
        assert "ConflictException: 409" in err, err
        assert (f"Router interface for subnet {subnet['id']} on router {router['id']} cannot "
                "be deleted, as it is required by one or more floating IPs.") in err
        err = osc.fails("router", "delete", "r2")
        assert f"Router {router['id']} has ports still attached" in err, err

        # a port forwarding pins the floating IP
        osc("floating", "ip", "unset", "--port", fip["id"])
        pf = osc.json("floating", "ip", "port", "forwarding", "create",
                      "--internal-ip-address", vm_ip, "--port", vm["id"],
                      "--internal-protocol-port", "22", "--external-protocol-port", "2222",
                      "--protocol", "tcp", "--description", "ssh", fip["id"])
        osc("floating", "ip", "port", "forwarding", "set", "--external-protocol-port", "2223",
            fip["id"], pf["id"])
        shown = osc.json("floating", "ip", "port", "forwarding", "show", fip["id"], pf["id"])
        assert (shown["external_port"], shown["internal_port"], shown["description"]) == (
            2223, 22, "ssh")
        in_use = f"Floating IP {fip['id']} in use by Port Forwarding resources."
        err = osc.fails("floating", "ip", "delete", fip["id"])
        assert in_use in err, err
        err = osc.fails("floating", "ip", "set", "--port", other["id"], fip["id"])
        assert "ConflictException: 409" in err and in_use in err, err
        assert osc.json("floating", "ip", "show", fip["id"])["port_id"] is None

        osc("floating", "ip", "port", "forwarding", "delete", fip["id"], pf["id"])
        osc("floating", "ip", "delete", fip["id"])
        osc("router", "remove", "subnet", "r2", subnet["id"])
        osc("router", "delete", "r2")
    intent = env.store.latest()
    assert intent.routers == {} and intent.floating_ips == {}
    assert intent.port_forwardings == {}
    # only the two guest ports are left: the gateway and floating IP ports went
    assert sorted(p.name for p in intent.ports.values()) == ["other", "vm"]
