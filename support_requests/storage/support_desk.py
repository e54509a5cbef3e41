"""The transactional operations on support requests.

Each write runs in one transaction: lock the request row, have
``domain.lifecycle`` plan the change, write what the plan says (the row, the
message, the history entries), read back the detail, and put the change's webhook events in
the outbox (``storage/outbox.py``, ``webhooks/events.py``), all in that one transaction: a
change that commits always yields its events, one that rolls back none. A detail read is
one statement
(the request joined with its thread; a second one for its attachments when it has any),
a page one indexed statement, and the version lookups behind conditional GETs one indexed
statement each.
"""

from __future__ import annotations

import functools
from collections import namedtuple
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, cast

import orjson
from sqlalchemy import (
    ColumnElement,
    FromClause,
    Select,
    Table,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from support_requests.domain.clock import now_ms
from support_requests.domain.errors import NotFound
from support_requests.domain.lifecycle import (
    Actor,
    Edit,
    Plan,
    RequestState,
    Status,
    plan_edit,
    plan_internal_note,
    plan_opening,
    plan_rating,
    plan_reply,
    rating_allowed,
)
from support_requests.domain.principal import Principal
from support_requests.domain.read_state import (
    Badge,
    BadgeDelta,
    ReadState,
    after_customer_reply,
    after_staff_reply,
    moves_forward,
    unknown_message,
)
from support_requests.domain.webhooks import CREATED, PUSH
from support_requests.storage import pagination
from support_requests.storage.attachments import (
    SUMMARY_COLUMNS,
    AttachmentSummary,
    attach_uploads,
    attachments_table,
    summary_of,
)
from support_requests.storage.database import Database, DbConnection
from support_requests.storage.idempotency import Keeper, KeyTaken, kept_cte
from support_requests.storage.models import (
    Admin,
    Device,
    Message,
    RequestEvent,
    RequestTag,
    SupportRequest,
)
from support_requests.storage.outbox import Subscribers, enqueue, read_subscribers
from support_requests.storage.outbox import endpoints_table as outbox_endpoints
from support_requests.storage.read_state import (
    BADGE,
    THREAD_AFTER,
    add_to_badge,
    badge_cte,
    badge_parameters,
    inboxes_table,
)
from support_requests.webhooks import events as webhook_events

requests_table = cast(Table, SupportRequest.__table__)
tags_table = cast(Table, RequestTag.__table__)
messages_table = cast(Table, Message.__table__)
events_table = cast(Table, RequestEvent.__table__)
admins_table = cast(Table, Admin.__table__)
devices_table = cast(Table, Device.__table__)

REQUEST_COLUMNS = tuple(requests_table.c)
MESSAGE_COLUMNS = tuple(messages_table.c)
# A listing's rows by reference: staff see every change, a customer what they are shown,
# and whether they may rate (which the time alone changes: see ``_RATING_COLUMNS``).
VERSION_COLUMNS = (requests_table.c.id, requests_table.c.version)
_RATING_COLUMNS = (
    requests_table.c.status,
    requests_table.c.last_resolved_at,
    requests_table.c.closed_at,
)
CUSTOMER_VERSION_COLUMNS = (
    requests_table.c.id,
    requests_table.c.customer_version,
    *_RATING_COLUMNS,
)

# Hot statements, built once: SQLAlchemy then finds them in its compiled cache by a
# memoised key instead of rebuilding and hashing an expression per request.
_REQUEST = select(*REQUEST_COLUMNS).where(requests_table.c.id == bindparam("request_id"))
_OWNED_REQUEST = _REQUEST.where(requests_table.c.customer_id == bindparam("customer_id"))
# Whether any webhook endpoint is enabled, read in the statement that locks the row a change
# makes: a service without webhooks then reads nothing more for them (the endpoints are read
# only when this says some exist, later in the same transaction).
_WEBHOOKS_ON = (
    select(outbox_endpoints.c.id).where(outbox_endpoints.c.enabled).exists().label("webhooks_on")
)
_LOCK_REQUEST = _REQUEST.add_columns(_WEBHOOKS_ON).with_for_update()
_LOCK_OWNED_REQUEST = _OWNED_REQUEST.add_columns(_WEBHOOKS_ON).with_for_update()
# PostgreSQL: a reply's lock also takes the id its message will have, so that the reply's
# writes need nothing back from each other and go as one statement (``_reply_writes``).
_NEXT_MESSAGE_ID = func.nextval(func.pg_get_serial_sequence("messages", "id")).label(
    "next_message_id"
)
# By (the caller's own request, SQLite).
_LOCK_FOR_REPLY = {
    (False, True): _LOCK_REQUEST,
    (True, True): _LOCK_OWNED_REQUEST,
    (False, False): _LOCK_REQUEST.add_columns(_NEXT_MESSAGE_ID),
    (True, False): _LOCK_OWNED_REQUEST.add_columns(_NEXT_MESSAGE_ID),
}
# An admin's edit locks the request and learns whether the assignee asked for is a known
# admin in the same statement.
_LOCK_FOR_EDIT = (
    select(
        *REQUEST_COLUMNS,
        select(admins_table.c.id)
        .where(admins_table.c.id == bindparam("assignee_id"))
        .exists()
        .label("assignee_known"),
        _WEBHOOKS_ON,
    )
    .where(requests_table.c.id == bindparam("request_id"))
    .with_for_update()
)
_INSERT_REQUEST = insert(requests_table).returning(requests_table.c.id)
_INSERT_MESSAGE = insert(messages_table).returning(messages_table.c.id)
_INSERT_EVENT = insert(events_table)


def _moved_versions(*, customer_sees: bool) -> dict[str, Any]:
    """What every change sets besides its columns: the version always moves, and the
    customer's too unless the change is one they never see (an internal note, tags)."""
    versions: dict[str, Any] = {"version": requests_table.c.version + 1}
    if customer_sees:
        versions["customer_version"] = requests_table.c.customer_version + 1
    return versions


# The columns to set come with each call's parameters.
_UPDATE_REQUEST = (
    update(requests_table)
    .where(requests_table.c.id == bindparam("changed_id"))
    .values(_moved_versions(customer_sees=True))
)
_UPDATE_REQUEST_FOR_STAFF = (
    update(requests_table)
    .where(requests_table.c.id == bindparam("changed_id"))
    .values(_moved_versions(customer_sees=False))
)
_MESSAGE_WRITTEN = tuple(column.name for column in messages_table.c)
_EVENT_WRITTEN = ("request_id", "type", "actor_type", "actor_id", "at", "changes")


# PostgreSQL: the thread a reply answers with, read by its writes' statement (which sees
# the thread as it was before them: the new message is added from what was written).
_THREAD = (
    select(*MESSAGE_COLUMNS)
    .where(messages_table.c.request_id == bindparam("changed_id"))
    .order_by(messages_table.c.id)
)
_PUBLIC_THREAD = _THREAD.where(messages_table.c.internal.is_(False))


@functools.lru_cache(maxsize=64)
def _reply_writes(
    changed: tuple[str, ...],
    events: int,
    *,
    customer_sees: bool,
    badge: bool,
    thread: Select[Any] | None,
) -> Select[Any]:
    """PostgreSQL: a reply's writes as one statement, by their shape: its message
    (``message_*``, its id taken by the lock), the request's change (``set_*`` for the
    ``changed`` columns, and the versions), its ``events`` history entries (``event<i>_*``)
    and, with ``badge``, the customer's badge (``badge_*``). Data-modifying CTEs run exactly
    once, to completion, in the transaction: all of it or none. The statement answers with
    ``thread`` (``_THREAD`` or ``_PUBLIC_THREAD``), if given, as its snapshot shows it:
    without the message it writes. Built once per shape."""
    message = (
        insert(messages_table)
        .values({name: bindparam(f"message_{name}") for name in _MESSAGE_WRITTEN})
        .cte("message")
    )
    change = (
        update(requests_table)
        .where(requests_table.c.id == bindparam("changed_id"))
        .values(
            {
                **{name: bindparam(f"set_{name}") for name in changed},
                **_moved_versions(customer_sees=customer_sees),
            }
        )
        .cte("change")
    )
    history = (
        insert(events_table)
        .values(
            [
                {
                    name: bindparam(f"event{index}_{name}", type_=events_table.c[name].type)
                    for name in _EVENT_WRITTEN
                }
                for index in range(events)
            ]
        )
        .cte("history")
    )
    statement = (select(literal(1)) if thread is None else thread).add_cte(message, change, history)
    return statement.add_cte(badge_cte()) if badge else statement


# A request's tags, one row each, replaced as a set.
_DELETE_TAGS = delete(tags_table).where(tags_table.c.request_id == bindparam("request_id"))
_INSERT_TAG = insert(tags_table)


def _detail_statement(*, public_only: bool) -> Select[Any]:
    """The detail in one statement: the request on every row, its thread alongside (without
    internal notes for the customer). One statement sees one snapshot on any isolation
    level, so no thread is newer than its request."""
    joined = messages_table.c.request_id == requests_table.c.id
    if public_only:
        joined &= messages_table.c.internal.is_(False)
    return (
        select(*REQUEST_COLUMNS, *(c.label(f"message_{c.name}") for c in MESSAGE_COLUMNS))
        .select_from(requests_table.outerjoin(messages_table, joined))
        .where(requests_table.c.id == bindparam("request_id"))
        .order_by(messages_table.c.id)
    )


_DETAIL = _detail_statement(public_only=False)
# A request's attachments (by ix_attachments_request) with the request's version on every
# row: every change to them (a message taking some, a removal) moves the version, so equal
# versions mean they are the ones of the thread read before.
_DETAIL_ATTACHMENTS = (
    select(requests_table.c.version, attachments_table.c.message_id, *SUMMARY_COLUMNS)
    .select_from(
        requests_table.outerjoin(
            attachments_table, attachments_table.c.request_id == requests_table.c.id
        )
    )
    .where(requests_table.c.id == bindparam("request_id"))
    .order_by(attachments_table.c.message_id, attachments_table.c.position)
)
_OWNED_DETAIL = _detail_statement(public_only=True).where(
    requests_table.c.customer_id == bindparam("customer_id")
)


def _create_statement(*, keyed: bool = False) -> Select[Any]:
    """PostgreSQL: a request, its first message and its ``created`` event in one statement,
    answering with the detail's row. Data-modifying CTEs run exactly once, to completion,
    in the statement's own transaction: all three rows or none. ``keyed``: the request and
    its first message take the ids given (``request_id``, ``message_id``), and the
    statement first stores an Idempotency-Key's answer (``kept_cte``); with the key taken
    it writes nothing and answers no row, and otherwise only the request's id (the caller
    knows the rest: returning the rows made the statement too long for psycopg to prepare
    or cache, over 4,096 characters, and it cost a parse and a plan each time)."""
    if keyed:
        kept = kept_cte()
        columns = ["id", *_CREATED_COLUMNS]
        created = (
            insert(requests_table)
            .from_select(
                columns,
                select(
                    *(
                        bindparam(
                            "request_id" if name == "id" else name,
                            type_=requests_table.c[name].type,
                        )
                        for name in columns
                    )
                ).where(exists(select(kept.c.key))),
            )
            .returning(
                *(
                    requests_table.c[name]
                    for name in (
                        "id",
                        "customer_id",
                        "customer_name",
                        "customer_image",
                        "created_at",
                    )
                )
            )
            .cte("created")
        )
    else:
        created = (
            insert(requests_table)
            .values({name: bindparam(name) for name in _CREATED_COLUMNS})
            .returning(*REQUEST_COLUMNS)
            .cte("created")
        )
    first_message = (
        insert(messages_table)
        .from_select(
            [
                *(["id"] if keyed else []),
                "request_id",
                "author_type",
                "author_id",
                "author_name",
                "author_image",
                "body",
                "created_at",
            ],
            select(
                *([bindparam("message_id", type_=messages_table.c.id.type)] if keyed else []),
                created.c.id,
                bindparam("author_type", type_=messages_table.c.author_type.type),
                created.c.customer_id,
                created.c.customer_name,
                created.c.customer_image,
                bindparam("body", type_=messages_table.c.body.type),
                created.c.created_at,
            ),
        )
        .returning(*MESSAGE_COLUMNS)
        .cte("first_message")
    )
    event = (
        insert(events_table)
        .from_select(
            list(_EVENT_WRITTEN),
            select(
                created.c.id,
                bindparam("event_type", type_=events_table.c.type.type),
                bindparam("author_type", type_=events_table.c.actor_type.type),
                created.c.customer_id,
                created.c.created_at,
                bindparam("changes", type_=events_table.c.changes.type),
            ),
        )
        .cte("created_event")
    )
    if keyed:
        return select(first_message.c.request_id).add_cte(event)
    return (
        select(
            *(created.c[c.name] for c in REQUEST_COLUMNS),
            *(first_message.c[c.name].label(f"message_{c.name}") for c in MESSAGE_COLUMNS),
        )
        .select_from(created.join(first_message, first_message.c.request_id == created.c.id))
        .add_cte(event)
    )


# The create body's ``device`` fields, and the columns that store them.
DEVICE_COLUMNS = {
    "platform": "device_platform",
    "osVersion": "device_os_version",
    "appVersion": "device_app_version",
    "appBuild": "device_app_build",
    "deviceModel": "device_model",
    "locale": "device_locale",
    "timeZone": "device_time_zone",
}
_CREATED_COLUMNS = (
    "customer_id",
    "customer_name",
    "customer_image",
    "category",
    "subject",
    "status",
    "last_customer_message_at",
    "created_at",
    "updated_at",
    "version",
    *DEVICE_COLUMNS.values(),
)
StoredMessage = namedtuple("StoredMessage", [c.name for c in MESSAGE_COLUMNS])  # type: ignore[misc]
# A conditional GET's lookup (every poll runs one): a probe of the primary key.
_VERSION = select(requests_table.c.version).where(requests_table.c.id == bindparam("request_id"))
_OWNED_VERSION = select(requests_table.c.customer_version, *_RATING_COLUMNS).where(
    requests_table.c.id == bindparam("request_id"),
    requests_table.c.customer_id == bindparam("customer_id"),
)
_CREATE = _create_statement()
_CREATE_KEYED = _create_statement(keyed=True)
# A keyed create's first read: the ids its request and first message will take, and the
# enabled endpoints (one row each; one row of NULLs when there is none).
_TAKEN_IDS = select(
    func.nextval(func.pg_get_serial_sequence("support_requests", "id")).label("request_id"),
    func.nextval(func.pg_get_serial_sequence("messages", "id")).label("message_id"),
).cte("taken_ids")
_IDS_AND_SUBSCRIBERS = select(
    _TAKEN_IDS.c.request_id,
    _TAKEN_IDS.c.message_id,
    outbox_endpoints.c.id.label("endpoint_id"),
    outbox_endpoints.c.events,
).select_from(_TAKEN_IDS.outerjoin(outbox_endpoints, outbox_endpoints.c.enabled))
_REQUEST_ID = select(requests_table.c.id).where(requests_table.c.id == bindparam("request_id"))
_EVENTS = (
    select(events_table)
    .where(events_table.c.request_id == bindparam("request_id"))
    .order_by(events_table.c.id)
)
# A push's devices (the customer's, oldest registration first), each row with the customer's
# badge as it stands in this transaction: one statement, none of it without a device.
_DEVICES_AND_BADGE = (
    select(
        devices_table.c.id,
        devices_table.c.platform,
        devices_table.c.token,
        devices_table.c.app_id,
        BADGE.with_only_columns(inboxes_table.c.unread_count).scalar_subquery().label("badge"),
    )
    .where(devices_table.c.customer_id == bindparam("customer_id"))
    .order_by(devices_table.c.registered_at, devices_table.c.id)
)
_ADMINS = select(admins_table.c.id, admins_table.c.name, admins_table.c.image).order_by(
    admins_table.c.name, admins_table.c.id
)


@dataclass
class RequestRecord:
    """A support request as stored, with its thread when one was read, and the thread's
    attachments by message id, each message's in the order its author listed them;
    ``rating_open`` says whether its customer may rate it at the time it was read."""

    row: Any
    messages: list[Any] = field(default_factory=list)
    attachments: dict[int, list[AttachmentSummary]] = field(default_factory=dict)
    rating_open: bool = False


# Runs inside a change's transaction, last, with its result (an idempotency key's answer
# is stored there, so that the answer and the change commit together).
BeforeCommit = Callable[[DbConnection, "RequestRecord"], Awaitable[None]]


def _column_default(column: Any) -> Any:
    """What the database stores in ``column`` when an insert names no value: its server
    default as a literal (``0``, ``1``, ``'[]'``), else None."""
    default = column.server_default
    if default is None:
        return None
    literal_text = str(default.arg.text) if hasattr(default.arg, "text") else str(default.arg)
    if literal_text.startswith("'") and literal_text.endswith("'"):
        literal_text = literal_text[1:-1]
    return orjson.loads(literal_text)


_REQUEST_DEFAULTS = {column.name: _column_default(column) for column in REQUEST_COLUMNS}
_MESSAGE_DEFAULTS = {column.name: _column_default(column) for column in MESSAGE_COLUMNS}
StoredRequest = namedtuple("StoredRequest", [c.name for c in REQUEST_COLUMNS])  # type: ignore[misc]


def _predicted_record(
    parameters: dict[str, Any], request_id: int, message_id: int
) -> RequestRecord:
    """A keyed create's request and first message as the database will store them, from
    the create's parameters, the ids it took, and the columns' defaults."""
    request = {
        **_REQUEST_DEFAULTS,
        **{name: parameters[name] for name in _CREATED_COLUMNS},
        "id": request_id,
    }
    message = {
        **_MESSAGE_DEFAULTS,
        "id": message_id,
        "request_id": request_id,
        "author_type": parameters["author_type"],
        "author_id": parameters["customer_id"],
        "author_name": parameters["customer_name"],
        "author_image": parameters["customer_image"],
        "body": parameters["body"],
        "created_at": parameters["created_at"],
    }
    return RequestRecord(StoredRequest(**request), [StoredMessage(**message)])


class CustomerVersion(NamedTuple):
    """What a customer's view of a request is a function of: their version of it, and
    whether they may rate it now (the time alone closes the window)."""

    version: int
    rating_open: bool


@dataclass
class Page:
    """One page of a listing, the cursor of the next if any, and the page by reference."""

    records: list[RequestRecord]
    next_cursor: str | None
    versions: PageVersions


@dataclass(frozen=True)
class PageVersions:
    """A page by reference: each row's (id, version) in page order (with, on a customer's
    list, whether they may rate it now), and whether more follow.

    A listing's items are a function of each row's version (and rating window), and its next
    cursor of the last row's key and whether more follow: two reads of a page with equal
    ``PageVersions`` show the same page.
    """

    rows: tuple[tuple[Any, ...], ...]
    has_more: bool


@dataclass(frozen=True)
class QueueFilters:
    """The admin queue's filters and sort."""

    status: str | None = None
    category: str | None = None
    assigned: bool | None = None
    assignee_id: str | None = None
    platform: str | None = None
    app_version: str | None = None
    tag: str | None = None
    rated: bool | None = None
    max_score: int | None = None
    sort: str = "-createdAt"


def _state(row: Any) -> RequestState:
    """What the lifecycle reads of a request row."""
    return RequestState(
        id=row.id,
        status=Status(row.status),
        assigned_admin_id=row.assigned_admin_id,
        resolution_note=row.resolution_note,
        resolved_at=row.resolved_at,
        closed_at=row.closed_at,
        last_customer_message_at=row.last_customer_message_at,
        last_admin_message_at=row.last_admin_message_at,
        updated_at=row.updated_at,
        first_response_at=row.first_response_at,
        last_resolved_at=row.last_resolved_at,
        rating_score=row.rating_score,
        rating_comment=row.rating_comment,
        tags=tuple(row.tags or ()),
    )


def _rating_open(row: Any, now: datetime) -> bool:
    """Whether the customer may rate the request ``row`` (any row with the rating columns)
    at ``now``."""
    return rating_allowed(Status(row.status), row.last_resolved_at, row.closed_at, now)


def _read_state(row: Any) -> ReadState:
    """The customer's read state of a request row."""
    return ReadState(row.customer_last_read_message_id, row.unread_count)


def _message_row(
    request_id: int, author: Principal, body: str, now: datetime, *, internal: bool = False
) -> dict[str, Any]:
    """A message's row, but for its id."""
    return {
        "request_id": request_id,
        "author_type": author.role.value,
        "author_id": author.sub,
        "author_name": author.name,
        "author_image": author.picture,
        "body": body,
        "created_at": now,
        "internal": internal,
    }


def _event_rows(
    request_id: int, actor: Principal, plan: Plan, message_id: int | None = None
) -> list[dict[str, Any]]:
    """The rows of ``plan``'s history entries, by ``actor``."""
    return [
        {
            "request_id": request_id,
            "type": event.type,
            "actor_type": actor.role.value,
            "actor_id": actor.sub,
            "at": plan.at,
            "changes": event.stored(message_id),
        }
        for event in plan.events
    ]


def _detail_record(rows: list[Any], request_id: int) -> RequestRecord:
    """A request and its thread from rows shaped as ``_DETAIL``'s."""
    if not rows:
        raise _not_found(request_id)
    first_message = len(REQUEST_COLUMNS)
    messages = [
        StoredMessage._make(row[first_message:]) for row in rows if row[first_message] is not None
    ]
    return RequestRecord(rows[0], messages)


def _attachments_by_message(rows: list[Any]) -> dict[int, list[AttachmentSummary]]:
    """Each message's attachments from rows shaped as ``_DETAIL_ATTACHMENTS``'s."""
    attachments: dict[int, list[AttachmentSummary]] = {}
    for row in rows:
        if row.message_id is not None:
            attachments.setdefault(row.message_id, []).append(summary_of(row[2:]))
    return attachments


def _not_found(request_id: int) -> NotFound:
    return NotFound(f"Support request {request_id} was not found.")


@dataclass(frozen=True)
class _Listing:
    """A listing: its equality filters (column, value), the assignment filter, the sort, and
    the scope its cursors are bound to; the queue's tag, rated and score filters; ``rates``
    when its items show whether the customer may rate."""

    equal: tuple[tuple[str, Any], ...]
    assigned: bool | None
    sort: str
    scope: str
    # What a row's version is to this listing's reader (staff's, or the customer's).
    versions: tuple[Any, ...] = VERSION_COLUMNS
    tag: str | None = None
    rated: bool | None = None
    max_score: int | None = None
    rates: bool = False

    def reference(self, row: Any, now: datetime) -> tuple[Any, ...]:
        """A row by reference: (id, version), and on a customer's list whether they may rate
        it at ``now``."""
        identity, version = self.versions[:2]
        reference = (getattr(row, identity.name), getattr(row, version.name))
        return (*reference, _rating_open(row, now)) if self.rates else reference

    def statement(
        self, columns: tuple[Any, ...], limit: int, cursor: str | None
    ) -> tuple[Select[Any], dict[str, Any]]:
        """The page's statement (one row more than ``limit``) and its parameters."""
        parameters = {f"equal_{name}": value for name, value in self.equal}
        parameters["rows"] = limit + 1
        if cursor is not None:
            parameters["after_moment"], parameters["after_id"] = pagination.decode(
                cursor, self.scope
            )
        if self.tag is not None:
            parameters["tag"] = self.tag
        if self.max_score is not None:
            parameters["max_score"] = self.max_score
        statement = _page_statement(
            columns,
            tuple(name for name, _ in self.equal),
            self.assigned,
            self.sort,
            cursor is not None,
            tagged=self.tag is not None,
            rated=self.rated,
            scored=self.max_score is not None,
        )
        return statement, parameters


def _customer_listing(customer: Principal, status: str | None) -> _Listing:
    """A customer's own list, newest first."""
    # Bound to the customer too: another customer's cursor is not one issued for this list.
    scope = pagination.scope_of(listing="mobile", customer=customer.sub, status=status)
    equal: list[tuple[str, Any]] = [("customer_id", customer.sub)]
    if status is not None:
        equal.append(("status", status))
    return _Listing(tuple(equal), None, "-createdAt", scope, CUSTOMER_VERSION_COLUMNS, rates=True)


def _queue_listing(filters: QueueFilters) -> _Listing:
    """The admin queue, filtered and sorted."""
    # Round 2's filters join the scope only when given, so that the cursors a server issued
    # before them stay valid across the upgrade.
    added = {
        "platform": filters.platform,
        "app_version": filters.app_version,
        "tag": filters.tag,
        "rated": filters.rated,
        "max_score": filters.max_score,
    }
    scope = pagination.scope_of(
        listing="admin",
        status=filters.status,
        category=filters.category,
        assigned=filters.assigned,
        assignee=filters.assignee_id,
        sort=filters.sort,
        **{name: value for name, value in added.items() if value is not None},
    )
    equal: list[tuple[str, Any]] = []
    if filters.status is not None:
        equal.append(("status", filters.status))
    if filters.category is not None:
        equal.append(("category", filters.category))
    if filters.assignee_id is not None:
        equal.append(("assigned_admin_id", filters.assignee_id.lower()))
    if filters.platform is not None:
        equal.append(("device_platform", filters.platform))
    if filters.app_version is not None:
        equal.append(("device_app_version", filters.app_version))
    return _Listing(
        tuple(equal),
        filters.assigned,
        filters.sort,
        scope,
        tag=filters.tag,
        rated=filters.rated,
        max_score=filters.max_score,
    )


@functools.cache
def _page_statement(
    columns: tuple[Any, ...],
    equal: tuple[str, ...],
    assigned: bool | None,
    sort: str,
    after_cursor: bool,
    *,
    tagged: bool = False,
    rated: bool | None = None,
    scored: bool = False,
) -> Select[Any]:
    """A listing's page statement, built once per shape; its values are parameters.

    Filtered by a tag, it walks ``ix_request_tags_tag_created`` (whose ``created_at`` is the
    request's) joined to the requests, so the page's key is the tag row's. Rated and score
    filters name ``rating_score IS NOT NULL`` so the planner may use the partial index
    ``ix_support_requests_rated_created``.
    """
    conditions: list[ColumnElement[bool]] = [
        requests_table.c[name] == bindparam(f"equal_{name}") for name in equal
    ]
    if assigned is True:
        conditions.append(requests_table.c.assigned_admin_id.is_not(None))
    elif assigned is False:
        conditions.append(requests_table.c.assigned_admin_id.is_(None))
    if rated is True or scored:
        conditions.append(requests_table.c.rating_score.is_not(None))
    if rated is False:
        conditions.append(requests_table.c.rating_score.is_(None))
    if scored:
        conditions.append(requests_table.c.rating_score <= bindparam("max_score"))
    source: FromClause = requests_table
    key_column = (
        requests_table.c.updated_at if sort == "-updatedAt" else requests_table.c.created_at
    )
    id_column = requests_table.c.id
    if tagged:
        source = tags_table.join(requests_table, requests_table.c.id == tags_table.c.request_id)
        conditions.append(tags_table.c.tag == bindparam("tag"))
        if sort != "-updatedAt":
            key_column, id_column = tags_table.c.created_at, tags_table.c.request_id
    key = tuple_(key_column, id_column)
    descending = sort.startswith("-")
    if after_cursor:
        after = tuple_(
            bindparam("after_moment", type_=key_column.type),
            bindparam("after_id", type_=requests_table.c.id.type),
        )
        conditions.append(key < after if descending else key > after)
    order = (
        (key_column.desc(), id_column.desc()) if descending else (key_column.asc(), id_column.asc())
    )
    return (
        select(*columns)
        .select_from(source)
        .where(*conditions)
        .order_by(*order)
        .limit(bindparam("rows"))
    )


class SupportDesk:
    """Every operation on support requests, for customers and admins alike.

    ``clock`` is the time every plan and every rating window reads (tests inject one).
    """

    def __init__(self, database: Database, clock: Callable[[], datetime] = now_ms) -> None:
        self.database = database
        self.clock = clock
        self._admins_seen: dict[str, tuple[str | None, str | None]] = {}

    # -- customers -------------------------------------------------------------

    async def create_request(
        self,
        customer: Principal,
        *,
        category: str,
        subject: str,
        message: str,
        attachments: Sequence[str] = (),
        device: dict[str, str] | None = None,
        keeper: Keeper | None = None,
    ) -> RequestRecord:
        """Open a request with its first message (and the customer's ``attachments``
        uploads on it) and its event, all or nothing; ``device`` is the body's device
        context (its fields by their API names), if sent. ``keeper``: an Idempotency-Key's
        answer, stored with the request (``KeyTaken`` when the key's answer is there
        already, and then nothing is written)."""
        plan = plan_opening(category, subject, self.clock())
        sent = device or {}
        request = {
            "customer_id": customer.sub,
            "customer_name": customer.name,
            "customer_image": customer.picture,
            "category": category,
            "subject": subject,
            **plan.changes,
            "created_at": plan.at,
            "version": 1,
            **{column: sent.get(name) for name, column in DEVICE_COLUMNS.items()},
        }
        if not self.database.is_sqlite:
            (created,) = plan.events
            parameters = {
                **request,
                "author_type": customer.role.value,
                "body": message,
                "event_type": created.type,
                "changes": created.stored(),
            }
            subscribers = None
            if not attachments and keeper is not None:
                async with self.database.autocommit() as connection:
                    taken = (await connection.execute(_IDS_AND_SUBSCRIBERS)).all()
                    subscribers = Subscribers.read((row.endpoint_id, row.events) for row in taken)
                    if not subscribers.take(CREATED):
                        return await self._create_keyed(
                            connection, keeper, parameters, taken[0].request_id, taken[0].message_id
                        )
            if not attachments and keeper is None:
                async with self.database.autocommit() as connection:
                    # Who takes ``created`` is read first, outside any transaction: an
                    # endpoint enabled after this read misses this request, as it would
                    # inside a READ COMMITTED transaction whose read came before the
                    # endpoint's commit. Either way the event goes to the endpoints
                    # committed when the change looked, never on the side after it.
                    subscribers = await read_subscribers(connection)
                    if not subscribers.take(CREATED):
                        # One statement, so one round trip and no BEGIN/COMMIT: atomic by
                        # itself.
                        result = await connection.execute(_CREATE, parameters)
                        return self._shown(_detail_record(result.all(), 0))
            async with self.database.writing() as connection:
                result = await connection.execute(_CREATE, parameters)
                record = self._shown(_detail_record(result.all(), 0))
                if attachments:
                    request_id = record.row.id
                    await attach_uploads(
                        connection,
                        customer,
                        attachments,
                        request_id,
                        record.messages[0].id,
                        plan.at,
                    )
                    record = await self._read_detail(connection, request_id)
                await self._publish(connection, plan, record, subscribers=subscribers)
                if keeper is not None:
                    await keeper.before_commit(connection, record)
                return record
        async with self.database.writing() as connection:
            request_id = (await connection.execute(_INSERT_REQUEST, request)).scalar_one()
            message_id = await self._add_message(connection, request_id, customer, message, plan.at)
            await attach_uploads(connection, customer, attachments, request_id, message_id, plan.at)
            await connection.execute(_INSERT_EVENT, _event_rows(request_id, customer, plan))
            record = await self._read_detail(connection, request_id)
            await self._publish(connection, plan, record)
            if keeper is not None:
                await keeper.before_commit(connection, record)
            return record

    async def _create_keyed(
        self,
        connection: DbConnection,
        keeper: Keeper,
        parameters: dict[str, Any],
        request_id: int,
        message_id: int,
    ) -> RequestRecord:
        """PostgreSQL, a create no endpoint takes, with an Idempotency-Key: the answer is
        rendered from the request as it will be stored (its ids taken already, the other
        columns from the create's values and the columns' defaults) and stored by the
        statement that creates it, in autocommit: one statement, as without a key. Tests
        hold the predicted request to the stored one, byte for byte as answered."""
        predicted = self._shown(_predicted_record(parameters, request_id, message_id))
        answer = keeper.answer(predicted)
        await keeper.store.sweep(connection)
        result = await connection.execute(
            _CREATE_KEYED,
            {
                **parameters,
                "request_id": request_id,
                "message_id": message_id,
                **keeper.store.keep_parameters(
                    keeper.owner, keeper.key, keeper.fingerprint, answer
                ),
            },
        )
        if result.first() is None:
            raise KeyTaken(keeper.key)
        return predicted

    async def list_for_customer(
        self, customer: Principal, *, limit: int, cursor: str | None, status: str | None
    ) -> Page:
        """The customer's own requests, newest first."""
        return await self._page(_customer_listing(customer, status), limit, cursor)

    async def page_versions_for_customer(
        self, customer: Principal, *, limit: int, cursor: str | None, status: str | None
    ) -> PageVersions:
        """What ``list_for_customer`` would show, by reference: one statement, same index."""
        return await self._page_versions(_customer_listing(customer, status), limit, cursor)

    async def get_for_customer(self, customer: Principal, request_id: int) -> RequestRecord:
        """One of the customer's requests with its thread."""
        async with self.database.reading() as connection:
            return await self._read_detail(connection, request_id, customer_id=customer.sub)

    async def version_for_customer(self, customer: Principal, request_id: int) -> CustomerVersion:
        """The customer's version of one of their requests and whether they may rate it now:
        one lookup by primary key; the same 404 as ``get_for_customer`` for a request that is
        not theirs."""
        parameters = {"request_id": request_id, "customer_id": customer.sub}
        async with self.database.reading() as connection:
            row = (await connection.execute(_OWNED_VERSION, parameters)).first()
        if row is None:
            raise _not_found(request_id)
        return CustomerVersion(int(row.customer_version), _rating_open(row, self.clock()))

    async def rate(
        self, customer: Principal, request_id: int, score: int, comment: str | None
    ) -> RequestRecord:
        """Rate one of the customer's requests (replacing any rating before), as the lifecycle
        allows: resolved or closed, within 14 days of the last resolution."""
        async with self.database.writing() as connection:
            row = await self._lock(
                connection, _LOCK_OWNED_REQUEST, request_id=request_id, customer_id=customer.sub
            )
            plan = plan_rating(_state(row), score, comment, self.clock())
            await self._write(connection, request_id, customer, plan)
            record = await self._read_detail(connection, request_id, customer_id=customer.sub)
            await self._publish(connection, plan, record, webhooks_on=row.webhooks_on)
            return record

    async def reply_as_customer(
        self,
        customer: Principal,
        request_id: int,
        body: str,
        attachments: Sequence[str] = (),
        before_commit: BeforeCommit | None = None,
    ) -> RequestRecord:
        """Append the customer's reply (with their ``attachments`` uploads); a resolved
        request reopens, a closed one refuses."""
        async with self.database.writing() as connection:
            row = await self._lock(
                connection,
                _LOCK_FOR_REPLY[True, self.database.is_sqlite],
                request_id=request_id,
                customer_id=customer.sub,
            )
            # The request shows the customer as their latest reply's token names them.
            return await self._reply(
                connection,
                row,
                customer,
                body,
                attachments,
                before_commit,
                customer_name=customer.name,
                customer_image=customer.picture,
            )

    async def mark_read(
        self, customer: Principal, request_id: int, message_id: int | None
    ) -> ReadState:
        """Move the customer's read marker forward to ``message_id`` of the thread they see
        (its latest message when None), with the request's unread count and the badge in the
        same transaction. A marker at or past it stays (nothing written). A move bumps both
        versions (every tag of the request) but not ``updated_at``, and records no history:
        a read is not a change of the request."""
        async with self.database.writing() as connection:
            row = await self._lock(
                connection, _LOCK_OWNED_REQUEST, request_id=request_id, customer_id=customer.sub
            )
            before = _read_state(row)
            thread = (
                await connection.execute(
                    THREAD_AFTER, {"request_id": request_id, "after": message_id or 0}
                )
            ).first()
            if message_id is not None and not thread.found:
                raise unknown_message(message_id)
            target = thread.latest if message_id is None else message_id
            if not moves_forward(before, target):
                return before
            # Nothing follows the latest message; after another, the staff messages after it.
            after = ReadState(target, 0 if message_id is None else thread.unread)
            await connection.execute(
                _UPDATE_REQUEST, {**after.to_columns(), "changed_id": request_id}
            )
            await self._add_to_badge(connection, row.customer_id, before, after)
            return after

    async def badge(self, customer: Principal) -> Badge:
        """The customer's badge: one primary-key probe (zeros before their first unread)."""
        async with self.database.reading() as connection:
            row = (await connection.execute(BADGE, {"customer_id": customer.sub})).first()
        return Badge() if row is None else Badge(row.unread_count, row.requests_with_unread)

    # -- admins ----------------------------------------------------------------

    async def list_queue(
        self, admin: Principal, filters: QueueFilters, *, limit: int, cursor: str | None
    ) -> Page:
        """The queue, filtered and sorted."""
        await self.remember_admin(admin)
        return await self._page(_queue_listing(filters), limit, cursor)

    async def queue_page_versions(
        self, admin: Principal, filters: QueueFilters, *, limit: int, cursor: str | None
    ) -> PageVersions:
        """What ``list_queue`` would show, by reference: one statement, same index."""
        await self.remember_admin(admin)
        return await self._page_versions(_queue_listing(filters), limit, cursor)

    async def get_for_admin(self, admin: Principal, request_id: int) -> RequestRecord:
        """Any request with its thread."""
        await self.remember_admin(admin)
        async with self.database.reading() as connection:
            return await self._read_detail(connection, request_id)

    async def version_for_admin(self, admin: Principal, request_id: int) -> int:
        """The version of any request: one lookup by primary key; 404 when there is none."""
        await self.remember_admin(admin)
        return await self._version(request_id)

    async def reply_as_admin(
        self,
        admin: Principal,
        request_id: int,
        body: str,
        attachments: Sequence[str] = (),
        before_commit: BeforeCommit | None = None,
    ) -> RequestRecord:
        """Append a staff reply (with the admin's ``attachments`` uploads); on ``open`` it
        starts work and takes the request if unowned."""
        await self.remember_admin(admin)
        async with self.database.writing() as connection:
            row = await self._lock(
                connection,
                _LOCK_FOR_REPLY[False, self.database.is_sqlite],
                request_id=request_id,
            )
            return await self._reply(connection, row, admin, body, attachments, before_commit)

    async def update(
        self, admin: Principal, request_id: int, requested: dict[str, Any]
    ) -> RequestRecord:
        """Change status, assignee and note together, or refuse the whole change."""
        await self.remember_admin(admin)
        edit = Edit.of(requested)
        async with self.database.writing() as connection:
            row = await self._lock(
                connection, _LOCK_FOR_EDIT, request_id=request_id, assignee_id=edit.assignee
            )
            plan = plan_edit(
                _state(row), edit, assignee_known=bool(row.assignee_known), now=self.clock()
            )
            await self._write(connection, request_id, admin, plan)
            if "tags" in plan.changes:
                await self._replace_tags(connection, row, plan.changes["tags"])
            record = await self._read_detail(connection, request_id)
            await self._publish(connection, plan, record, webhooks_on=row.webhooks_on)
            return record

    async def add_internal_note(
        self,
        admin: Principal,
        request_id: int,
        body: str,
        attachments: Sequence[str] = (),
        before_commit: BeforeCommit | None = None,
    ) -> RequestRecord:
        """Add a staff note the customer never sees (with the admin's ``attachments``
        uploads), in any status, closed included: no column a customer sees changes, nor
        their version; only the staff version moves."""
        await self.remember_admin(admin)
        async with self.database.writing() as connection:
            row = await self._lock(connection, _LOCK_REQUEST, request_id=request_id)
            plan = plan_internal_note(_state(row), self.clock())
            message_id = await self._add_message(
                connection, request_id, admin, body, plan.at, internal=True
            )
            await attach_uploads(connection, admin, attachments, request_id, message_id, plan.at)
            await self._write(connection, request_id, admin, plan, message_id)
            record = await self._read_detail(connection, request_id)
            if before_commit is not None:
                await before_commit(connection, record)
            return record

    async def _replace_tags(self, connection: DbConnection, row: Any, tags: list[str]) -> None:
        """The request's rows in ``request_tags``, one a tag, dated as the request."""
        await connection.execute(_DELETE_TAGS, {"request_id": row.id})
        if tags:
            await connection.execute(
                _INSERT_TAG,
                [{"request_id": row.id, "tag": tag, "created_at": row.created_at} for tag in tags],
            )

    async def list_admins(self, admin: Principal) -> list[Any]:
        """Every admin seen so far, by name."""
        await self.remember_admin(admin)
        async with self.database.reading() as connection:
            result = await connection.execute(_ADMINS)
            return list(result.all())

    async def list_events(self, admin: Principal, request_id: int) -> list[Any]:
        """The request's history, oldest first."""
        await self.remember_admin(admin)
        async with self.database.reading() as connection:
            exists = await connection.scalar(_REQUEST_ID, {"request_id": request_id})
            if exists is None:
                raise _not_found(request_id)
            result = await connection.execute(_EVENTS, {"request_id": request_id})
            return list(result)

    # -- internals -------------------------------------------------------------

    async def _page(self, listing: _Listing, limit: int, cursor: str | None) -> Page:
        statement, parameters = listing.statement(REQUEST_COLUMNS, limit, cursor)
        async with self.database.reading() as connection:
            rows = (await connection.execute(statement, parameters)).all()
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            moment = last.updated_at if listing.sort == "-updatedAt" else last.created_at
            next_cursor = pagination.encode(moment, last.id, listing.scope)
        now = self.clock()
        references = tuple(listing.reference(row, now) for row in rows)
        versions = PageVersions(references, next_cursor is not None)
        records = [
            RequestRecord(row, rating_open=bool(listing.rates and reference[-1]))
            for row, reference in zip(rows, references, strict=True)
        ]
        return Page(records, next_cursor, versions)

    async def _page_versions(
        self, listing: _Listing, limit: int, cursor: str | None
    ) -> PageVersions:
        statement, parameters = listing.statement(listing.versions, limit, cursor)
        async with self.database.reading() as connection:
            rows = (await connection.execute(statement, parameters)).all()
        now = self.clock()
        return PageVersions(
            tuple(listing.reference(row, now) for row in rows[:limit]), len(rows) > limit
        )

    async def _version(self, request_id: int) -> int:
        async with self.database.reading() as connection:
            version = await connection.scalar(_VERSION, {"request_id": request_id})
        if version is None:
            raise _not_found(request_id)
        return int(version)

    async def _lock(
        self, connection: DbConnection, statement: Select[Any], **parameters: Any
    ) -> Any:
        row = (await connection.execute(statement, parameters)).first()
        if row is None:
            raise _not_found(parameters["request_id"])
        return row

    async def _reply(
        self,
        connection: DbConnection,
        row: Any,
        author: Principal,
        body: str,
        attachments: Sequence[str],
        before_commit: BeforeCommit | None,
        **also: Any,
    ) -> RequestRecord:
        """Append ``author``'s reply with their uploads ``attachments`` to the locked request
        ``row``, as the lifecycle plans it; ``also`` are more columns to write with it;
        ``before_commit`` runs last, in the transaction."""
        plan = plan_reply(_state(row), author.role, author.sub, self.clock())
        # PostgreSQL: the lock took the message's id (``_LOCK_FOR_REPLY``); SQLite returns it.
        message_id = (
            await self._add_message(connection, row.id, author, body, plan.at)
            if self.database.is_sqlite
            else row.next_message_id
        )
        # A public message moves the customer's read state: theirs marks the thread read, a
        # staff one is unread; the badge moves with it, in this transaction.
        before = _read_state(row)
        after = (
            after_customer_reply(before, message_id)
            if author.role is Actor.CUSTOMER
            else after_staff_reply(before)
        )
        # The customer's answer is their detail: without internal notes.
        customer_id = author.sub if author.role is Actor.CUSTOMER else None
        record: RequestRecord | None = None
        if self.database.is_sqlite:
            await self._write(
                connection, row.id, author, plan, message_id, **after.to_columns(), **also
            )
            await self._add_to_badge(connection, row.customer_id, before, after)
        else:
            # Without uploads, the answer is the locked row with the reply's changes, and the
            # thread the writes' statement read with the message it wrote: no detail read.
            record = await self._write_reply(
                connection,
                row,
                author,
                body,
                plan,
                message_id,
                before,
                after,
                also,
                thread=None if attachments else _PUBLIC_THREAD if customer_id else _THREAD,
            )
        await attach_uploads(connection, author, attachments, row.id, message_id, plan.at)
        if record is None or not await self._with_attachments(connection, record):
            record = await self._read_detail(connection, row.id, customer_id=customer_id)
        await self._publish(
            connection,
            plan,
            record,
            message_id=message_id,
            push=author.role is Actor.ADMIN,
            webhooks_on=row.webhooks_on,
        )
        if before_commit is not None:
            await before_commit(connection, record)
        return record

    async def _write_reply(
        self,
        connection: DbConnection,
        row: Any,
        author: Principal,
        body: str,
        plan: Plan,
        message_id: int,
        before: ReadState,
        after: ReadState,
        also: dict[str, Any],
        *,
        thread: Select[Any] | None,
    ) -> RequestRecord | None:
        """PostgreSQL: what ``_add_message``, ``_write`` and ``_add_to_badge`` write for a
        reply, as one statement (``_reply_writes``); with ``thread``, the request as the
        reply leaves it (its attachments not read), else None."""
        changes = {**plan.changes, **after.to_columns(), **also}
        events = _event_rows(row.id, author, plan, message_id)
        delta = BadgeDelta.between(before, after)
        statement = _reply_writes(
            tuple(changes),
            len(events),
            customer_sees=plan.customer_sees,
            badge=bool(delta),
            thread=thread,
        )
        message = {"id": message_id, **_message_row(row.id, author, body, plan.at)}
        parameters = {
            **{f"message_{name}": value for name, value in message.items()},
            "changed_id": row.id,
            **{f"set_{name}": value for name, value in changes.items()},
            **{
                f"event{index}_{name}": value
                for index, event in enumerate(events)
                for name, value in event.items()
            },
        }
        if delta:
            parameters.update(badge_parameters(row.customer_id, delta, prefix="badge_"))
        result = await connection.execute(statement, parameters)
        if thread is None:
            return None
        # The lock read the row as it stands: this transaction's change is all that moves it.
        versions = {"version": row.version + 1}
        if plan.customer_sees:
            versions["customer_version"] = row.customer_version + 1
        changed = StoredRequest._make(row[: len(REQUEST_COLUMNS)])._replace(**changes, **versions)
        messages = [StoredMessage._make(stored) for stored in result.all()]
        return self._shown(RequestRecord(changed, [*messages, StoredMessage(**message)]))

    async def _add_to_badge(
        self, connection: DbConnection, customer_id: str, before: ReadState, after: ReadState
    ) -> None:
        await add_to_badge(
            connection,
            is_sqlite=self.database.is_sqlite,
            customer_id=customer_id,
            delta=BadgeDelta.between(before, after),
        )

    async def _read_detail(
        self, connection: DbConnection, request_id: int, *, customer_id: str | None = None
    ) -> RequestRecord:
        """The request with its thread and, when it has any, its attachments as of the
        same version (read again in the rare case a change came between the two reads)."""
        while True:
            if customer_id is None:
                result = await connection.execute(_DETAIL, {"request_id": request_id})
            else:
                result = await connection.execute(
                    _OWNED_DETAIL, {"request_id": request_id, "customer_id": customer_id}
                )
            record = self._shown(_detail_record(result.all(), request_id))
            if await self._with_attachments(connection, record):
                return record

    async def _with_attachments(self, connection: DbConnection, record: RequestRecord) -> bool:
        """Give ``record`` its request's attachments, if it has any, as of its version; False
        when the stored version is another (a change came since ``record`` was read)."""
        if not record.row.attachment_count:
            return True
        rows = (await connection.execute(_DETAIL_ATTACHMENTS, {"request_id": record.row.id})).all()
        if not rows or rows[0].version != record.row.version:
            return False
        record.attachments = _attachments_by_message(rows)
        return True

    def _shown(self, record: RequestRecord) -> RequestRecord:
        """``record`` with whether its customer may rate it now."""
        record.rating_open = _rating_open(record.row, self.clock())
        return record

    async def _add_message(
        self,
        connection: DbConnection,
        request_id: int,
        author: Principal,
        body: str,
        now: datetime,
        *,
        internal: bool = False,
    ) -> int:
        result = await connection.execute(
            _INSERT_MESSAGE, _message_row(request_id, author, body, now, internal=internal)
        )
        return int(result.scalar_one())

    async def _write(
        self,
        connection: DbConnection,
        request_id: int,
        actor: Principal,
        plan: Plan,
        message_id: int | None = None,
        **also: Any,
    ) -> None:
        """Write ``plan``'s changes (with ``also``) and its events; a plan that changes nothing
        and records nothing writes nothing (one that only records, an internal note, moves
        the version). A plan the customer never sees (``plan.customer_sees``) leaves their
        version, and so every mobile tag, as it was."""
        if not plan.changes and not plan.events:
            return
        await connection.execute(
            _UPDATE_REQUEST if plan.customer_sees else _UPDATE_REQUEST_FOR_STAFF,
            {**plan.changes, **also, "changed_id": request_id},
        )
        await connection.execute(_INSERT_EVENT, _event_rows(request_id, actor, plan, message_id))

    async def _publish(
        self,
        connection: DbConnection,
        plan: Plan,
        record: RequestRecord,
        *,
        message_id: int | None = None,
        push: bool = False,
        subscribers: Subscribers | None = None,
        webhooks_on: bool = True,
    ) -> None:
        """Put the webhook events of ``plan``'s change to ``record`` in the outbox, in this
        transaction; ``push``: the change is a public staff reply (``message_id``), pushed
        to the customer's devices, if any, with their badge as it now stands. Nothing is
        read when the change yields no event or no endpoint is enabled (``webhooks_on``, as
        the lock read it); otherwise the endpoints once, then a push's devices and badge only
        when an endpoint takes pushes."""
        if not webhooks_on or (not push and not webhook_events.types_of(plan)):
            return
        if subscribers is None:
            subscribers = await read_subscribers(connection)
        if not subscribers.endpoints:
            return
        events = webhook_events.of_change(plan, record, subscribers, message_id=message_id)
        if push and message_id is not None and subscribers.take(PUSH):
            devices = await connection.execute(
                _DEVICES_AND_BADGE, {"customer_id": record.row.customer_id}
            )
            if found := devices.all():
                badge = int(found[0].badge or 0)
                events.append(webhook_events.push(record, message_id, found, badge))
        await enqueue(
            connection,
            events,
            plan.at,
            subscribers=subscribers,
            postgresql=not self.database.is_sqlite,
        )

    async def remember_admin(self, admin: Principal) -> None:
        """Record an admin seen in a token, once per process unless name or picture change."""
        seen = (admin.name, admin.picture)
        if self._admins_seen.get(admin.sub) == seen:
            return
        dialect = postgresql if not self.database.is_sqlite else sqlite
        statement = dialect.insert(admins_table).values(
            id=admin.sub, name=admin.name, image=admin.picture, first_seen_at=self.clock()
        )
        statement = statement.on_conflict_do_update(
            index_elements=[admins_table.c.id],
            set_={"name": statement.excluded.name, "image": statement.excluded.image},
        )
        async with self.database.writing() as connection:
            await connection.execute(statement)
        self._admins_seen[admin.sub] = seen
