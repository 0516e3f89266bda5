"""The WSGI application: routing, authentication, and the write path.

A write is: parse and type-check the body (no store access), then one store
transaction in which the resource validates against the newest snapshot and puts
its objects. Only after the commit is confirmed does the client get 201/200/204,
with `X-Loom-Generation` naming the first snapshot that contains the write. With
`?wait=true` (or `X-Loom-Wait: true`) the answer waits until the runtime reports
that generation installed on every affected switch; if that wait times out the
answer is 504 WaitTimeout, but the write stays committed (it will still be
installed, later) - retrying the request would apply it twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Optional, Protocol

from webob import Request, Response

from controller import intent as model
from controller.explain.tracer import TraceError
from controller.rest import chassis as chassis_api
from controller.rest import qos, v1, validate, versions
from controller.rest.auth import Authenticator, NoAuth, Principal, request_token
from controller.rest.errors import (
    BadRequest,
    Conflict,
    InvalidInput,
    MethodNotAllowed,
    NeutronError,
    NotFound,
    ServiceUnavailable,
    WaitTimeout,
)
from controller.rest.floatingips import FloatingIPs
from controller.rest.networks import Networks
from controller.rest.port_forwardings import PortForwardings
from controller.rest.ports import Ports
from controller.rest.resource import Resource, ViewContext
from controller.rest.routers import Routers
from controller.rest.security_groups import (
    SecurityGroupRules,
    SecurityGroups,
    default_group_needed,
    ensure_default_group,
)
from controller.rest.subnets import Subnets
from controller.runtime import Runtime
from controller.store.errors import (
    ConstraintViolation,
    ReferentialIntegrity,
    StoreTimeout,
    StoreUnavailable,
    TransactionFailed,
)
from controller.store.txn import TxnHelper

log = logging.getLogger(__name__)

TRUE = ("1", "true", "yes", "on")
DEFAULT_WAIT_TIMEOUT = 30.0
MAX_WAIT_TIMEOUT = 300.0
# What an index conflict on each table means to a Neutron client (a second
# controller raced us past our own validation).
_INDEX_CONFLICTS = {
    "IP_Allocation": ("IpAddressAlreadyAllocated", "IP address already allocated"),
    "Port": ("MacAddressInUse", "The mac address is in use on this network"),
    "Network": ("SegmentationIdInUse", "The segmentation id is in use"),
    "Chassis": ("ChassisNameInUse", "The chassis name is in use"),
    "QoS_Rule": ("QoSRulesConflict", "The QoS policy already has a rule of this type"),
    "Router_Interface": (
        "RouterInterfaceAttachmentConflict",
        "The router already has an interface on this subnet, or the port is another's",
    ),
    "Floating_IP": ("IpAddressAlreadyAllocated", "The floating IP address is in use"),
    "Port_Forwarding": (
        "BadRequest",
        "A duplicate port forwarding entry with same attributes already exists",
    ),
}


class Store(Protocol):
    remote: str

    @property
    def connected(self) -> bool: ...

    def latest(self) -> model.Intent: ...

    def transact(
        self, fn: Callable[[TxnHelper, model.Intent], Any], *, timeout: float = ...
    ) -> int: ...

    def call(
        self, fn: Callable[[TxnHelper, model.Intent], Any], *, timeout: float = ...
    ) -> Any: ...

    def health(self) -> dict[str, Any]: ...


class TraceSource(Protocol):
    """GET /v1/trace (controller.explain.Tracer); absent: 501."""

    def trace_query(self, params: Mapping[str, str]) -> dict[str, Any]: ...


def json_response(body: Any, status: int = 200, generation: Optional[int] = None) -> Response:
    """A JSON answer; NaN or Infinity in `body` is a bug (500), never invalid JSON sent out."""
    resp = Response(
        status=status,
        content_type="application/json",
        charset="utf-8",
        body=json.dumps(body, allow_nan=False).encode(),
    )
    if generation is not None:
        resp.headers["X-Loom-Generation"] = str(generation)
    return resp


def text_response(text: str, content_type: str, status: int = 200) -> Response:
    return Response(
        status=status, content_type=content_type, charset="utf-8", body=text.encode()
    )


def no_store(resp: Response) -> Response:
    """Live state: never served from a cache."""
    resp.headers["Cache-Control"] = "no-store"
    return resp


def expected_revision(request: Request) -> Optional[int]:
    """Neutron's compare-and-swap: `If-Match: revision_number=N` on PUT/DELETE."""
    header = request.headers.get("If-Match", "").strip()
    if not header:
        return None
    name, _, value = header.partition("=")
    if name.strip() != "revision_number" or not value.strip().isdigit():
        raise InvalidInput(f"If-Match must be 'revision_number=<integer>', got '{header}'")
    return int(value)


