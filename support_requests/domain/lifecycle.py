"""The support-request lifecycle as one transition table.

``TRANSITIONS`` is the decisions' table ("Lifecycle") written out: a row per event, a
column per current status, each cell the status the request moves to or the refusal.
``decide`` reads a cell and ``allowed_actions`` lists what an actor may do from a status.
Both APIs ask this table; no other module decides a transition.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


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
    ADMIN_REPLY = "admin_reply"
    ASSIGN = "assign"
    SET_NOTE = "note"
    SET_OPEN = "status:open"
    SET_IN_PROGRESS = "status:in_progress"
    SET_RESOLVED = "status:resolved"
    SET_CLOSED = "status:closed"


class Refusal(StrEnum):
    """Why an event is refused."""

    REQUEST_CLOSED = "request_closed"
    INVALID_TRANSITION = "invalid_transition"
    NOT_ALLOWED = "not_allowed"


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

# Who may do each event, and what it does on a request that is open, in_progress, resolved
# or closed. Any other actor's event is refused as not allowed.
# fmt: off
TRANSITIONS: dict[Actor, dict[Event, tuple[Outcome, Outcome, Outcome, Outcome]]] = {
    Actor.CUSTOMER: {
        #                       open          in_progress   resolved      closed
        Event.CUSTOMER_REPLY:  (_OPEN,        _IN_PROGRESS, _OPEN,        _REQUEST_CLOSED),
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

MOBILE_ACTIONS: dict[Event, str] = {Event.CUSTOMER_REPLY: "reply"}
ADMIN_ACTIONS: dict[Event, str] = {
    Event.ADMIN_REPLY: "reply",
    Event.ASSIGN: "assign",
    **{event: event.value for event in SET_STATUS_EVENTS.values()},
}


def allowed_actions(actor: Actor, status: Status) -> list[str]:
    """What ``actor`` may do now, derived from the table (a no-op status change is left out)."""
    return list(_ALLOWED_ACTIONS[actor, status])


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
