"""The lifecycle transition table, cell by cell, without a database.

``EXPECTED`` is written here from ``product/decisions.md`` ("Lifecycle"), not
derived from ``domain.lifecycle``: each row is one actor doing one event, each
column one current status, and each cell what must happen. The plans read from
the table are tested in ``test_lifecycle_plan.py``.
"""

from __future__ import annotations

import itertools

import pytest

from support_requests.domain.lifecycle import (
    COLUMNS,
    SET_STATUS_EVENTS,
    TRANSITIONS,
    Actor,
    Event,
    Outcome,
    Refusal,
    Status,
    allowed_actions,
    decide,
)

OPEN, IN_PROGRESS, RESOLVED, CLOSED = (
    Status.OPEN,
    Status.IN_PROGRESS,
    Status.RESOLVED,
    Status.CLOSED,
)
CUSTOMER, ADMIN = Actor.CUSTOMER, Actor.ADMIN

CLOSED_REPLY = Outcome(refusal=Refusal.REQUEST_CLOSED)
FINAL = Outcome(refusal=Refusal.INVALID_TRANSITION)
WRONG_ACTOR = Outcome(refusal=Refusal.NOT_ALLOWED)


def to(status: Status, *, assigns_replier: bool = False) -> Outcome:
    return Outcome(to=status, assigns_replier=assigns_replier)


# Each row: the outcome on (open, in_progress, resolved, closed).
EXPECTED: dict[tuple[Actor, Event], tuple[Outcome, Outcome, Outcome, Outcome]] = {
    (CUSTOMER, Event.CUSTOMER_REPLY): (to(OPEN), to(IN_PROGRESS), to(OPEN), CLOSED_REPLY),
    (CUSTOMER, Event.ADMIN_REPLY): (WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR),
    (CUSTOMER, Event.ASSIGN): (WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR),
    (CUSTOMER, Event.SET_NOTE): (WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR),
    (CUSTOMER, Event.SET_OPEN): (WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR),
    (CUSTOMER, Event.SET_IN_PROGRESS): (WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR),
    (CUSTOMER, Event.SET_RESOLVED): (WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR),
    (CUSTOMER, Event.SET_CLOSED): (WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR),
    (ADMIN, Event.CUSTOMER_REPLY): (WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR),
    (ADMIN, Event.ADMIN_REPLY): (
        to(IN_PROGRESS, assigns_replier=True),
        to(IN_PROGRESS),
        to(RESOLVED),
        CLOSED_REPLY,
    ),
    (ADMIN, Event.ASSIGN): (to(OPEN), to(IN_PROGRESS), to(RESOLVED), FINAL),
    (ADMIN, Event.SET_NOTE): (to(OPEN), to(IN_PROGRESS), to(RESOLVED), FINAL),
    (ADMIN, Event.SET_OPEN): (to(OPEN), to(OPEN), to(OPEN), FINAL),
    (ADMIN, Event.SET_IN_PROGRESS): (to(IN_PROGRESS), to(IN_PROGRESS), to(IN_PROGRESS), FINAL),
    (ADMIN, Event.SET_RESOLVED): (to(RESOLVED), to(RESOLVED), to(RESOLVED), FINAL),
    (ADMIN, Event.SET_CLOSED): (to(CLOSED), to(CLOSED), to(CLOSED), FINAL),
}

CELLS = [
    (actor, event, status, outcome)
    for (actor, event), row in EXPECTED.items()
    for status, outcome in zip(COLUMNS, row, strict=True)
]


def _cell_id(cell: tuple[Actor, Event, Status, Outcome]) -> str:
    actor, event, status, _ = cell
    return f"{actor.value}-{event.value}-{status.value}"


def test_expected_table_covers_every_actor_event_and_status() -> None:
    assert {(a, e, s) for a, e, s, _ in CELLS} == set(itertools.product(Actor, Event, Status))