def check_revision(obj: Any, expected: Optional[int]) -> None:
    """Checked inside the write transaction, so no other write can slip in between."""
    if expected is not None and obj.revision_number != expected:
        raise NeutronError(
            f"Constrained to {expected}, but current revision is {obj.revision_number}",
            type="RevisionNumberConstraintFailed",
            status=412,
        )


class LoomApi:
    """Neutron v2.0 subset plus /v1; one instance serves all threads (it holds no request state)."""

    def __init__(
        self,
        store: Store,
        runtime: Runtime,
        auth: Optional[Authenticator] = None,
        *,
        write_timeout: float = 10.0,
        tracer: Optional[TraceSource] = None,
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.auth: Authenticator = auth or NoAuth()
        self.write_timeout = write_timeout
        self.tracer = tracer
        # Keyed by URL collection: security_groups is served at /v2.0/security-groups.
        self.resources: dict[str, Resource] = {
            r.plural.replace("_", "-"): r
            for r in (
                Networks(), Subnets(), Ports(), SecurityGroups(), SecurityGroupRules(), Routers(),
                FloatingIPs(),
            )
        }

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        request = Request(environ)
        try:
            response = self.handle(request)
        except NeutronError as exc:
            response = exc.response()
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            response = NeutronError(
                "Request Failed: internal server error while processing your request."
            ).response()
        return response(environ, start_response)  # type: ignore[no-any-return]

    # -- routing ----------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        self._check_edge(request)
        parts = [p for p in request.path_info.split("/") if p]
        if parts and parts[-1].endswith(".json"):
            parts[-1] = parts[-1][: -len(".json")]
        if not parts:
            self._allow(request, "GET")
            return json_response(versions.versions(request))
        if parts[0] == "v2.0":
            return self._v2(request, parts[1:])
        if parts[0] == "v1":
            return self._v1(request, parts[1:])
        if parts == ["topology"] and not request.path_info.rstrip("/").endswith(".json"):
            return self._topology_page(request)
        raise NotFound("The resource could not be found.")

    @staticmethod
    def _allow(request: Request, *methods: str) -> None:
        if request.method not in methods:
            raise MethodNotAllowed(
                f"The method {request.method} is not allowed for this resource.",
                headers={"Allow": ", ".join(methods)},
            )

    def _v2(self, request: Request, parts: list[str]) -> Response:
        if not parts:
            self._allow(request, "GET")
            return json_response(versions.resources(request))
        principal = self.auth.authenticate(request)
        if parts[0] == "extensions" and len(parts) <= 2:
            self._allow(request, "GET")
            return json_response(
                versions.extensions() if len(parts) == 1 else versions.extension(parts[1])
            )
        if parts[0] == "qos":  # /v2.0/qos/policies[/<id>[/<type>_rules[/<id>]]], rule-types
            resource, parts = qos.route(request.method, parts[1:])
        elif parts[0] == "floatingips" and len(parts) in (3, 4) and parts[2] == "port_forwardings":
            # /v2.0/floatingips/<id>/port_forwardings[/<id>]
            resource, parts = PortForwardings(parts[1]), parts[2:]
        else:
            resource = self.resources.get(parts[0])
        actions = getattr(resource, "actions", ())  # member actions: PUT .../<id>/<action>
        if len(parts) == 3 and parts[2] in actions:
            return self._action(request, principal, resource, parts[1], parts[2])
        if resource is None or len(parts) > 2:
            raise NotFound("The resource could not be found.")
        if len(parts) == 1:
            self._allow(request, "GET", "POST")
            if request.method == "GET":
                return self._list(request, principal, resource)
            return self._create(request, principal, resource)
        object_id = parts[1]
        self._allow(request, "GET", "PUT", "DELETE")
        if request.method == "GET":
            snap = self.store.latest()
            return json_response(
                resource.show_view(request, self._ctx(snap, principal), object_id),
                generation=snap.generation,
            )
        if request.method == "PUT":
            return self._update(request, principal, resource, object_id)
        return self._delete(request, principal, resource, object_id)

    def _list(self, request: Request, principal: Principal, resource: Resource) -> Response:
        snap = self.store.latest()
        body = resource.list_view(request, self._ctx(snap, principal))  # validates the query
        project = default_group_needed(resource, request, principal, snap)
        if project is None:
            return json_response(body, generation=snap.generation)

        def write(helper: TxnHelper) -> None:  # Neutron makes the default group on first list
            ensure_default_group(helper, project)

        try:
            self._commit(write)
        except Conflict:
            pass  # another controller made the same default group first
        snap = self.store.latest()
        return json_response(
            resource.list_view(request, self._ctx(snap, principal)), generation=snap.generation
        )

    def set_tracer(self, tracer: Optional[TraceSource]) -> None:
        """Serve GET /v1/trace with `tracer` (None: answer 501)."""
        self.tracer = tracer

    def _trace(self, request: Request) -> Response:
        if self.tracer is None:
            raise NeutronError(
                "Tracing is not available in this controller: it was started without a "
                "tracer (controller.explain.Tracer).",
                type="TraceNotSupported",
                status=501,
            )
        try:
            return json_response(self.tracer.trace_query(dict(request.GET)))
        except TraceError as exc:
            raise NeutronError(
                exc.message, type=exc.type, status=exc.status, detail=exc.detail
            ) from exc

    def _v1(self, request: Request, parts: list[str]) -> Response:
        principal = self.auth.authenticate(request)
        if parts and parts[0] == "chassis":
            if not principal.is_admin:
                raise NotFound("The resource could not be found.")
            return self._chassis(request, parts[1:])
        if parts == ["plan"]:  # POST: several writes as one what-if (admin)
            if not principal.is_admin:
                raise NotFound("The resource could not be found.")
            return self._plan(request, principal)
        self._allow(request, "GET")
        if parts == ["health"]:
            if principal.is_admin:
                status, body = v1.health(self.store, self.runtime)
            else:
                status, body = v1.health_summary(self.store)
            return json_response(body, status=status)
        if parts == ["pipeline"]:
            return json_response(v1.pipeline())
        if not principal.is_admin:
            raise NotFound("The resource could not be found.")
        if parts == ["switches"]:
            return json_response(v1.switches(self.runtime))
        if parts == ["verify"]:  # drift: controller/drift.py
            return no_store(json_response(self.runtime.verify()))
        if parts == ["plan"]:
            return self._plan(request, principal)
        if parts == ["topology"]:
            return no_store(json_response(v1.topology(self.runtime)))
        if parts == ["topology.svg"]:
            return no_store(text_response(v1.topology_svg(self.runtime), "image/svg+xml"))
        if parts == ["trace"]:
            return self._trace(request)
        if len(parts) == 3 and parts[0] == "switches" and parts[2] == "flows":
            return json_response(v1.flows(self.runtime, parts[1]))
        raise NotFound("The resource could not be found.")

    def _topology_page(self, request: Request) -> Response:
        """GET /topology: the picture in a page that refreshes itself; admin only.

        A browser cannot set X-Auth-Token on a page it navigates to, so this one URL
        also takes the token as `?token=` (the page's script sends it back as a header
        when it refreshes the picture). Keep such URLs out of shared logs and history.
        """
        self._allow(request, "GET")
        token = request.GET.get("token")
        if token and request_token(request) is None:
            request.headers["X-Auth-Token"] = token
        if not self.auth.authenticate(request).is_admin:
            raise NotFound("The resource could not be found.")
        resp = text_response(
            v1.topology_page(self.runtime, request.GET.get("refresh")), "text/html"
        )
        resp.headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
            "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'"
        )
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return no_store(resp)

    def _chassis(self, request: Request, parts: list[str]) -> Response:
        """/v1/chassis[/<name>]; a name may hold slashes (a unix: remote)."""
        if not parts:
            self._allow(request, "GET", "POST")
            if request.method == "GET":
                snap = self.store.latest()
                return json_response(
                    chassis_api.list_view(snap, self.runtime), generation=snap.generation
                )
            item = chassis_api.parse_create(request)
            created: list[model.Chassis] = []

            def add(helper: TxnHelper) -> None:
                created[:] = [chassis_api.create(item, helper, self.runtime)]

            generation, _ = self._commit(add)
            self._maybe_wait(request, generation, f"chassis {created[0].name} created")
            return json_response(
                chassis_api.created_view(created[0], self.runtime),
                status=201,
                generation=generation,
            )
        name = "/".join(parts)
        self._allow(request, "GET", "DELETE")
        if request.method == "GET":
            snap = self.store.latest()
            return json_response(
                chassis_api.show_view(snap, self.runtime, name), generation=snap.generation
            )
        deleted: list[str] = []

        def remove(helper: TxnHelper) -> None:
            deleted[:] = [chassis_api.delete(name, helper, self.runtime)]

        generation, _ = self._commit(remove)
        self._maybe_wait(request, generation, f"chassis {deleted[0]} deleted")
        resp = Response(status=204)
        resp.headers["X-Loom-Generation"] = str(generation)
        return resp

    def _ctx(self, intent: model.Intent, principal: Principal) -> ViewContext:
        return ViewContext(intent, None, self.runtime, principal)  # index: on first use

    # -- writes -----------------------------------------------------------------
    def _create(self, request: Request, principal: Principal, resource: Resource) -> Response:
        items, bulk = resource.parse_create(request)
        created: list[Any] = []

        def write(helper: TxnHelper) -> None:
            created.clear()
            created.extend(resource.create(principal, item, helper) for item in items)

        dry = dry_run(request)
        generation, after = self._commit(write, dry, request)
        ctx = self._ctx(after, principal)
        views = [resource.view(o, ctx) for o in created]
        body = {resource.plural: views} if bulk else {resource.singular: views[0]}
        if dry:
            return self._planned(body, 201, after, principal)
        ids = ", ".join(o.id for o in created)
        self._maybe_wait(request, generation, f"{resource.singular} {ids} created")
        return json_response(body, status=201, generation=generation)

    def _update(
        self, request: Request, principal: Principal, resource: Resource, object_id: str
    ) -> Response:
        changes = resource.parse_update(request)
        updated: list[Any] = []

        expected = expected_revision(request)

        def write(helper: TxnHelper) -> None:
            current = resource.lookup_for_write(principal, helper.current(), object_id, "update")
            check_revision(current, expected)
            updated[:] = [resource.update(principal, current, changes, helper)]

        dry = dry_run(request)
        generation, after = self._commit(write, dry, request)
        body = {resource.singular: resource.view(updated[0], self._ctx(after, principal))}
        if dry:
            return self._planned(body, 200, after, principal)
        self._maybe_wait(request, generation, f"{resource.singular} {object_id} updated")
        return json_response(body, generation=generation)

    def _delete(
        self, request: Request, principal: Principal, resource: Resource, object_id: str
    ) -> Response:
        expected = expected_revision(request)

        def write(helper: TxnHelper) -> None:
            current = resource.lookup_for_write(principal, helper.current(), object_id, "delete")
            check_revision(current, expected)
            resource.delete(principal, current, helper)

        dry = dry_run(request)
        generation, after = self._commit(write, dry, request)
        if dry:  # (the real delete answers 204 and no body: the plan needs one)
            return self._planned({}, 200, after, principal)
        self._maybe_wait(request, generation, f"{resource.singular} {object_id} deleted")
        resp = Response(status=204)
        resp.headers["X-Loom-Generation"] = str(generation)
        return resp

    def _action(
        self, request: Request, principal: Principal, resource: Any, object_id: str, action: str
    ) -> Response:
        """PUT /v2.0/<collection>/<id>/<action> (a router's add_router_interface, ...):
        the body checked first, then one transaction on the object, as an update."""
        self._allow(request, "PUT")
        body = resource.parse_action(action, request)
        expected = expected_revision(request)
        result: list[Any] = []

        def write(helper: TxnHelper) -> None:
            current = resource.lookup_for_write(principal, helper.current(), object_id, action)
            check_revision(current, expected)
            result[:] = [resource.act(principal, current, action, body, helper)]

        dry = dry_run(request)
        generation, after = self._commit(write, dry, request)
        body = resource.action_view(action, result[0], self._ctx(after, principal))
        if dry:
            return self._planned(body, 200, after, principal)
        self._maybe_wait(request, generation, f"{resource.singular} {object_id} {action}")
        return json_response(body, generation=generation)

    def _commit(self, write: Callable[[TxnHelper], None], dry: bool = False,
                request: Optional[Request] = None) -> tuple[int, model.Intent]:
        """Run `write` as one transaction; returns (generation, intent as the write left it).

        `dry`: run it exactly so, in the store thread against the newest snapshot, and
        commit nothing (?dry_run=true); the generation is then the snapshot's. A write
        of a `POST /v1/plan` is not run here but handed to it (`_Collected`)."""
        collect = request.environ.get(_COLLECT) if request is not None else None
        if collect is not None:
            collect.append(write)
            raise _Collected()
        after: list[model.Intent] = []

        def fn(helper: TxnHelper, intent: model.Intent) -> None:
            write(helper)
            after[:] = [helper.current()]

        return self._run_write(fn, dry, after)

    def _run_write(self, fn: Callable[[TxnHelper, model.Intent], None], dry: bool,
                   after: list[model.Intent]) -> tuple[int, model.Intent]:
        """`fn` in the store, committed or (dry) not, with the store's failures as
        Neutron's errors."""
        try:
            if dry:
                self.store.call(fn, timeout=self.write_timeout)
                return self.store.latest().generation, after[0]
            generation = self.store.transact(fn, timeout=self.write_timeout)
        except (StoreUnavailable, StoreTimeout) as exc:
            raise ServiceUnavailable(f"Northbound store unavailable: {exc}") from exc
        except ConstraintViolation as exc:
            type_, message = _INDEX_CONFLICTS.get(
                exc.table or "", ("Conflict", "Conflicting change")
            )
            raise Conflict(
                f"{message} (concurrent update)", type=type_, detail=exc.details
            ) from exc
        except ReferentialIntegrity as exc:
            raise Conflict(
                "The object is in use or refers to an object that no longer exists",
                type="InUse",
                detail=exc.details,
            ) from exc
        except TransactionFailed as exc:
            raise Conflict(str(exc), detail=exc.details) from exc
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        return generation, after[0]

    def _plan(self, request: Request, principal: Principal) -> Response:
        """POST /v1/plan {"writes": [{"method", "path", "body"}, ...]}: the writes, in
        order, validated as each would be after the ones before it, as one what-if;
        nothing is committed. Answers the plan of them all (as ?dry_run=true does for
        one), or the first refusal, naming the write."""
        self._allow(request, "POST")
        try:
            writes = request.json_body.get("writes")
        except (ValueError, AttributeError):
            raise BadRequest("The body must be a JSON object with a 'writes' list") from None
        if not isinstance(writes, list) or not 0 < len(writes) <= MAX_PLAN_WRITES:
            raise BadRequest(f"'writes' must be a list of 1 to {MAX_PLAN_WRITES} writes")
        fns: list[Callable[[TxnHelper], None]] = []
        for i, w in enumerate(writes):
            if not isinstance(w, dict) or w.get("method") not in ("POST", "PUT", "DELETE") \
                    or not isinstance(w.get("path"), str) \
                    or not w["path"].startswith("/v2.0/"):
                raise BadRequest(f"write {i}: needs 'method' (POST, PUT or DELETE) and a "
                                 "'path' under /v2.0/")
            sub = Request.blank(w["path"], method=w["method"])
            for header in ("X-Auth-Token", "Authorization"):
                if header in request.headers:
                    sub.headers[header] = request.headers[header]
            if w.get("body") is not None:
                sub.body = json.dumps(w["body"]).encode()
                sub.content_type = "application/json"
            sub.environ[_COLLECT] = fns
            try:
                self.handle(sub)
            except _Collected:
                continue
            except NeutronError as exc:
                exc.message = f"write {i} ({w['method']} {w['path']}): {exc.message}"
                raise
            raise BadRequest(f"write {i} ({w['method']} {w['path']}) writes nothing")
        after: list[model.Intent] = []

        def fn(helper: TxnHelper, intent: model.Intent) -> None:
            for i, write in enumerate(fns):
                try:
                    write(helper)
                except NeutronError as exc:
                    exc.message = f"write {i}: {exc.message}"
                    raise
            after[:] = [helper.current()]

        _, result = self._run_write(fn, True, after)
        return self._planned({"writes": len(fns)}, 200, result, principal)

    def _planned(self, body: dict[str, Any], status: int, after: model.Intent,
                 principal: Principal) -> Response:
        """A dry run's answer: the real write's body and status, and the plan.

        Admins see every flow, group, meter and OVSDB change with its owner, and every
        reachability change; others the number of changes per switch (the flows name
        other projects' objects and addresses too) and the reachability changes
        between their own project's ports."""
        try:
            plan = self.runtime.plan(after)
        except Exception as exc:  # nothing compiled yet, or a compiler failure
            raise ServiceUnavailable(f"No plan can be made now: {exc}") from exc
        if not principal.is_admin:
            reach = plan.get("reachability") or {}
            own = principal.project_id
            plan = {"switches": [{"flows": {k: len(v) for k, v in sw["flows"].items()}}
                                 for sw in plan.get("switches", [])],
                    # the reachability changes between the project's own ports only
                    "reachability": {"changes": [
                        c for c in reach.get("changes", ()) if _own_ends(c, own)]},
                    "compiled_in_full": plan.get("compiled_in_full", False)}
        resp = json_response({**body, "plan": plan}, status=status)
        resp.headers["X-Loom-Dry-Run"] = "true"
        return resp

    @staticmethod
    def _check_edge(request: Request) -> None:
        """What a request brings, refused before routing and so before any write.

        The wait timeout is checked here too: `_maybe_wait` runs after the commit,
        too late for a 400 that must leave the store untouched.
        """
        validate.check_request(request)
        _wait_timeout(request)

    def _maybe_wait(self, request: Request, generation: int, what: str) -> None:
        wanted = (
            request.GET.get("wait", "").lower() in TRUE
            or request.headers.get("X-Loom-Wait", "").lower() in TRUE
        )
        if not wanted:
            return
        timeout = _wait_timeout(request)
        if not self.runtime.wait_installed(generation, timeout):
            raise WaitTimeout(
                f"The change is committed (generation {generation}) but was not installed on "
                f"every affected switch within {timeout:g}s; it will still be installed. "
                "Do not retry the request.",
                detail=what,
                headers={"X-Loom-Generation": str(generation)},
            )


