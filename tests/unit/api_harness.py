"""Shared harness for the store and API unit tests: a real ovsdb-server in a tmp dir.

Not a test module. "No OVS" in unit tests means no switch: the northbound database
is a real /usr/sbin/ovsdb-server on a unix socket under pytest's tmp_path, so the
schema's indexes and strong references are exercised for real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from webob import Request, Response

from controller.rest import make_app
from controller.rest.auth import Principal, TokenAuth
from controller.runtime import Detached
from controller.store import EmbeddedOvsdb, NorthboundStore

ADMIN = "admin-token-0001"
ALICE = "alice-token-0001"
BOB = "bob-token-00001"
TOKENS = {
    ADMIN: Principal("ops", "admin"),
    ALICE: Principal("alice", "member"),
    BOB: Principal("bob", "member"),
}


def db_dump(socket_path: Path) -> dict[str, Any]:
    """Every row of every table, read by ovsdb-client: the server's truth, not our IDL's."""
    out = subprocess.run(
        ["ovsdb-client", "dump", "--format=json", f"unix:{socket_path}", "Loom_Northbound"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    tables = {}
    for line in out.splitlines():
        if not line.strip():
            continue
        table = json.loads(line)
        rows = sorted(json.dumps(r, sort_keys=True) for r in table.get("data", []))
        tables[table["caption"].removesuffix(" table")] = rows
    return tables


@dataclass
class Env:
    """One embedded database, a connected store and an app (optionally with tokens)."""

    state_dir: Path
    db: EmbeddedOvsdb
    store: NorthboundStore
    runtime: Any = field(default_factory=Detached)
    auth: Optional[TokenAuth] = None

    def __post_init__(self) -> None:
        self.app = make_app(self.store, self.runtime, self.auth)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: Optional[str] = None,
        headers: Optional[dict[str, str]] = None,
        raw: Optional[bytes] = None,
    ) -> Response:
        req = Request.blank(path, method=method, headers=headers or {})
        if token is not None:
            req.headers["X-Auth-Token"] = token
        if raw is not None:
            req.body = raw
            req.content_type = "application/json"
        elif body is not None:
            req.body = json.dumps(body).encode()
            req.content_type = "application/json"
        return req.get_response(self.app)

    def dump(self) -> dict[str, Any]:
        return db_dump(self.db.socket_path)

    def close(self) -> None:
        self.store.close()
        self.db.stop()

    # -- conveniences (admin unless a token is given) ------------------------------
    def ok(self, method: str, path: str, body: Any = None, status: int = 200, **kw: Any) -> Any:
        resp = self.call(method, path, body, **kw)
        assert resp.status_int == status, f"{method} {path}: {resp.status} {resp.text}"
        return resp.json if resp.body else None

    def network(self, **attrs: Any) -> dict[str, Any]:
        token = attrs.pop("token", ADMIN if self.auth else None)
        return self.ok("POST", "/v2.0/networks", {"network": attrs}, 201, token=token)["network"]  # type: ignore[no-any-return]

    def subnet(self, network_id: str, cidr: str, **attrs: Any) -> dict[str, Any]:
        token = attrs.pop("token", ADMIN if self.auth else None)
        body = {"subnet": {"network_id": network_id, "cidr": cidr, **attrs}}
        return self.ok("POST", "/v2.0/subnets", body, 201, token=token)["subnet"]  # type: ignore[no-any-return]

    def port(self, network_id: str, **attrs: Any) -> dict[str, Any]:
        token = attrs.pop("token", ADMIN if self.auth else None)
        body = {"port": {"network_id": network_id, **attrs}}
        return self.ok("POST", "/v2.0/ports", body, 201, token=token)["port"]  # type: ignore[no-any-return]

    def rejected(
        self, method: str, path: str, body: Any = None, *, status: int, type: str, **kw: Any
    ) -> dict[str, Any]:
        """The request fails with `status` and Neutron's error body; the database is untouched."""
        before, generation = self.dump(), self.store.latest().generation
        resp = self.call(method, path, body, **kw)
        assert resp.status_int == status, (
            f"{method} {path}: expected {status}, got {resp.status} {resp.text}"
        )
        assert resp.content_type == "application/json"
        error = resp.json["NeutronError"]
        assert set(error) == {"type", "message", "detail"}, error
        assert error["type"] == type, error
        assert error["message"]
        assert self.dump() == before, "a rejected request changed the database"
        assert self.store.latest().generation == generation
        return error  # type: ignore[no-any-return]


def start_env(state_dir: Path, *, tokens: bool = False, runtime: Any = None) -> Env:
    db = EmbeddedOvsdb(state_dir).start()
    store = NorthboundStore(db.remote).connect(10)
    return Env(state_dir, db, store, runtime or Detached(), TokenAuth(TOKENS) if tokens else None)


@contextmanager
def openstack_cli(env: Env) -> Iterator[Callable[..., str]]:
    """The stock `openstack` CLI (from requirements.txt) pointed at this env's API.

    Yields `osc(*args) -> stdout`, which fails the test on a non-zero exit.
    """
    from controller.rest.server import serve

    cli = Path(sys.executable).parent / "openstack"
    assert cli.exists(), "python-openstackclient is pinned in requirements.txt: run make deps"
    serving = serve(env.app, "127.0.0.1", 0)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    environ.update(
        OS_AUTH_TYPE="none",
        OS_ENDPOINT=serving.url,
        OS_NETWORK_ENDPOINT_OVERRIDE=serving.url + "/v2.0/",
        PYTHONWARNINGS="ignore",
    )

    def osc(*args: str) -> str:
        done = subprocess.run(
            [str(cli), *args], env=environ, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    try:
        yield osc
    finally:
        serving.close()


# -- L3: external networks, routers with gateways (routers, floating IPs, forwardings) --
@dataclass
class L3:
    """An external network with a subnet, a project's network, subnet and router (its
    gateway on the external network, an interface on the subnet) and a guest port."""

    ext: dict[str, Any]
    ext_subnet: dict[str, Any]
    net: dict[str, Any]
    subnet: dict[str, Any]
    router: dict[str, Any]
    vm: dict[str, Any]


def external_network(env: Env, cidr: str = "172.24.4.0/24", **attrs: Any) -> tuple[
        dict[str, Any], dict[str, Any]]:
    """An admin's router:external network (shared unless told) and its subnet."""
    token = ADMIN if env.auth else None
    attrs.setdefault("shared", True)
    net = env.network(name="public", token=token, **{"router:external": True}, **attrs)
    return net, env.subnet(net["id"], cidr, token=token)


def l3_setup(env: Env, token: Optional[str] = None, cidr: str = "10.0.0.0/24",
             ext: Optional[tuple[dict[str, Any], dict[str, Any]]] = None) -> L3:
    """The topology a floating IP needs, for the caller `token` (admin by default)."""
    ext_net, ext_subnet = ext or external_network(env)
    kw: dict[str, Any] = {"token": token} if token is not None else {}
    if token is None and env.auth:
        kw["token"] = ADMIN
    net = env.network(name="inside", **kw)
    subnet = env.subnet(net["id"], cidr, **kw)
    router = env.ok("POST", "/v2.0/routers", {"router": {
        "name": "edge", "external_gateway_info": {"network_id": ext_net["id"]}}}, 201,
        **kw)["router"]
    env.ok("PUT", f"/v2.0/routers/{router['id']}/add_router_interface",
           {"subnet_id": subnet["id"]}, **kw)
    vm = env.port(net["id"], name="vm", **kw)
    return L3(ext_net, ext_subnet, net, subnet, router, vm)
