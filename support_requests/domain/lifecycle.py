"""The support-request lifecycle: one transition table, and the plans read from it.

``TRANSITIONS`` is the decisions' table ("Lifecycle") written out: a row per event, a
column per current status, each cell the status the request moves to or the refusal.
``decide`` reads a cell, ``allowed_actions`` lists what an actor may do from a status, and
the ``plan_*`` functions turn a request's state, an actor's event and the time into a
``Plan`` (everything that changes) or raise the refusal. Storage locks the row, applies the
plan and writes; no other module decides a transition.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import Enum, StrEnum
from typing import Any

from support_requests.domain.clock import iso_ms
from support_requests.domain.errors import (
    FieldProblem,
    InvalidTransition,
    RatingNotAllowed,
    RequestClosed,
    RuleViolation,
)


class Status(StrEnum):
    """Where a support request stands."""

    OPEN = "open"
    IN_PROGRESS = "in_progress"
    RESOLVED = "resolved"
    CLOSED = "closed"


class Actor(StrEnum):
    """Who acts: the customer who owns the request, or a support admin."""

    CUSTOMER = "customer"
    ADMIN = "admin"


class Event(StrEnum):
    """Something an actor does to a request."""

    CUSTOMER_REPLY = "customer_reply"
    RATE = "rate"
    ADMIN_REPLY = "admin_reply"
    ASSIGN = "assign"
    SET_NOTE = "note"
    SET_OPEN = "status:open"
    SET_IN_PROGRESS = "status:in_progress"
    SET_RESOLVED = "status:resolved"
    SET_CLOSED = "status:closed"
    INTERNAL_NOTE = "internal_note"


class Refusal(StrEnum):
    """Why an event is refused."""

    REQUEST_CLOSED = "request_closed"
    INVALID_TRANSITION = "invalid_transition"
    NOT_ALLOWED = "not_allowed"
    RATING_NOT_ALLOWED = "rating_not_allowed"


@dataclass(frozen=True)
class Outcome:
    """A cell of the table: the next status, or the refusal."""

    to: Status | None = None
    refusal: Refusal | None = None
    assigns_replier: bool = False

    @property
    def allowed(self) -> bool:
        """Whether the event goes ahead."""
        return self.refusal is None


# The cells, as the decisions' table writes them.
_OPEN = Outcome(Status.OPEN)
_IN_PROGRESS = Outcome(Status.IN_PROGRESS)
_RESOLVED = Outcome(Status.RESOLVED)
_CLOSED = Outcome(Status.CLOSED)
_TAKEN = Outcome(Status.IN_PROGRESS, assigns_replier=True)  # and assigns the replier if unassigned
_REQUEST_CLOSED = Outcome(refusal=Refusal.REQUEST_CLOSED)  # 400 request_closed
_INVALID_TRANSITION = Outcome(refusal=Refusal.INVALID_TRANSITION)  # 409 invalid_transition
_NOT_ALLOWED = Outcome(refusal=Refusal.NOT_ALLOWED)  # 403: not this actor's event
_UNRATEABLE = Outcome(refusal=Refusal.RATING_NOT_ALLOWED)  # 409 rating_not_allowed

# Who may do each event, and what it does on a request that is open, in_progress, resolved
# or closed. Any other actor's event is refused as not allowed. A rating and an internal note
# leave the status as it is; a rating's 14 days (``RATING_WINDOW``) are checked on top of its
# row, by ``plan_rating`` and ``allowed_actions``.
# fmt: off
TRANSITIONS: dict[Actor, dict[Event, tuple[Outcome, Outcome, Outcome, Outcome]]] = {
    Actor.CUSTOMER: {
        #                       open          in_progress   resolved      closed
        Event.CUSTOMER_REPLY:  (_OPEN,        _IN_PROGRESS, _OPEN,        _REQUEST_CLOSED),
        Event.RATE:            (_UNRATEABLE,  _UNRATEABLE,  _RESOLVED,    _CLOSED),
    },
    Actor.ADMIN: {
        #                       open          in_progress   resolved      closed
        Event.ADMIN_REPLY:     (_TAKEN,       _IN_PROGRESS, _RESOLVED,    _REQUEST_CLOSED),
        Event.ASSIGN:          (_OPEN,        _IN_PROGRESS, _RESOLVED,    _INVALID_TRANSITION),
        Event.SET_NOTE:        (_OPEN,        _IN_PROGRESS, _RESOLVED,    _INVALID_TRANSITION),
        Event.SET_OPEN:        (_OPEN,        _OPEN,        _OPEN,        _INVALID_TRANSITION),
        Event.SET_IN_PROGRESS: (_IN_PROGRESS, _IN_PROGRESS, _IN_PROGRESS, _INVALID_TRANSITION),
        Event.SET_RESOLVED:    (_RESOLVED,    _RESOLVED,    _RESOLVED,    _INVALID_TRANSITION),
        Event.SET_CLOSED:      (_CLOSED,      _CLOSED,      _CLOSED,      _INVALID_TRANSITION),
        Event.INTERNAL_NOTE:   (_OPEN,        _IN_PROGRESS, _RESOLVED,    _CLOSED),
    },
}
# fmt: on
COLUMNS = (Status.OPEN, Status.IN_PROGRESS, Status.RESOLVED, Status.CLOSED)

_CELLS: dict[tuple[Actor, Event, Status], Outcome] = {
    (actor, event, status): _NOT_ALLOWED for actor in Actor for event in Event for status in Status
} | {
    (actor, event, status): outcome
    for actor, rows in TRANSITIONS.items()
    for event, row in rows.items()
    for status, outcome in zip(COLUMNS, row, strict=True)
}


def decide(actor: Actor, event: Event, status: Status) -> Outcome:
    """The table's cell for this actor doing this event on a request in this status."""
    return _CELLS[actor, event, status]


