"""The support-request lifecycle as one transition table.

Every (actor, event, status) cell says what happens: the status the request
moves to, or the error that refuses the event. Both APIs ask this table; no
other module decides a transition.
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
        return self.refusal is None


SET_STATUS_EVENTS: dict[Status, Event] = {
    Status.OPEN: Event.SET_OPEN,
    Status.IN_PROGRESS: Event.SET_IN_PROGRESS,
    Status.RESOLVED: Event.SET_RESOLVED,
    Status.CLOSED: Event.SET_CLOSED,
}

_ADMIN_EVENTS = (Event.ADMIN_REPLY, Event.ASSIGN, Event.SET_NOTE, *SET_STATUS_EVENTS.values())


def _build_table() -> dict[tuple[Actor, Event, Status], Outcome]:
    table: dict[tuple[Actor, Event, Status], Outcome] = {}
    refused = Outcome(refusal=Refusal.NOT_ALLOWED)
    for status in Status:
        closed = status is Status.CLOSED
        # Customer reply: resolved reopens, closed refuses, otherwise unchanged.
        if closed:
            table[Actor.CUSTOMER, Event.CUSTOMER_REPLY, status] = Outcome(
                refusal=Refusal.REQUEST_CLOSED
            )
        elif status is Status.RESOLVED:
            table[Actor.CUSTOMER, Event.CUSTOMER_REPLY, status] = Outcome(to=Status.OPEN)
        else:
            table[Actor.CUSTOMER, Event.CUSTOMER_REPLY, status] = Outcome(to=status)
        for event in _ADMIN_EVENTS:
            table[Actor.CUSTOMER, event, status] = refused
        table[Actor.ADMIN, Event.CUSTOMER_REPLY, status] = refused
        # Admin reply: open moves to in_progress and assigns the replier if unassigned.
        if closed:
            table[Actor.ADMIN, Event.ADMIN_REPLY, status] = Outcome(refusal=Refusal.REQUEST_CLOSED)
        elif status is Status.OPEN:
            table[Actor.ADMIN, Event.ADMIN_REPLY, status] = Outcome(
                to=Status.IN_PROGRESS, assigns_replier=True
            )
        else:
            table[Actor.ADMIN, Event.ADMIN_REPLY, status] = Outcome(to=status)
        # Assignment, note and status changes: anything, until closed.
        for event in (Event.ASSIGN, Event.SET_NOTE, *SET_STATUS_EVENTS.values()):
            if closed:
                table[Actor.ADMIN, event, status] = Outcome(refusal=Refusal.INVALID_TRANSITION)
            else:
                target = _target_of(event) or status
                table[Actor.ADMIN, event, status] = Outcome(to=target)
    return table


def _target_of(event: Event) -> Status | None:
    for status, set_event in SET_STATUS_EVENTS.items():
        if set_event is event:
            return status
    return None


TRANSITIONS: dict[tuple[Actor, Event, Status], Outcome] = _build_table()


def decide(actor: Actor, event: Event, status: Status) -> Outcome:
    """The table's cell for this actor doing this event on a request in this status."""
    return TRANSITIONS[actor, event, status]


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
    actions = []
    for event, name in names.items():
        outcome = decide(actor, event, status)
        if not outcome.allowed:
            continue
        if _target_of(event) is status:
            continue
        actions.append(name)
    return tuple(actions)


_ALLOWED_ACTIONS = {
    (actor, status): _allowed_actions(actor, status) for actor in Actor for status in Status
}
