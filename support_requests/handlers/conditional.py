"""Conditional GETs for polling: strong ``ETag``s and ``If-None-Match`` (RFC 9110).

The detail and list operations answer ``200`` with an ``ETag`` and
``Cache-Control: private, no-cache``; a poll that sends the tag back in
``If-None-Match`` gets ``304 Not Modified`` with no body while nothing the
caller sees has changed. A tag is computed from what the response shows, never
from the token, so a refreshed token (same ``sub``) still revalidates.

Lists are revalidated by their handlers. A detail poll is the hot path of a
chat-like screen, so ``Revalidation`` answers it in front of the framework's
routing, validation and parameter handling: token, role, one primary-key
lookup, rate limit, ``304``. Whatever it does not answer goes down the normal
stack, which answers it as if the middleware were not there.

- Detail: ``"<view><revision>-<id>-<version>"``; a request's ``version`` is
  bumped by every change to it, messages included, and its ``customer_version``
  (the mobile view's) by every change the customer sees: not by internal notes
  nor tags. The mobile tag ends in ``-r`` while the customer may rate the
  request: its 14 days run out with no change to the request, and ``rate``
  leaves ``allowedActions`` then.
- Badge (``GET /api/mobile/unread``): ``"<view><revision>u-<unread>-<requests>"``, its
  two numbers, which are all it shows.
- List: a hash of the view, the caller's scope (a customer's own list), the
  query, and each row's (id, version) on the page (with, on mobile, whether
  the customer may rate it) plus whether another page follows.

``If-None-Match`` (RFC 9110, 13.1.2) is ``*`` or a list of entity tags, compared
weakly (a ``W/`` prefix is ignored). A value that does not parse is ignored, as
if absent. The condition is evaluated only once the request would otherwise be a
``200``: a request that is not the caller's stays a 404 whatever the header says.

No ``Vary: Authorization``: it would make a client's HTTP cache drop its copy
whenever the token is refreshed, and the tags already depend on the caller.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson
from connexion import request
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from support_requests.domain.errors import NotFound
from support_requests.domain.lifecycle import Actor
from support_requests.domain.principal import Principal
from support_requests.domain.read_state import Badge
from support_requests.framework.routing import path_template
from support_requests.handlers.auth import (
    TokenVerifier,
    authenticate,
    bearer_token,
    required_role,
)
from support_requests.handlers.observability import remember_caller, remember_operation
from support_requests.handlers.problems import HttpProblem
from support_requests.handlers.render import envelope
from support_requests.handlers.validation import ContractParameterValidator
from support_requests.storage.support_desk import Page, PageVersions, RequestRecord, SupportDesk

HEADER = "If-None-Match"
CACHE_CONTROL = "private, no-cache"
# Bumped whenever a view renders the same stored data differently (a new field, a new
# format), so that no client keeps revalidating a copy of the old shape.
REVISION = 2

# One element of the list (RFC 9110, 5.6.1 and 8.8.3): optional whitespace, an entity tag
# or nothing (an empty element), optional whitespace, then a comma or the end.
_ELEMENT = re.compile(r'[ \t]*(?:(?:W/)?"([\x21\x23-\x7e\x80-\xff]*)")?[ \t]*(?:,|\Z)')


class View(Enum):
    """Which representation a tag names: the same request renders differently per API."""

    MOBILE = "m"
    ADMIN = "a"


@dataclass(frozen=True)
class IfNoneMatch:
    """A parsed ``If-None-Match``: ``*``, or the opaque parts of the tags it lists."""

    any: bool
    opaque_tags: frozenset[str]

    def matches(self, etag: str) -> bool:
        """Weak comparison of the current ``etag`` (a quoted strong tag) with the list."""
        return self.any or etag.strip('"') in self.opaque_tags


def parse(value: str) -> IfNoneMatch | None:
    """The header's condition; None when it is not ``*`` nor a list of tags, or names none."""
    if value.strip(" \t") == "*":
        return IfNoneMatch(any=True, opaque_tags=frozenset())
    tags: set[str] = set()
    position = 0
    while position < len(value):
        element = _ELEMENT.match(value, position)
        if element is None:
            return None
        if element.group(1) is not None:
            tags.add(element.group(1))
        position = element.end()
    return IfNoneMatch(any=False, opaque_tags=frozenset(tags)) if tags else None


