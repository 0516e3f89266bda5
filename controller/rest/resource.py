"""Generic Neutron collection behaviour: list, show, create, update, delete.

Resource modules (networks, subnets, ports) supply the attribute specs, the view,
visibility and the create/update/delete logic; this module supplies what Neutron
does the same way for every collection: filters (repeated = OR), `fields`,
sorting, pagination, bulk create, 404-for-invisible, and running each write as a
single store transaction whose validation reads the newest snapshot.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Optional
from urllib.parse import urlencode

from webob import Request

from controller import intent as model
from controller.rest.auth import Principal
from controller.rest.errors import InvalidInput, PolicyNotAuthorized, not_found
from controller.rest.index import IntentIndex, index_of
from controller.rest.snapshot_index import Ordered, grouped, ordered, positions
from controller.rest.validate import Attr, boolean, check_item, parse_ip, resource_items
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


class ViewContext:
    """What views of one snapshot share. `index` (None: made on first use, as a port's
    view never needs it: an answer to a create derives no index for it)."""

    __slots__ = ("intent", "_index", "runtime", "principal")

    def __init__(self, intent: model.Intent, index: Optional[IntentIndex], runtime: Runtime,
                 principal: Principal) -> None:
        self.intent = intent
        self._index = index
        self.runtime = runtime
        self.principal = principal

    @property
    def index(self) -> IntentIndex:
        idx = self._index
        if idx is None:
            idx = self._index = index_of(self.intent)
        return idx


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

    # View keys whose value comes from the object alone (no runtime question), each as
    # getter(obj, intent) returning exactly what `view` would hold: lists filter and
    # sort on these without building views. Keys left out make lists build views.
    cheap_fields: Mapping[str, Callable[[Any, model.Intent], Any]] = {}
    # Filter keys that `match_special` answers (not plain equality): never indexed.
    special_filters: frozenset[str] = frozenset()

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
        """Filter, sort and page the table first, then build the views of the page only.

        Rows answer a filter or sort key from `cheap_fields` when they can, so a
        view (and its runtime questions: status, binding) is built only for what is
        returned. Without `sort_key`, the table's default order is sorted once per
        snapshot (`snapshot_index.ordered`) and a marker is found by bisection, so a
        page costs what it returns, not what the table holds.
        """
        params = request.GET
        filters = self._filters(params)
        match = _Matcher(self, filters, ctx)
        keys = params.getall("sort_key")
        if keys:
            rows = [r for r in self._rows_in_order(ctx) if match(r)]
            rows = self._sorted(rows, params)
            page, more, reverse = self._paginate(rows, request)
        else:
            page, more, reverse = self._walk(self._rows_in_order(ctx), request, match)
        fields = requested_fields(params)
        body: dict[str, Any] = {self.plural: [_select(r.full(), fields) for r in page]}
        if more:
            body[f"{self.plural}_links"] = [_page_link(request, page, reverse)]
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

    def _order_key(self, intent: model.Intent) -> Optional[Callable[[Any], tuple[str, str]]]:
        """The default list order, (created_at, id), from the objects when both are cheap."""
        created, ident = self.cheap_fields.get("created_at"), self.cheap_fields.get("id")
        if created is None or ident is None:
            return None
        return lambda o: (created(o, intent) or "", ident(o, intent))

    def _rows_in_order(self, ctx: ViewContext) -> _Rows:
        key = self._order_key(ctx.intent)
        if key is not None:
            return _Rows(self, ctx, ordered(ctx.intent, self.intent_attr, key))
        rows = [_Row(self, ctx, o) for o in self.objects(ctx.intent).values()]
        rows.sort(key=lambda r: (r.get("created_at") or "", r["id"]))
        return _Rows(self, ctx, None, rows)

    def _sorted(self, rows: list[_Row], params: Any) -> list[_Row]:
        keys = params.getall("sort_key")
        dirs = params.getall("sort_dir")
        for key in keys:
            if key not in self.attrs or not self.attrs[key].filter:
                raise InvalidInput(f"'{key}' is not a valid sort key for {self.plural}")
        if any(d not in ("asc", "desc") for d in dirs):
            raise InvalidInput("sort_dir must be 'asc' or 'desc'")
        for i in reversed(range(len(keys))):  # stable sorts, least significant key first
            desc = (dirs[i] if i < len(dirs) else "asc") == "desc"
            rows.sort(key=_sort_key(keys[i]), reverse=desc)
        return rows

    def _marker(self, request: Request) -> Optional[str]:
        return request.GET.get("marker")  # type: ignore[no-any-return]

    def _paging(self, request: Request) -> tuple[Optional[int], bool]:
        """(limit, page_reverse); limit None or 0 means every row."""
        params = request.GET
        reverse = boolean(params.get("page_reverse", False))
        limit_raw = params.get("limit")
        if limit_raw is None:
            return None, reverse
        try:
            limit = int(limit_raw)
            if limit < 0:
                raise ValueError
        except ValueError:
            raise InvalidInput(f"limit must be a non-negative integer, got '{limit_raw}'") from None
        return limit or None, reverse

    def _paginate(
        self, rows: list[_Row], request: Request
    ) -> tuple[list[_Row], bool, bool]:
        """Page of rows already filtered and sorted: (page, more beyond it, reverse)."""
        marker = self._marker(request)
        at = None
        if marker is not None:
            at = next((i for i, r in enumerate(rows) if r["id"] == marker), None)
            if at is None:
                raise not_found(self.kind, marker)
        limit, reverse = self._paging(request)
        if reverse:
            before = rows[: len(rows) if at is None else at]
            page = before if limit is None else before[-limit:]
            return page, limit is not None and len(before) > limit, True
        after = rows if at is None else rows[at + 1 :]
        page = after if limit is None else after[:limit]
        return page, limit is not None and len(after) > limit, False

    def _walk(
        self, rows: _Rows, request: Request, match: _Matcher
    ) -> tuple[list[_Row], bool, bool]:
        """Page of the table in its default order, visiting only the rows it needs:
        those an equality filter's index names (`_candidates`), else every row from
        the marker on until the page is full."""
        marker = self._marker(request)
        match.check(rows)
        at = None
        if marker is not None:
            at = rows.index_of(marker, match)
            if at is None:
                raise not_found(self.kind, marker)
        limit, reverse = self._paging(request)
        want = None if limit is None else limit + 1
        candidates = self._candidates(rows, match)
        if candidates is None:
            if reverse:
                indices: Iterable[int] = range((len(rows) if at is None else at) - 1, -1, -1)
            else:
                indices = range(0 if at is None else at + 1, len(rows))
        elif reverse:
            indices = reversed(candidates[: len(candidates) if at is None
                                          else bisect.bisect_left(candidates, at)])
        else:
            indices = candidates[0 if at is None else bisect.bisect_right(candidates, at):]
        found = rows.collect(indices, match, want)
        if reverse:
            found.reverse()
            page = found if limit is None else found[-limit:]
        else:
            page = found if limit is None else found[:limit]
        return page, limit is not None and len(found) > limit, reverse

    def _candidates(self, rows: _Rows, match: _Matcher) -> Optional[list[int]]:
        """Positions (ascending) of the only rows that can pass the most selective
        plain equality filter, from its per-snapshot index; None: no such filter."""
        if rows.order is None:
            return None
        best: Optional[list[Mapping[str, Any]]] = None
        best_size = 0
        intent = rows.ctx.intent
        for key, values in match.filters.items():
            getter = self.cheap_fields.get(key)
            if getter is None or key in self.special_filters:
                continue
            index = grouped(intent, self.intent_attr, key,
                            lambda o, g=getter: g(o, intent))  # type: ignore[misc]
            if index is None:
                continue
            hits: list[Mapping[str, Any]] = []
            for wanted in match.converted(key, values):
                try:
                    found = index.get(wanted)
                except TypeError:  # an unhashable value: compare row by row instead
                    break
                if found:
                    hits.append(found)
            else:
                size = sum(len(h) for h in hits)
                if best is None or size < best_size:
                    best, best_size = hits, size
        return None if best is None else positions(rows.order, best)

    # -- writes -------------------------------------------------------------------
    def parse_create(self, request: Request) -> tuple[list[dict[str, Any]], bool]:
        items, bulk = resource_items(request, self.singular, self.plural, allow_bulk=True)
        return [check_item(i, self.attrs, create=True) for i in items], bulk

    def parse_update(self, request: Request) -> dict[str, Any]:
        items, _ = resource_items(request, self.singular, self.plural, allow_bulk=False)
        return check_item(items[0], self.attrs, create=False)


def _sort_key(key: str) -> Callable[[Mapping[str, Any]], tuple[bool, Any]]:
    def value(view: Mapping[str, Any]) -> tuple[bool, Any]:
        v = view.get(key)
        return (v is None, "" if v is None else v)

    return value


def select_fields(view: dict[str, Any], params: Any) -> dict[str, Any]:
    return _select(view, requested_fields(params))


def requested_fields(params: Any) -> list[str]:
    """`fields` (repeated or comma separated); read once per request, not per row."""
    fields: list[str] = []
    for value in params.getall("fields"):
        fields.extend(f for f in value.split(",") if f)
    return fields


def _select(view: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    if not fields:
        return view
    return {k: v for k, v in view.items() if k in fields}


class _Row(Mapping[str, Any]):
    """One object of a list, read as its view; the view is built only when a key
    without a cheap getter is asked for (or the row is returned)."""

    __slots__ = ("obj", "_resource", "_ctx", "_view")

    def __init__(self, resource: Resource, ctx: ViewContext, obj: Any) -> None:
        self.obj, self._resource, self._ctx = obj, resource, ctx
        self._view: Optional[dict[str, Any]] = None

    def __getitem__(self, key: str) -> Any:
        if self._view is None:
            getter = self._resource.cheap_fields.get(key)
            if getter is not None:
                return getter(self.obj, self._ctx.intent)
        return self.full()[key]

    def full(self) -> dict[str, Any]:
        if self._view is None:
            self._view = self._resource.view(self.obj, self._ctx)
        return self._view

    def __iter__(self) -> Iterator[str]:
        return iter(self.full())

    def __len__(self) -> int:
        return len(self.full())


class _Rows:
    """A table in its default list order: objects sorted once per snapshot (`order`),
    or, for a resource without cheap order keys, rows sorted by their views."""

    def __init__(self, resource: Resource, ctx: ViewContext, order: Optional[Ordered],
                 rows: Optional[list[_Row]] = None) -> None:
        self.resource, self.ctx, self.order = resource, ctx, order
        self.rows = rows

    def __len__(self) -> int:
        return len(self.order.objects) if self.order is not None else len(self.rows or ())

    def row(self, i: int) -> _Row:
        if self.order is not None:
            return _Row(self.resource, self.ctx, self.order.objects[i])
        assert self.rows is not None
        return self.rows[i]

    def __iter__(self) -> Iterator[_Row]:
        return (self.row(i) for i in range(len(self)))

    def index_of(self, object_id: str, match: _Matcher) -> Optional[int]:
        """Position of the marker, if it is a row the list returns (else Neutron's 404)."""
        if self.order is None:
            at = next((i for i, r in enumerate(self) if r["id"] == object_id), None)
        else:
            obj = self.resource.objects(self.ctx.intent).get(object_id)
            at = None if obj is None else self.order.position(obj)
            if at is not None and (at >= len(self) or self.order.objects[at] is not obj):
                at = None
        return at if at is not None and match(self.row(at)) else None

    def collect(self, indices: Iterable[int], match: _Matcher, want: Optional[int]) -> list[_Row]:
        """Rows at `indices` that match, in that order, stopping at `want` of them."""
        found: list[_Row] = []
        for i in indices:
            row = self.row(i)
            if match(row):
                found.append(row)
                if want is not None and len(found) >= want:
                    break
        return found


class _Matcher:
    """Whether a row is visible to the caller and passes every filter (repeated = OR)."""

    def __init__(self, resource: Resource, filters: dict[str, list[str]],
                 ctx: ViewContext) -> None:
        self.resource, self.filters, self.ctx = resource, filters, ctx
        self._wanted: dict[str, list[Any]] = {}

    def __call__(self, row: _Row) -> bool:
        if not self.resource.visible(self.ctx.principal, row.obj, self.ctx.intent):
            return False
        return all(self._one(key, values, row) for key, values in self.filters.items())

    def check(self, rows: _Rows) -> None:
        """A malformed filter value fails the list whenever a row is visible, as when
        every row was matched, even though a page now matches only the rows it needs."""
        if not self.filters:
            return
        for row in rows:
            if self.resource.visible(self.ctx.principal, row.obj, self.ctx.intent):
                self(row)
                return

    def _one(self, key: str, values: list[str], row: _Row) -> bool:
        special = self.resource.match_special(key, values, row)
        if special is not None:
            return special
        actual = row.get(key)
        return any(wanted == actual for wanted in self.converted(key, values))

    def converted(self, key: str, values: list[str]) -> list[Any]:
        """The filter's values as the attribute holds them, converted once per request."""
        wanted = self._wanted.get(key)
        if wanted is None:
            wanted = []
            for raw in values:
                try:
                    wanted.append(self.resource.attrs[key].convert(raw))
                except InvalidInput:
                    continue  # a value the attribute can never hold matches nothing
            self._wanted[key] = wanted
        return wanted


def _page_link(request: Request, page: list[_Row], reverse: bool) -> dict[str, str]:
    """Neutron's link to the next page: the same query, the page's last id as marker
    (with page_reverse, the page before: its first id, rel "previous")."""
    edge = page[0] if reverse else page[-1]
    query = [(k, v) for k, v in request.GET.items() if k != "marker"] + [("marker", edge["id"])]
    return {
        "rel": "previous" if reverse else "next",
        "href": f"{request.host_url}{request.path}?{urlencode(query)}",
    }


Factory = Callable[[], Resource]