SET_STATUS_EVENTS: dict[Status, Event] = {
    Status.OPEN: Event.SET_OPEN,
    Status.IN_PROGRESS: Event.SET_IN_PROGRESS,
    Status.RESOLVED: Event.SET_RESOLVED,
    Status.CLOSED: Event.SET_CLOSED,
}
_TARGETS = {event: status for status, event in SET_STATUS_EVENTS.items()}

MOBILE_ACTIONS: dict[Event, str] = {Event.CUSTOMER_REPLY: "reply", Event.RATE: "rate"}
ADMIN_ACTIONS: dict[Event, str] = {
    Event.ADMIN_REPLY: "reply",
    Event.ASSIGN: "assign",
    **{event: event.value for event in SET_STATUS_EVENTS.values()},
}


# A customer rates a request within this long of its last resolution (or of its closing,
# when it was closed without being resolved).
RATING_WINDOW = timedelta(days=14)


def rating_window_open(
    last_resolved_at: datetime | None, closed_at: datetime | None, now: datetime
) -> bool:
    """Whether ``now`` is within ``RATING_WINDOW`` of the last resolution, or of the closing
    of a request closed unresolved; the table decides whether the status takes a rating."""
    since = last_resolved_at if last_resolved_at is not None else closed_at
    return since is not None and now <= since + RATING_WINDOW


def rating_allowed(
    status: Status, last_resolved_at: datetime | None, closed_at: datetime | None, now: datetime
) -> bool:
    """Whether the customer may rate now: the table takes a rating in ``status`` and the
    window is open."""
    return decide(Actor.CUSTOMER, Event.RATE, status).allowed and rating_window_open(
        last_resolved_at, closed_at, now
    )


def allowed_actions(actor: Actor, status: Status, *, rating_open: bool = False) -> list[str]:
    """What ``actor`` may do now, derived from the table (a no-op status change is left out);
    ``rate`` only while ``rating_open`` (``rating_window_open`` of the request, now)."""
    allowed = _ALLOWED_ACTIONS[actor, status]
    return [name for name in allowed if rating_open or name != _RATE]