def if_none_match() -> IfNoneMatch | None:
    """The current request's ``If-None-Match``; None when absent, malformed or empty."""
    # Several field lines are one comma-separated list (RFC 9110, 5.3).
    values = request.headers.getlist(HEADER)
    return parse(", ".join(values)) if values else None


def range_header() -> str | None:
    """The current request's ``Range`` (RFC 9110, 14.2), as sent; None when absent."""
    value: str | None = request.headers.get("range")
    return value


def detail_tag(view: View, request_id: int, version: int, *, rating_open: bool = False) -> str:
    """The ``ETag`` of a request's detail at ``version`` (while its customer may rate it)."""
    rating = "-r" if rating_open else ""
    return f'"{view.value}{REVISION}-{request_id}-{version}{rating}"'


def list_tag(view: View, query: Mapping[str, Any], page: PageVersions) -> str:
    """The ``ETag`` of one page of a listing: the query it answers and the rows it shows."""
    canonical = orjson.dumps(
        [view.value, REVISION, query, page.rows, page.has_more], option=orjson.OPT_SORT_KEYS
    )
    digest = hashlib.blake2b(canonical, digest_size=16).digest()
    # base64url, not hex: 32 hex digits would read as a UUID to anyone scanning for one.
    return f'"{view.value}{REVISION}l-{base64.urlsafe_b64encode(digest).rstrip(b"=").decode()}"'


def badge_tag(shown: Badge) -> str:
    """The ``ETag`` of a customer's badge: its two numbers are the whole representation."""
    return f'"{View.MOBILE.value}{REVISION}u-{shown.unread_count}-{shown.requests_with_unread}"'


def validators(etag: str) -> dict[str, str]:
    """The headers a ``200`` of a conditional GET carries."""
    return {"ETag": etag, "Cache-Control": CACHE_CONTROL}


def not_modified(etag: str) -> Response:
    """``304 Not Modified``: the tag and caching headers, no body."""
    return Response(status_code=304, headers=validators(etag))


async def listing(
    view: View,
    query: Mapping[str, Any],
    versions: Callable[[], Awaitable[PageVersions]],
    page: Callable[[], Awaitable[Page]],
    item: Callable[[RequestRecord], dict[str, Any]],
) -> Response:
    """A page of a listing, or ``304`` when the caller's copy is current: with a condition,
    the page's ``versions`` are read first (one statement) and the page only if they
    changed."""
    condition = if_none_match()
    if condition is not None:
        etag = list_tag(view, query, await versions())
        if condition.matches(etag):
            return not_modified(etag)
    found = await page()
    return envelope(
        "Support requests fetched successfully",
        [item(record) for record in found.records],
        meta={"nextCursor": found.next_cursor},
        headers=validators(list_tag(view, query, found.versions)),
    )


def badge(shown: Badge, body: dict[str, Any]) -> Response:
    """The customer's badge with its tag, or ``304`` when the caller's copy is current."""
    etag = badge_tag(shown)
    condition = if_none_match()
    if condition is not None and condition.matches(etag):
        return not_modified(etag)
    return envelope("Unread count fetched successfully", body, headers=validators(etag))


def detail(view: View, record: RequestRecord, shown: dict[str, Any]) -> Response:
    """A request's detail with its tag (a current poll is answered before the handler)."""
    row = record.row
    if view is View.MOBILE:
        etag = detail_tag(view, row.id, row.customer_version, rating_open=record.rating_open)
    else:
        etag = detail_tag(view, row.id, row.version)
    return envelope("Support request fetched successfully", shown, headers=validators(etag))


# -- the detail poll's fast path -----------------------------------------------------------

DETAIL_OPERATIONS = {
    "getSupportRequest": View.MOBILE,
    "adminGetSupportRequest": View.ADMIN,
}
_READS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class _DetailRoute:
    """A detail operation as the spec declares it: its route, parameters, role and view."""

    operation_id: str
    path: re.Pattern[str]
    parameters: ContractParameterValidator
    role: Actor
    view: View