_COLLECT = "loom.plan.collect"  # environ key: the writes of a POST /v1/plan, collected
MAX_PLAN_WRITES = 100


class _Collected(Exception):
    """A write of a POST /v1/plan handed over instead of run (`LoomApi._commit`)."""


def dry_run(request: Request) -> bool:
    """?dry_run=true (or X-Loom-Dry-Run: true): validate and plan, commit nothing."""
    return (request.GET.get("dry_run", "").lower() in TRUE
            or request.headers.get("X-Loom-Dry-Run", "").lower() in TRUE)


def _wait_timeout(request: Request) -> float:
    """`wait_timeout` (query) or `X-Loom-Wait-Timeout` (header), 0 < t <= MAX_WAIT_TIMEOUT.

    Anything else (-1, nan, inf, garbage, too long) is 400: silently waiting the
    default instead is not what the client asked for.
    """
    raw = request.GET.get("wait_timeout")
    if raw is None:
        raw = request.headers.get("X-Loom-Wait-Timeout")
    if raw is None:
        return DEFAULT_WAIT_TIMEOUT
    return validate.positive_seconds(raw.strip(), "wait_timeout", MAX_WAIT_TIMEOUT)


def make_app(
    store: Store, runtime: Runtime, auth: Optional[Authenticator] = None, **options: Any
) -> LoomApi:
    """The WSGI app. `auth=None` means every caller is admin (serve on loopback only)."""
    return LoomApi(store, runtime, auth, **options)


def _own_ends(change: Mapping[str, Any], project_id: str) -> bool:
    """A reachability change a member may see: between the project's own ports, or
    between one of them and the outside (through its floating IP)."""
    ends = (change["from"], change["to"])
    return all(e.get("project_id") == project_id or "outside" in e for e in ends) and \
        any(e.get("project_id") == project_id for e in ends)