def _allowed_actions(actor: Actor, status: Status) -> tuple[str, ...]:
    names = MOBILE_ACTIONS if actor is Actor.CUSTOMER else ADMIN_ACTIONS
    return tuple(
        name
        for event, name in names.items()
        if decide(actor, event, status).allowed and _TARGETS.get(event) is not status
    )


_ALLOWED_ACTIONS = {
    (actor, status): _allowed_actions(actor, status) for actor in Actor for status in Status
}
_RATE = MOBILE_ACTIONS[Event.RATE]


# -- plans ---------------------------------------------------------------------


@dataclass(frozen=True)
class RequestState:
    """What the lifecycle reads of a stored request; the fields are named as its columns."""

    id: int
    status: Status
    assigned_admin_id: str | None
    resolution_note: str | None
    resolved_at: datetime | None
    closed_at: datetime | None
    last_customer_message_at: datetime | None
    last_admin_message_at: datetime | None
    updated_at: datetime
    first_response_at: datetime | None = None
    last_resolved_at: datetime | None = None
    rating_score: int | None = None
    rating_comment: str | None = None
    tags: tuple[str, ...] = ()


class Placeholder(Enum):
    """A value only storage learns while it writes a plan."""

    NEW_MESSAGE = "the id of the message the reply adds"


@dataclass(frozen=True)
class Recorded:
    """One entry of a request's history: its type and each changed field's (from, to)."""

    type: str
    changes: Mapping[str, tuple[Any, Any]]

    def stored(self, message_id: int | None = None) -> dict[str, dict[str, Any]]:
        """The changes as stored and shown: ``{field: {"from", "to"}}``, times in ISO form,
        ``Placeholder.NEW_MESSAGE`` replaced by the id of the message written."""
        return {
            name: {"from": _plain(old, message_id), "to": _plain(new, message_id)}
            for name, (old, new) in self.changes.items()
        }


def _plain(value: Any, message_id: int | None) -> Any:
    if value is Placeholder.NEW_MESSAGE:
        return message_id
    if isinstance(value, datetime):
        return iso_ms(value)
    return value.value if isinstance(value, Enum) else value


@dataclass(frozen=True)
class Plan:
    """Everything one event changes: the columns that change (``updated_at`` among them, and
    none when nothing changes) and the history entries to record, all at ``at``.

    ``customer_sees`` is false for a change only staff see (tags, an internal note): it
    leaves ``updated_at`` and the customer's version as they were."""

    at: datetime
    changes: Mapping[str, Any]
    events: tuple[Recorded, ...]
    customer_sees: bool = True


@dataclass(frozen=True)
class Edit:
    """An admin's requested change: the new status, note, assignee and set of tags, each if
    asked for."""

    status: Status | None = None
    note: str | None = None
    assigns: bool = False
    assignee: str | None = None
    tags: tuple[str, ...] | None = None

    @classmethod
    def of(cls, requested: Mapping[str, Any]) -> Edit:
        """The change the API's fields ask for: ``status``, ``resolutionNote`` and
        ``assignedAdminId`` (``null`` unassigns), ``tags`` (a set: sorted, duplicates
        collapsed); admin ids in lower case, as stored."""
        status = requested.get("status")
        assignee = requested.get("assignedAdminId")
        tags = requested.get("tags")
        return cls(
            status=None if status is None else Status(status),
            note=requested.get("resolutionNote"),
            assigns="assignedAdminId" in requested,
            assignee=None if assignee is None else assignee.lower(),
            tags=None if tags is None else tuple(sorted(set(tags))),
        )


def plan_opening(category: str, subject: str, now: datetime) -> Plan:
    """A new request: open, the customer's first message at ``now``, and its ``created``
    entry."""
    created = Recorded(
        "created",
        {"status": (None, Status.OPEN), "category": (None, category), "subject": (None, subject)},
    )
    changes = {"status": Status.OPEN, "last_customer_message_at": now, "updated_at": now}
    return Plan(now, changes, (created,))


