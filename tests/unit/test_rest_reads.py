"""REST reads that cost what they return (issue 11): same answers as before, pages by index.

Lists now filter, sort and page before building views, and find a marker by
bisection in an order kept per snapshot. The oracle is the list as it was built
before: every view, then filters, then sort, then the page. Every query here must
answer exactly as it did; page_reverse (ignored before) is checked on its own.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from typing import Any, Optional
from urllib.parse import parse_qsl, urlsplit

import pytest
from api_harness import start_env
from webob import Request

from bench.bench_rest_reads import fill
from controller import intent as m
from controller.rest.auth import Principal
from controller.rest.errors import InvalidInput, NeutronError, not_found
from controller.rest.index import index_of
from controller.rest.ports import CHEAP_FIELDS, Ports
from controller.rest.resource import ViewContext, _sort_key, select_fields
from controller.store import NorthboundStore

N = 230  # ports; 5 networks of 50 (the last one partly filled)


class Runtime:
    """Status from a fixed set (so `status` filters and sorts have two values)."""

    def __init__(self, active: set[str]) -> None:
        self.active = active

    def port_status(self, port_id: str) -> str:
        return "ACTIVE" if port_id in self.active else "DOWN"

    def port_binding(self, port_id: str) -> Optional[dict[str, Any]]:
        return None


def old_list(resource: Ports, request: Request, ctx: ViewContext) -> dict[str, Any]:
    """The list as built before issue 11 (the oracle): all views, filter, sort, page."""
    params = request.GET
    filters = resource._filters(params)

    def matches(key: str, values: list[str], view: dict[str, Any]) -> bool:
        special = resource.match_special(key, values, view)
        if special is not None:
            return special
        for raw in values:
            try:
                if resource.attrs[key].convert(raw) == view.get(key):
                    return True
            except InvalidInput:
                continue
        return False

    views = [resource.view(o, ctx) for o in resource.objects(ctx.intent).values()
             if resource.visible(ctx.principal, o, ctx.intent)]
    views = [v for v in views if all(matches(k, vals, v) for k, vals in filters.items())]
    views.sort(key=lambda v: (v.get("created_at") or "", v["id"]))
    keys, dirs = params.getall("sort_key"), params.getall("sort_dir")
    if keys:
        for key in keys:
            if key not in resource.attrs or not resource.attrs[key].filter:
                raise InvalidInput(f"'{key}' is not a valid sort key for ports")
        if any(d not in ("asc", "desc") for d in dirs):
            raise InvalidInput("sort_dir must be 'asc' or 'desc'")
        for i in reversed(range(len(keys))):
            views.sort(key=_sort_key(keys[i]),
                       reverse=(dirs[i] if i < len(dirs) else "asc") == "desc")
    marker = params.get("marker")
    if marker is not None:
        ids = [v["id"] for v in views]
        if marker not in ids:
            raise not_found("Port", marker)
        views = views[ids.index(marker) + 1:]
    links = []
    limit_raw = params.get("limit")
    if limit_raw is not None:
        try:
            limit = int(limit_raw)
            if limit < 0:
                raise ValueError
        except ValueError:
            raise InvalidInput(f"limit must be a non-negative integer, got '{limit_raw}'") from None
        if limit and len(views) > limit:
            views = views[:limit]
            from urllib.parse import urlencode
            query = [(k, v) for k, v in params.items() if k != "marker"] + [
                ("marker", views[-1]["id"])]
            links = [{"rel": "next",
                      "href": f"{request.host_url}{request.path}?{urlencode(query)}"}]
    body: dict[str, Any] = {"ports": [select_fields(v, params) for v in views]}
    if links:
        body["ports_links"] = links
    return body


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NorthboundStore]:
    env = start_env(tmp_path_factory.mktemp("reads") / "state")
    try:
        fill(env.store, N, per_network=50)
        extra = env.network(name="qos-net")  # ports with groups, on a second subnet form
        env.subnet(extra["id"], "10.99.0.0/24")
        for i in range(6):
            env.port(extra["id"], name=f"sg{i}", device_id="vm-3",
                     admin_state_up=bool(i % 2))
        yield env.store
    finally:
        env.close()


def _answer(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except NeutronError as exc:
        return ("error", type(exc).__name__, exc.status, str(exc))


def _active(intent: m.Intent) -> set[str]:
    return {p for i, p in enumerate(sorted(intent.ports)) if i % 3 == 0}


def _ctx(store: NorthboundStore, principal: Principal) -> ViewContext:
    intent = store.latest()
    return ViewContext(intent, index_of(intent), Runtime(_active(intent)), principal)  # type: ignore[arg-type]


def _queries(intent: m.Intent) -> list[str]:
    order = sorted(intent.ports.values(), key=lambda p: (p.created_at, p.id))
    first, middle, last = order[0].id, order[len(order) // 2].id, order[-1].id
    net = sorted(intent.networks)[1]
    sg_port = next(p for p in intent.ports.values() if p.security_groups)
    vm3 = sorted((p for p in order if p.device_id == "vm-3"), key=lambda p: p.id)
    ip = order[17].fixed_ips[0].ip_address
    down = next(p for p in order[4:] if p.id not in _active(intent))
    on_net = [p for p in order if p.network_id == net]
    not_vm4 = next(p.id for p in order if p.device_id != "vm-4")
    return [
        "", "limit=7", f"limit=7&marker={middle}", f"marker={last}", f"limit=3&marker={last}",
        f"limit=3&marker={first}", "limit=0", f"limit={N + 6}", f"limit={N + 5}", "limit=1",
        "limit=100000", "device_id=vm-3", "device_id=vm-3&device_id=vm-5", "device_id=vm-3&limit=4",
        f"device_id=vm-3&limit=4&marker={vm3[2].id}", f"network_id={net}&name=port60",
        f"network_id={net}&limit=9&marker={on_net[20].id}", "admin_state_up=false",
        "admin_state_up=true&limit=5", "admin_state_up=banana", f"fixed_ips=ip_address%3D{ip}",
        f"security_groups={sg_port.security_groups[0]}", "status=ACTIVE&limit=5",
        f"status=DOWN&limit=5&marker={down.id}", "sort_key=name&sort_dir=desc&limit=10",
        f"sort_key=device_id&sort_key=name&sort_dir=asc&sort_dir=desc&limit=11&marker={middle}",
        "sort_key=status&limit=13", "fields=id&fields=name&limit=4", "fields=id,status",
        f"mac_address={order[3].mac_address.upper()}", "revision_number=1&limit=3",
        "project_id=p1&tenant_id=p1&limit=5", "name=nope", "device_id=vm-3&name=nope&limit=2",
        # errors: each must be the same error as before
        "marker=" + str(uuid.UUID(int=7)), f"device_id=vm-4&marker={not_vm4}", "limit=-1",
        "limit=x", f"limit=x&marker={str(uuid.UUID(int=7))}", "sort_key=binding:profile",
        "sort_key=name&sort_dir=up", "fixed_ips=bogus", "flavor=1",
    ]


@pytest.mark.parametrize("principal", [Principal("ops", "admin"), Principal("p1", "member"),
                                       Principal("nobody", "member")], ids=str)
def test_every_query_answers_as_before(store: NorthboundStore, principal: Principal) -> None:
    ctx = _ctx(store, principal)
    shapes = []
    for query in _queries(ctx.intent):
        request = Request.blank(f"/v2.0/ports?{query}")
        got = _answer(Ports().list_view, request, ctx)
        want = _answer(old_list, Ports(), request, ctx)
        assert got == want, query
        shapes.append("error" if isinstance(got, tuple) else len(got["ports"]))
    if principal.is_admin:  # the queries mean what they say
        assert shapes.count("error") == 9, str(shapes)
        assert shapes[:3] == [N + 6, 7, 7] and shapes[11:14] == [16, 26, 4], str(shapes)
        assert 0 not in shapes[14:19] + shapes[20:24], str(shapes)


def test_cheap_fields_are_the_views_values(store: NorthboundStore) -> None:
    ctx = _ctx(store, Principal("ops", "admin"))
    intent = ctx.intent
    network = next(iter(intent.networks.values()))
    policy_net = m.Intent(generation=intent.generation, networks={
        network.id: m.Network(**{**network.__dict__, "qos_policy_id": str(uuid.UUID(int=9))})})
    for port in list(intent.ports.values())[::17]:
        for view_intent in (intent, policy_net):
            view = Ports().view(port, ViewContext(view_intent, ctx.index, ctx.runtime,
                                                  ctx.principal))
            for key, getter in CHEAP_FIELDS.items():
                assert key in view and getter(port, view_intent) == view[key], key


def _walk(store: NorthboundStore, query: str, rel: str) -> list[list[str]]:
    """Follow the list's `rel` links from the first page; the ids of every page."""
    ctx = _ctx(store, Principal("ops", "admin"))
    pages, path = [], f"/v2.0/ports?{query}"
    while True:
        body = Ports().list_view(Request.blank(path), ctx)
        pages.append([p["id"] for p in body["ports"]])
        links = body.get("ports_links", [])
        assert len(pages) < 1000
        if not links:
            return pages
        assert [link["rel"] for link in links] == [rel]
        parts = urlsplit(links[0]["href"])
        assert dict(parse_qsl(parts.query))["marker"] == pages[-1][-1 if rel == "next" else 0]
        path = f"{parts.path}?{parts.query}"


