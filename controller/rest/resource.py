"""Generic Neutron collection behaviour: list, show, create, update, delete.

Resource modules (networks, subnets, ports) supply the attribute specs, the view,
visibility and the create/update/delete logic; this module supplies what Neutron
does the same way for every collection: filters (repeated = OR), `fields`,
sorting, pagination, bulk create, 404-for-invisible, and running each write as a
single store transaction whose validation reads the newest snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Optional
from urllib.parse import urlencode

from webob import Request

from controller import intent as model
from controller.rest.auth import Principal
from controller.rest.errors import InvalidInput, PolicyNotAuthorized, not_found
from controller.rest.index import IntentIndex
from controller.rest.validate import Attr, check_item, parse_ip, resource_items
from controller.runtime import Runtime
from controller.store.txn import TxnHelper

RESERVED_PARAMS = {
    "fields",
    "limit",
    "marker",
    "sort_key",
    "sort_dir",
    "page_reverse",
    "wait",
    "wait_timeout",
    "verbose",
}


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def canonical_ip(value: str) -> str:
    """Canonical text of an address; zone suffixes refused (validate.parse_ip)."""
    return str(parse_ip(value))


@dataclass
class ViewContext:
    intent: model.Intent
    index: IntentIndex
    runtime: Runtime
    principal: Principal


class Resource:
    """Subclass per collection; see networks.py for an example."""

    kind = ""  # "Network": used in NetworkNotFound
    singular = ""
    plural = ""
    intent_attr = ""
    attrs: Mapping[str, Attr] = {}

    # -- per-resource hooks -----------------------------------------------------
    def visible(self, principal: Principal, obj: Any, intent: model.Intent) -> bool:
        raise NotImplementedError

    def may_modify(self, principal: Principal, obj: Any, intent: model.Intent) -> bool:
        raise NotImplementedError

    def view(self, obj: Any, ctx: ViewContext) -> dict[str, Any]:
        raise NotImplementedError

    def create(self, principal: Principal, item: dict[str, Any], helper: TxnHelper) -> Any:
        raise NotImplementedError

    def update(
        self, principal: Principal, obj: Any, changes: dict[str, Any], helper: TxnHelper
    ) -> Any:
        raise NotImplementedError

    def delete(self, principal: Principal, obj: Any, helper: TxnHelper) -> None:
        raise NotImplementedError

    def match_special(self, key: str, values: list[str], view: Mapping[str, Any]) -> Optional[bool]:
        """Filters that are not plain scalar equality (e.g. fixed_ips=ip_address=...)."""
        return None

    # -- shared behaviour ---------------------------------------------------------
    def objects(self, intent: model.Intent) -> Mapping[str, Any]:
        return getattr(intent, self.intent_attr)  # type: ignore[no-any-return]

    def lookup(self, principal: Principal, intent: model.Intent, object_id: str) -> Any:
        obj = self.objects(intent).get(object_id)
        if obj is None or not self.visible(principal, obj, intent):
            raise not_found(self.kind, object_id)
        return obj

    def lookup_for_write(
        self, principal: Principal, intent: model.Intent, object_id: str, action: str
    ) -> Any:
        obj = self.lookup(principal, intent, object_id)
        if not self.may_modify(principal, obj, intent):
            raise PolicyNotAuthorized(f"{action}_{self.singular}")
        return obj

    def list_view(self, request: Request, ctx: ViewContext) -> dict[str, Any]:
        params = request.GET
        filters = self._filters(params)
        views = [
            self.view(o, ctx)
            for o in self.objects(ctx.intent).values()
            if self.visible(ctx.principal, o, ctx.intent)
        ]
        views = [v for v in views if all(self._matches(k, vals, v) for k, vals in filters.items())]
        views = self._sorted(views, params)
        views, links = self._paginate(views, request)
        body: dict[str, Any] = {self.plural: [select_fields(v, params) for v in views]}
        if links:
            body[f"{self.plural}_links"] = links
        return body

    def show_view(self, request: Request, ctx: ViewContext, object_id: str) -> dict[str, Any]:
        obj = self.lookup(ctx.principal, ctx.intent, object_id)
        return {self.singular: select_fields(self.view(obj, ctx), request.GET)}

    def _filters(self, params: Any) -> dict[str, list[str]]:
        filters: dict[str, list[str]] = {}
        for key in params:
            if key in RESERVED_PARAMS or key in filters:
                continue
            if key not in self.attrs or not self.attrs[key].filter:
                raise InvalidInput(f"'{key}' is not an allowed filter for {self.plural}")
            filters[key] = params.getall(key)
        return filters

    def _matches(self, key: str, values: list[str], view: Mapping[str, Any]) -> bool:
        special = self.match_special(key, values, view)
        if special is not None:
            return special
        actual = view.get(key)
        for raw in values:
            try:
                wanted = self.attrs[key].convert(raw)
            except InvalidInput:
                continue  # a value the attribute can never hold matches nothing
            if wanted == actual:
                return True
        return False

    def _sorted(self, views: list[dict[str, Any]], params: Any) -> list[dict[str, Any]]:
        keys = params.getall("sort_key")
        dirs = params.getall("sort_dir")
        views.sort(key=lambda v: (v.get("created_at") or "", v["id"]))
        if not keys:
            return views
        for key in keys:
            if key not in self.attrs or not self.attrs[key].filter:
                raise InvalidInput(f"'{key}' is not a valid sort key for {self.plural}")
        if any(d not in ("asc", "desc") for d in dirs):
            raise InvalidInput("sort_dir must be 'asc' or 'desc'")
        for i in reversed(range(len(keys))):  # stable sorts, least significant key first
            desc = (dirs[i] if i < len(dirs) else "asc") == "desc"
            views.sort(key=_sort_key(keys[i]), reverse=desc)
        return views

    def _paginate(
        self, views: list[dict[str, Any]], request: Request
    ) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
        params = request.GET
        marker = params.get("marker")
        if marker is not None:
            ids = [v["id"] for v in views]
            if marker not in ids:
                raise not_found(self.kind, marker)
            views = views[ids.index(marker) + 1 :]
        limit_raw = params.get("limit")
        if limit_raw is None:
            return views, []
        try:
            limit = int(limit_raw)
            if limit < 0:
                raise ValueError
        except ValueError:
            raise InvalidInput(f"limit must be a non-negative integer, got '{limit_raw}'") from None
        if limit == 0 or len(views) <= limit:
            return views, []
        page = views[:limit]
        query = [(k, v) for k, v in params.items() if k != "marker"] + [("marker", page[-1]["id"])]
        return page, [
            {"rel": "next", "href": f"{request.host_url}{request.path}?{urlencode(query)}"}
        ]

    # -- writes -------------------------------------------------------------------
    def parse_create(self, request: Request) -> tuple[list[dict[str, Any]], bool]:
        items, bulk = resource_items(request, self.singular, self.plural, allow_bulk=True)
        return [check_item(i, self.attrs, create=True) for i in items], bulk

    def parse_update(self, request: Request) -> dict[str, Any]:
        items, _ = resource_items(request, self.singular, self.plural, allow_bulk=False)
        return check_item(items[0], self.attrs, create=False)


def _sort_key(key: str) -> Callable[[dict[str, Any]], tuple[bool, Any]]:
    def value(view: dict[str, Any]) -> tuple[bool, Any]:
        v = view.get(key)
        return (v is None, "" if v is None else v)

    return value


def select_fields(view: dict[str, Any], params: Any) -> dict[str, Any]:
    fields: list[str] = []
    for value in params.getall("fields"):
        fields.extend(f for f in value.split(",") if f)
    if not fields:
        return view
    return {k: v for k, v in view.items() if k in fields}


Factory = Callable[[], Resource]