def plan_reply(state: RequestState, by: Actor, replier_id: str, now: datetime) -> Plan:
    """A reply by the customer or by the admin ``replier_id``: the message's entry, then the
    status change and (an admin's first reply) the assignment the table ties to it."""
    customer = by is Actor.CUSTOMER
    outcome = _allow(by, Event.CUSTOMER_REPLY if customer else Event.ADMIN_REPLY, state)
    draft = _Draft(state, now)
    if customer:
        last = {"lastCustomerMessageAt": (state.last_customer_message_at, draft.at)}
        draft.change(last_customer_message_at=draft.at)
    else:
        last = {"lastAdminMessageAt": (state.last_admin_message_at, draft.at)}
        draft.change(last_admin_message_at=draft.at)
        if state.first_response_at is None:
            draft.change(first_response_at=draft.at)
    draft.record(f"{by.value}_replied", messageId=(None, Placeholder.NEW_MESSAGE), **last)
    assert outcome.to is not None  # an allowed cell names its status
    draft.move_to(outcome.to)
    if outcome.assigns_replier and state.assigned_admin_id is None:
        draft.assign(replier_id)
    return draft.plan()


def plan_edit(state: RequestState, edit: Edit, *, assignee_known: bool, now: datetime) -> Plan:
    """An admin's change of status, note, assignee and tags together, or the refusal of all
    of it.

    ``assignee_known`` says whether ``edit.assignee`` is an admin the service has seen.
    Tags are staff bookkeeping, not an event of the table: they change on every status,
    closed included, and a change of tags alone is one the customer never sees.
    """
    target = state.status if edit.status is None else edit.status
    events = [SET_STATUS_EVENTS[target]] if edit.status is not None else []
    if edit.assigns:
        events.append(Event.ASSIGN)
    if edit.note is not None:
        events.append(Event.SET_NOTE)
    for event in events:
        _allow(Actor.ADMIN, event, state)

    problems: list[FieldProblem] = []
    if edit.assignee is not None and not assignee_known:
        problems.append(FieldProblem("assignedAdminId", "is not an admin this service has seen"))
    if edit.note is not None and target is not Status.RESOLVED:
        problems.append(
            FieldProblem(
                "resolutionNote", "can only be set on a request that is or becomes resolved"
            )
        )
    if (
        target is Status.RESOLVED
        and edit.note is None
        and not (state.status is Status.RESOLVED and state.resolution_note)
    ):
        problems.append(FieldProblem("resolutionNote", "is required to resolve a request"))
    if problems:
        raise RuleViolation(problems)

    draft = _Draft(state, now)
    draft.move_to(target)
    if edit.note is not None:
        draft.write_note(edit.note)
    if edit.assigns:
        draft.assign(edit.assignee)
    if edit.tags is not None:
        draft.tag(edit.tags)
    return draft.plan()


def plan_rating(state: RequestState, score: int, comment: str | None, now: datetime) -> Plan:
    """The customer's rating (``score`` 1-5, ``comment`` or None): allowed by the table on a
    resolved or closed request, within ``RATING_WINDOW`` of its last resolution (or its
    closing); a new rating replaces the one before. The status stays."""
    _allow(Actor.CUSTOMER, Event.RATE, state)
    if not rating_window_open(state.last_resolved_at, state.closed_at, now):
        raise RatingNotAllowed(
            f"Support request {state.id} can be rated only within "
            f"{RATING_WINDOW.days} days of its resolution."
        )
    draft = _Draft(state, now)
    draft.change(rating_score=score, rating_comment=comment, rated_at=draft.at)
    draft.record(
        "rated", score=(state.rating_score, score), comment=(state.rating_comment, comment)
    )
    return draft.plan()