@pytest.mark.parametrize("limit", [1, 7, 49, N + 5, N + 6])
def test_next_links_walk_the_whole_list_once(store: NorthboundStore, limit: int) -> None:
    everything = [p["id"] for p in Ports().list_view(
        Request.blank("/v2.0/ports"), _ctx(store, Principal("ops", "admin")))["ports"]]
    pages = _walk(store, f"limit={limit}", "next")
    assert [i for page in pages for i in page] == everything
    assert all(len(page) == limit for page in pages[:-1]) and 0 < len(pages[-1]) <= limit
    filtered = _walk(store, f"device_id=vm-3&limit={min(limit, 3)}", "next")
    assert sum(len(page) for page in filtered) == 16  # 10 filled + 6 made through the API


@pytest.mark.parametrize("limit", [1, 7, N + 6])
def test_page_reverse_walks_backwards(store: NorthboundStore, limit: int) -> None:
    everything = [p["id"] for p in Ports().list_view(
        Request.blank("/v2.0/ports"), _ctx(store, Principal("ops", "admin")))["ports"]]
    pages = _walk(store, f"limit={limit}&page_reverse=true", "previous")
    assert [i for page in reversed(pages) for i in page] == everything
    assert pages[0] == everything[-limit:]
    ctx = _ctx(store, Principal("ops", "admin"))
    before = Ports().list_view(Request.blank(
        f"/v2.0/ports?page_reverse=True&limit=5&marker={everything[9]}"), ctx)
    assert [p["id"] for p in before["ports"]] == everything[4:9]
    assert [p["id"] for p in Ports().list_view(Request.blank(
        f"/v2.0/ports?page_reverse=1&marker={everything[3]}"), ctx)["ports"]] == everything[:3]
    with pytest.raises(InvalidInput):
        Ports().list_view(Request.blank("/v2.0/ports?page_reverse=maybe"), ctx)


def test_random_queries_answer_as_before(store: NorthboundStore) -> None:
    """Random combinations of the filters, sort keys, markers and limits above."""
    rng = random.Random(11)
    ctx = _ctx(store, Principal("ops", "admin"))
    ids = sorted(ctx.intent.ports)
    filters = ["device_id=vm-3", "device_id=vm-7", "admin_state_up=true", "status=ACTIVE",
               "project_id=p2", f"network_id={sorted(ctx.intent.networks)[2]}", "name=port9"]
    for _ in range(150):
        parts = rng.sample(filters, rng.randint(0, 2))
        if rng.random() < 0.3:
            parts.append(f"sort_key={rng.choice(['name', 'status', 'device_id'])}")
        if rng.random() < 0.7:
            parts.append(f"limit={rng.choice([1, 2, 5, 40, 300])}")
        if rng.random() < 0.5:
            parts.append(f"marker={rng.choice(ids)}")
        request = Request.blank("/v2.0/ports?" + "&".join(parts))
        assert _answer(Ports().list_view, request, ctx) == _answer(
            old_list, Ports(), request, ctx), parts