def _detail_routes(spec: dict[str, Any]) -> list[_DetailRoute]:
    """The spec's two detail GETs, matched and checked as the normal stack does."""
    schemes = spec["components"]["securitySchemes"]
    routes = []
    for template, item in spec["paths"].items():
        operation = item.get("get", {})
        view = DETAIL_OPERATIONS.get(operation.get("operationId", ""))
        if view is None:
            continue
        declared = item.get("parameters", []) + operation.get("parameters", [])
        (requirement,) = operation["security"]
        (scheme,) = requirement
        routes.append(
            _DetailRoute(
                operation_id=operation["operationId"],
                path=compile_path(path_template(template))[0],
                parameters=ContractParameterValidator(
                    [_resolved(spec, p) for p in declared], uri_parser=None
                ),
                role=required_role(schemes[scheme]),
                view=view,
            )
        )
    if len(routes) != len(DETAIL_OPERATIONS):
        raise ValueError(f"the spec does not declare each of {sorted(DETAIL_OPERATIONS)}")
    return routes


def _resolved(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    reference = node.get("$ref")
    if reference is None:
        return node
    for part in reference.removeprefix("#/").split("/"):
        spec = spec[part]
    return spec


class Revalidation:
    """``304`` for a detail poll whose ``If-None-Match`` names the current tag, before the
    framework's routing, validation and handler stack.

    It answers only a ``GET`` or ``HEAD`` of a detail path with no query string and no
    body, whose id and ``If-None-Match`` pass the operation's own parameter validator,
    whose ``If-None-Match`` names tags, and whose bearer token passes the normal path's
    ``authenticate`` for the operation's role; then it looks the version up (one
    primary-key probe, scoped to the customer on mobile), and if a tag matches, counts
    the read against the caller's rate limit and answers ``304``. Everything else,
    including a request that is not the caller's, a refused token and a changed request,
    goes on to the normal stack unchanged, which answers it the same way.

    It sits inside Connexion's exception middleware, so a 429 or a database failure
    becomes the same problem response as anywhere else; it records the operation and the
    caller for the access log and the rate limiter.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        spec: dict[str, Any],
        desk: SupportDesk,
        verifier: TokenVerifier,
        rate_limit: Callable[[ASGIApp], ASGIApp],
    ) -> None:
        self.app = app
        self._routes = _detail_routes(spec)
        self._desk = desk
        self._verifier = verifier
        self._rate_limit = rate_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answered = (
            scope["type"] == "http"
            and scope["method"] in _READS
            and not scope.get("query_string")
            and await self._answer(scope, receive, send)
        )
        if not answered:
            await self.app(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer ``304`` if the poll is one this fast path serves and is current."""
        headers = Headers(scope=scope)
        values = headers.getlist(HEADER)
        if not values or headers.get("content-length", "0") != "0":
            return False
        if "transfer-encoding" in headers:
            return False
        target = self._target(scope)
        if target is None:
            return False
        route, request_id = target
        condition = parse(", ".join(values))
        if condition is None:
            return False
        token = bearer_token(headers.get("authorization"))
        if token is None:
            return False
        try:
            principal = await authenticate(self._verifier, token, route.role)
            etag = await self._current_tag(route.view, principal, request_id)
        except (HttpProblem, NotFound):
            return False  # the normal stack answers the same 401, 403, 503 or 404
        if not condition.matches(etag):
            return False
        remember_operation(scope, route.operation_id)
        remember_caller(scope, principal)
        await self._rate_limit(not_modified(etag))(scope, receive, send)
        return True

    async def _current_tag(self, view: View, principal: Principal, request_id: int) -> str:
        """The detail's tag as the handler would send it now: one primary-key lookup."""
        if view is View.MOBILE:
            found = await self._desk.version_for_customer(principal, request_id)
            return detail_tag(view, request_id, found.version, rating_open=found.rating_open)
        return detail_tag(
            view, request_id, await self._desk.version_for_admin(principal, request_id)
        )

    def _target(self, scope: Scope) -> tuple[_DetailRoute, int] | None:
        """The detail route the path matches and its id, if its parameters are valid."""
        for route in self._routes:
            match = route.path.match(scope["path"])
            if match is None:
                continue
            try:
                (request_id,) = route.parameters.path_values(match.groupdict()).values()
                route.parameters.validate_query(scope)
            except HttpProblem:
                return None  # the normal stack answers the same 400 or 422
            return route, request_id
        return None