def test_transition_table_has_a_column_per_status_in_the_decisions_order() -> None:
    assert COLUMNS == (OPEN, IN_PROGRESS, RESOLVED, CLOSED)
    for rows in TRANSITIONS.values():
        assert all(len(row) == len(COLUMNS) for row in rows.values())


def test_transition_table_gives_every_event_to_exactly_one_actor() -> None:
    events = [event for rows in TRANSITIONS.values() for event in rows]
    assert sorted(events) == sorted(Event)
    assert list(TRANSITIONS[CUSTOMER]) == [Event.CUSTOMER_REPLY]


@pytest.mark.parametrize("cell", CELLS, ids=[_cell_id(c) for c in CELLS])
def test_transition_table_cell_follows_the_lifecycle_decisions(
    cell: tuple[Actor, Event, Status, Outcome],
) -> None:
    actor, event, status, expected = cell
    assert decide(actor, event, status) == expected
    assert decide(actor, event, status).allowed is (expected.refusal is None)


@pytest.mark.parametrize("status", list(Status))
def test_set_status_events_name_their_target_status(status: Status) -> None:
    event = SET_STATUS_EVENTS[status]
    assert event.value == f"status:{status.value}"
    assert decide(ADMIN, event, OPEN).to is status


def test_an_allowed_outcome_has_a_target_and_a_refused_one_has_none() -> None:
    for actor, event, status in itertools.product(Actor, Event, Status):
        outcome = decide(actor, event, status)
        assert (outcome.to is None) is (outcome.refusal is not None)


def test_only_an_admin_reply_on_open_assigns_the_replier() -> None:
    assigning = {
        cell for cell in itertools.product(Actor, Event, Status) if decide(*cell).assigns_replier
    }
    assert assigning == {(ADMIN, Event.ADMIN_REPLY, OPEN)}


def test_closed_is_terminal_for_every_event_of_every_actor() -> None:
    for actor, event in itertools.product(Actor, Event):
        assert not decide(actor, event, CLOSED).allowed


def test_nothing_but_an_admin_status_change_leads_to_closed() -> None:
    leading_to_closed = {
        (actor, event)
        for actor, event, status in itertools.product(Actor, Event, Status)
        if decide(actor, event, status).to is CLOSED
    }
    assert leading_to_closed == {(ADMIN, Event.SET_CLOSED)}


ALL_STATUS_ACTIONS = ["status:open", "status:in_progress", "status:resolved", "status:closed"]


@pytest.mark.parametrize(
    ("actor", "status", "expected"),
    [
        (CUSTOMER, OPEN, ["reply"]),
        (CUSTOMER, IN_PROGRESS, ["reply"]),
        (CUSTOMER, RESOLVED, ["reply"]),
        (CUSTOMER, CLOSED, []),
        (
            ADMIN,
            OPEN,
            ["reply", "assign", "status:in_progress", "status:resolved", "status:closed"],
        ),
        (
            ADMIN,
            IN_PROGRESS,
            ["reply", "assign", "status:open", "status:resolved", "status:closed"],
        ),
        (
            ADMIN,
            RESOLVED,
            ["reply", "assign", "status:open", "status:in_progress", "status:closed"],
        ),
        (ADMIN, CLOSED, []),
    ],
    ids=lambda value: value.value if isinstance(value, Actor | Status) else None,
)
def test_allowed_actions_list_what_the_actor_may_do_from_the_status(
    actor: Actor, status: Status, expected: list[str]
) -> None:
    assert allowed_actions(actor, status) == expected


@pytest.mark.parametrize("status", list(Status))
def test_admin_allowed_actions_offer_every_status_but_the_current_one(status: Status) -> None:
    offered = [a for a in allowed_actions(ADMIN, status) if a.startswith("status:")]
    if status is CLOSED:
        assert offered == []
    else:
        assert offered == [a for a in ALL_STATUS_ACTIONS if a != f"status:{status.value}"]