def plan_internal_note(state: RequestState, now: datetime) -> Plan:
    """A staff note the customer never sees: allowed by the table in every status, closed
    included; it changes no column (``updated_at`` included) and records only its entry."""
    _allow(Actor.ADMIN, Event.INTERNAL_NOTE, state)
    draft = _Draft(state, now)
    draft.record("internal_note_added", messageId=(None, Placeholder.NEW_MESSAGE))
    return replace(draft.plan(), customer_sees=False)


def _allow(actor: Actor, event: Event, state: RequestState) -> Outcome:
    """The table's cell, or its refusal raised as the domain error the API answers with."""
    outcome = decide(actor, event, state.status)
    if outcome.refusal is Refusal.REQUEST_CLOSED:
        raise RequestClosed(f"Support request {state.id} is closed and takes no more replies.")
    if outcome.refusal is Refusal.RATING_NOT_ALLOWED:
        raise RatingNotAllowed(
            f"Support request {state.id} can be rated once it is resolved or closed."
        )
    if outcome.refusal is not None:
        # Roles are checked (403) before any plan: the only other refusal is a closed request's.
        raise InvalidTransition(
            f"Support request {state.id} is closed; its status, assignee and note are final."
        )
    return outcome


class _Draft:
    """A plan being written: the request's state, what changes so far, and its entries."""

    def __init__(self, state: RequestState, now: datetime) -> None:
        self.state = state
        # A request's times never run backwards, even when clocks of servers differ.
        self.at = max(now, state.updated_at)
        self.changes: dict[str, Any] = {}
        self.events: list[Recorded] = []

    def current(self, name: str) -> Any:
        return self.changes.get(name, getattr(self.state, name))

    def change(self, **values: Any) -> None:
        self.changes.update(values)

    def record(self, event_type: str, **changes: tuple[Any, Any]) -> None:
        self.events.append(Recorded(event_type, changes))

    def move_to(self, target: Status) -> None:
        """Move to ``target`` with the times and note the lifecycle ties to it."""
        status = self.current("status")
        if target is status:
            return
        changes: dict[str, tuple[Any, Any]] = {"status": (status, target)}
        if status is Status.RESOLVED:
            changes["resolvedAt"] = (self.current("resolved_at"), None)
            changes["resolutionNote"] = (self.current("resolution_note"), None)
            self.change(resolved_at=None, resolution_note=None)
        if target is Status.RESOLVED:
            changes["resolvedAt"] = (self.current("resolved_at"), self.at)
            self.change(resolved_at=self.at, last_resolved_at=self.at)
        elif target is not Status.CLOSED and self.current("last_resolved_at") is not None:
            # Reopened: the last resolution no longer stands (closing keeps it).
            self.change(last_resolved_at=None)
        if target is Status.CLOSED:
            changes["closedAt"] = (self.current("closed_at"), self.at)
            self.change(closed_at=self.at)
        self.change(status=target)
        self.record("status_changed", **changes)

    def assign(self, admin_id: str | None) -> None:
        before = self.current("assigned_admin_id")
        if before != admin_id:
            self.change(assigned_admin_id=admin_id)
            self.record("assignment_changed", assignedAdminId=(before, admin_id))

    def write_note(self, note: str) -> None:
        before = self.current("resolution_note")
        if before != note:
            self.change(resolution_note=note)
            self.record("resolution_note_set", resolutionNote=(before, note))

    def tag(self, tags: tuple[str, ...]) -> None:
        before = self.state.tags
        if before != tags:
            self.change(tags=list(tags))
            self.record("tags_changed", tags=(list(before), list(tags)))

    def plan(self) -> Plan:
        """The plan; ``updated_at`` moves only when something the customer sees does."""
        customer_sees = not self.changes or bool(self.changes.keys() - _STAFF_ONLY)
        if self.changes and customer_sees:
            self.change(updated_at=self.at)
        return Plan(self.at, self.changes, tuple(self.events), customer_sees)


# Columns only staff see: changing only these leaves the customer's view as it was.
_STAFF_ONLY = frozenset({"tags"})
