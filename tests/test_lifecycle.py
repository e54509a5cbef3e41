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
NOT_RATEABLE = Outcome(refusal=Refusal.RATING_NOT_ALLOWED)


def to(status: Status, *, assigns_replier: bool = False) -> Outcome:
    return Outcome(to=status, assigns_replier=assigns_replier)


# Each row: the outcome on (open, in_progress, resolved, closed).
EXPECTED: dict[tuple[Actor, Event], tuple[Outcome, Outcome, Outcome, Outcome]] = {
    (CUSTOMER, Event.CUSTOMER_REPLY): (to(OPEN), to(IN_PROGRESS), to(OPEN), CLOSED_REPLY),
    # Ratings (CSAT): once resolved or closed, the status stays (the 14 days are on top).
    (CUSTOMER, Event.RATE): (NOT_RATEABLE, NOT_RATEABLE, to(RESOLVED), to(CLOSED)),
    (CUSTOMER, Event.INTERNAL_NOTE): (WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR),
    (CUSTOMER, Event.ADMIN_REPLY): (WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR),
    (CUSTOMER, Event.ASSIGN): (WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR),
    (CUSTOMER, Event.SET_NOTE): (WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR),
    (CUSTOMER, Event.SET_OPEN): (WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR),
    (CUSTOMER, Event.SET_IN_PROGRESS): (WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR),
    (CUSTOMER, Event.SET_RESOLVED): (WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR),
    (CUSTOMER, Event.SET_CLOSED): (WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR),
    (ADMIN, Event.CUSTOMER_REPLY): (WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR),
    (ADMIN, Event.RATE): (WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR, WRONG_ACTOR),
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
    # Internal notes: in every status, closed included, and the status stays.
    (ADMIN, Event.INTERNAL_NOTE): (to(OPEN), to(IN_PROGRESS), to(RESOLVED), to(CLOSED)),
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
    assert list(TRANSITIONS[CUSTOMER]) == [Event.CUSTOMER_REPLY, Event.RATE]


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


def test_closed_takes_only_a_rating_and_an_internal_note_and_stays_closed() -> None:
    allowed = {
        (actor, event)
        for actor, event in itertools.product(Actor, Event)
        if decide(actor, event, CLOSED).allowed
    }
    assert allowed == {(CUSTOMER, Event.RATE), (ADMIN, Event.INTERNAL_NOTE)}
    assert all(decide(actor, event, CLOSED).to is CLOSED for actor, event in allowed)


def test_nothing_but_an_admin_status_change_leads_to_closed() -> None:
    leading_to_closed = {
        (actor, event)
        for actor, event, status in itertools.product(Actor, Event, Status)
        if status is not CLOSED and decide(actor, event, status).to is CLOSED
    }
    assert leading_to_closed == {(ADMIN, Event.SET_CLOSED)}


@pytest.mark.parametrize("event", [Event.RATE, Event.INTERNAL_NOTE])
def test_a_rating_and_an_internal_note_never_change_the_status(event: Event) -> None:
    for actor, status in itertools.product(Actor, Status):
        outcome = decide(actor, event, status)
        assert outcome.to in (None, status)


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


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (OPEN, ["reply"]),
        (IN_PROGRESS, ["reply"]),
        (RESOLVED, ["reply", "rate"]),
        (CLOSED, ["rate"]),
    ],
    ids=lambda value: value.value if isinstance(value, Status) else None,
)
def test_rate_is_allowed_exactly_when_the_table_allows_it_and_the_window_is_open(
    status: Status, expected: list[str]
) -> None:
    assert allowed_actions(CUSTOMER, status, rating_open=True) == expected
    assert "rate" not in allowed_actions(CUSTOMER, status, rating_open=False)
    assert "rate" not in allowed_actions(ADMIN, status, rating_open=True)


@pytest.mark.parametrize("status", list(Status))
def test_admin_allowed_actions_offer_every_status_but_the_current_one(status: Status) -> None:
    offered = [a for a in allowed_actions(ADMIN, status) if a.startswith("status:")]
    if status is CLOSED:
        assert offered == []
    else:
        assert offered == [a for a in ALL_STATUS_ACTIONS if a != f"status:{status.value}"]
