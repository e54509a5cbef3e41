"""The plans read from the lifecycle table, without a database.

Each test gives a request's state, an actor's event and an injected ``now``,
and checks everything the plan changes (columns and history entries) or the
refusal, with the codes and texts the API answers with.
"""

from __future__ import annotations

import dataclasses
import itertools
from datetime import datetime, timedelta
from typing import Any

import pytest

from support_requests.domain.errors import (
    DomainError,
    FieldProblem,
    InvalidTransition,
    RatingNotAllowed,
    RequestClosed,
    RuleViolation,
)
from support_requests.domain.lifecycle import (
    COLUMNS,
    RATING_WINDOW,
    Actor,
    Edit,
    Event,
    Placeholder,
    Plan,
    Recorded,
    Refusal,
    RequestState,
    Status,
    decide,
    plan_edit,
    plan_internal_note,
    plan_opening,
    plan_rating,
    plan_reply,
    rating_allowed,
    rating_window_open,
)

OPEN, IN_PROGRESS, RESOLVED, CLOSED = COLUMNS  # in the decisions' order (test_lifecycle)
CUSTOMER, ADMIN = Actor.CUSTOMER, Actor.ADMIN

EARLIER = datetime(2026, 3, 17, 10, 0, 0)
BEFORE = datetime(2026, 3, 17, 10, 5, 0)
NOW = datetime(2026, 3, 17, 10, 6, 0, 123000)
REPLIER = "3f0c2a8e-6b1d-4c5e-9f7a-2d8b1e4c6a90"
OTHER_ADMIN = "9d4e1b2c-7a3f-4e8d-b6c5-1f2a3b4c5d6e"
STORED_NOTE = "Fixed in app version 4.2.1."
NEW_NOTE = "Fixed in app version 4.2.2."
NEW_MESSAGE = (None, Placeholder.NEW_MESSAGE)


def state(status: Status, **fields: Any) -> RequestState:
    """A request as stored in ``status``: resolved ones with their note and time, closed
    ones with their time, all last changed at ``BEFORE``."""
    values: dict[str, Any] = {
        "id": 7,
        "status": status,
        "assigned_admin_id": None,
        "resolution_note": STORED_NOTE if status is RESOLVED else None,
        "resolved_at": EARLIER if status is RESOLVED else None,
        "closed_at": EARLIER if status is CLOSED else None,
        "last_customer_message_at": EARLIER,
        "last_admin_message_at": None,
        "updated_at": BEFORE,
    }
    values.update(fields)
    return RequestState(**values)


def edited(before: RequestState, edit: Edit, *, assignee_known: bool = False) -> Plan:
    """``before`` edited by an admin at ``NOW``."""
    return plan_edit(before, edit, assignee_known=assignee_known, now=NOW)


def refusal_of(plan: Any) -> DomainError:
    with pytest.raises(DomainError) as refused:
        plan()
    return refused.value


# -- opening -------------------------------------------------------------------


def test_a_new_request_is_open_with_the_first_message_time_and_a_created_entry() -> None:
    plan = plan_opening("technical", "App crashes", NOW)

    assert plan == Plan(
        NOW,
        {"status": OPEN, "last_customer_message_at": NOW, "updated_at": NOW},
        (
            Recorded(
                "created",
                {
                    "status": (None, OPEN),
                    "category": (None, "technical"),
                    "subject": (None, "App crashes"),
                },
            ),
        ),
    )


# -- replies -------------------------------------------------------------------


@pytest.mark.parametrize("status", [OPEN, IN_PROGRESS])
def test_customer_reply_keeps_an_open_or_in_progress_status(status: Status) -> None:
    plan = plan_reply(state(status), CUSTOMER, "customer-1", NOW)

    assert plan == Plan(
        NOW,
        {"last_customer_message_at": NOW, "updated_at": NOW},
        (
            Recorded(
                "customer_replied",
                {"messageId": NEW_MESSAGE, "lastCustomerMessageAt": (EARLIER, NOW)},
            ),
        ),
    )


def test_customer_reply_on_resolved_reopens_it_and_clears_resolved_at_and_note() -> None:
    plan = plan_reply(state(RESOLVED, assigned_admin_id=REPLIER), CUSTOMER, "customer-1", NOW)

    assert plan.changes == {
        "last_customer_message_at": NOW,
        "status": OPEN,
        "resolved_at": None,
        "resolution_note": None,
        "updated_at": NOW,
    }
    assert plan.events == (
        Recorded(
            "customer_replied",
            {"messageId": NEW_MESSAGE, "lastCustomerMessageAt": (EARLIER, NOW)},
        ),
        Recorded(
            "status_changed",
            {
                "status": (RESOLVED, OPEN),
                "resolvedAt": (EARLIER, None),
                "resolutionNote": (STORED_NOTE, None),
            },
        ),
    )


@pytest.mark.parametrize("actor", list(Actor))
def test_a_reply_on_closed_is_refused_as_request_closed(actor: Actor) -> None:
    refusal = refusal_of(lambda: plan_reply(state(CLOSED), actor, REPLIER, NOW))

    assert type(refusal) is RequestClosed
    assert refusal.detail == "Support request 7 is closed and takes no more replies."


def test_admin_reply_on_open_starts_work_and_assigns_the_unassigned_replier() -> None:
    plan = plan_reply(state(OPEN), ADMIN, REPLIER, NOW)

    assert plan.changes == {
        "last_admin_message_at": NOW,
        "first_response_at": NOW,
        "status": IN_PROGRESS,
        "assigned_admin_id": REPLIER,
        "updated_at": NOW,
    }
    assert plan.events == (
        Recorded("admin_replied", {"messageId": NEW_MESSAGE, "lastAdminMessageAt": (None, NOW)}),
        Recorded("status_changed", {"status": (OPEN, IN_PROGRESS)}),
        Recorded("assignment_changed", {"assignedAdminId": (None, REPLIER)}),
    )


def test_admin_reply_on_open_keeps_the_assignee_it_has() -> None:
    plan = plan_reply(state(OPEN, assigned_admin_id=OTHER_ADMIN), ADMIN, REPLIER, NOW)

    assert plan.changes == {
        "last_admin_message_at": NOW,
        "first_response_at": NOW,
        "status": IN_PROGRESS,
        "updated_at": NOW,
    }
    assert [event.type for event in plan.events] == ["admin_replied", "status_changed"]


@pytest.mark.parametrize("status", [IN_PROGRESS, RESOLVED])
def test_admin_reply_on_in_progress_or_resolved_moves_only_the_last_admin_message(
    status: Status,
) -> None:
    before = state(status, last_admin_message_at=EARLIER, first_response_at=EARLIER)
    plan = plan_reply(before, ADMIN, REPLIER, NOW)

    assert plan == Plan(
        NOW,
        {"last_admin_message_at": NOW, "updated_at": NOW},
        (
            Recorded(
                "admin_replied", {"messageId": NEW_MESSAGE, "lastAdminMessageAt": (EARLIER, NOW)}
            ),
        ),
    )


def test_a_change_is_never_dated_before_the_last_one() -> None:
    later = NOW + timedelta(seconds=5)  # another server's clock ran ahead

    plan = plan_reply(state(OPEN, updated_at=later), CUSTOMER, "customer-1", NOW)

    assert plan.at == later
    assert plan.changes == {"last_customer_message_at": later, "updated_at": later}


# -- admin edits ---------------------------------------------------------------


@pytest.mark.parametrize("target", [OPEN, IN_PROGRESS, CLOSED])
def test_leaving_resolved_clears_resolved_at_and_note(target: Status) -> None:
    plan = edited(state(RESOLVED), Edit(status=target))

    closing = {"closed_at": NOW} if target is CLOSED else {}
    assert plan.changes == {
        "resolved_at": None,
        "resolution_note": None,
        **closing,
        "status": target,
        "updated_at": NOW,
    }
    closed_at = {"closedAt": (None, NOW)} if target is CLOSED else {}
    assert plan.events == (
        Recorded(
            "status_changed",
            {
                "status": (RESOLVED, target),
                "resolvedAt": (EARLIER, None),
                "resolutionNote": (STORED_NOTE, None),
                **closed_at,
            },
        ),
    )


@pytest.mark.parametrize("before", [OPEN, IN_PROGRESS])
def test_resolving_sets_resolved_at_and_writes_the_note(before: Status) -> None:
    edit = Edit(status=RESOLVED, note=NEW_NOTE)

    plan = edited(state(before), edit)

    assert plan.changes == {
        "resolved_at": NOW,
        "last_resolved_at": NOW,
        "status": RESOLVED,
        "resolution_note": NEW_NOTE,
        "updated_at": NOW,
    }
    assert plan.events == (
        Recorded("status_changed", {"status": (before, RESOLVED), "resolvedAt": (None, NOW)}),
        Recorded("resolution_note_set", {"resolutionNote": (None, NEW_NOTE)}),
    )


@pytest.mark.parametrize("before", [OPEN, IN_PROGRESS])
def test_closing_sets_closed_at(before: Status) -> None:
    plan = edited(state(before), Edit(status=CLOSED))

    assert plan.changes == {"closed_at": NOW, "status": CLOSED, "updated_at": NOW}
    assert plan.events == (
        Recorded("status_changed", {"status": (before, CLOSED), "closedAt": (None, NOW)}),
    )


def test_moving_between_open_and_in_progress_changes_only_the_status() -> None:
    plan = edited(state(OPEN), Edit(status=IN_PROGRESS))

    assert plan == Plan(
        NOW,
        {"status": IN_PROGRESS, "updated_at": NOW},
        (Recorded("status_changed", {"status": (OPEN, IN_PROGRESS)}),),
    )


def test_a_resolved_request_keeps_its_stored_note_when_resolved_again() -> None:
    plan = edited(state(RESOLVED), Edit(status=RESOLVED))

    assert plan == Plan(NOW, {}, ())


def test_editing_the_note_of_a_resolved_request_records_the_old_and_new_note() -> None:
    plan = edited(state(RESOLVED), Edit(note=NEW_NOTE))

    assert plan == Plan(
        NOW,
        {"resolution_note": NEW_NOTE, "updated_at": NOW},
        (Recorded("resolution_note_set", {"resolutionNote": (STORED_NOTE, NEW_NOTE)}),),
    )


def test_resolving_without_a_note_in_the_call_or_stored_is_refused() -> None:
    refusal = refusal_of(lambda: edited(state(IN_PROGRESS), Edit(status=RESOLVED)))

    assert isinstance(refusal, RuleViolation)
    assert refusal.problems == [FieldProblem("resolutionNote", "is required to resolve a request")]
    assert refusal.detail == "The request has 1 invalid field."


@pytest.mark.parametrize(("before", "target"), [(OPEN, None), (RESOLVED, IN_PROGRESS)])
def test_a_note_on_a_request_that_does_not_become_resolved_is_refused(
    before: Status, target: Status | None
) -> None:
    edit = Edit(status=target, note=NEW_NOTE)

    refusal = refusal_of(lambda: edited(state(before), edit))

    assert isinstance(refusal, RuleViolation)
    assert refusal.problems == [
        FieldProblem("resolutionNote", "can only be set on a request that is or becomes resolved")
    ]


def test_assigning_an_admin_the_service_has_not_seen_is_refused_with_every_problem() -> None:
    edit = Edit(status=OPEN, note=NEW_NOTE, assigns=True, assignee=OTHER_ADMIN)

    refusal = refusal_of(lambda: edited(state(OPEN), edit))

    assert isinstance(refusal, RuleViolation)
    assert refusal.problems == [
        FieldProblem("assignedAdminId", "is not an admin this service has seen"),
        FieldProblem("resolutionNote", "can only be set on a request that is or becomes resolved"),
    ]
    assert refusal.detail == "The request has 2 invalid fields."


def test_assigning_a_known_admin_records_the_old_and_new_assignee() -> None:
    edit = Edit(assigns=True, assignee=OTHER_ADMIN)

    plan = edited(state(OPEN, assigned_admin_id=REPLIER), edit, assignee_known=True)

    assert plan == Plan(
        NOW,
        {"assigned_admin_id": OTHER_ADMIN, "updated_at": NOW},
        (Recorded("assignment_changed", {"assignedAdminId": (REPLIER, OTHER_ADMIN)}),),
    )


def test_unassigning_needs_no_known_admin() -> None:
    edit = Edit(assigns=True, assignee=None)

    plan = edited(state(OPEN, assigned_admin_id=REPLIER), edit)

    assert plan.changes == {"assigned_admin_id": None, "updated_at": NOW}
    assert plan.events == (Recorded("assignment_changed", {"assignedAdminId": (REPLIER, None)}),)


def test_status_then_note_then_assignee_are_recorded_in_that_order() -> None:
    edit = Edit(status=RESOLVED, note=NEW_NOTE, assigns=True, assignee=OTHER_ADMIN)

    plan = edited(state(IN_PROGRESS), edit, assignee_known=True)

    assert [event.type for event in plan.events] == [
        "status_changed",
        "resolution_note_set",
        "assignment_changed",
    ]


@pytest.mark.parametrize(
    "edit",
    [
        Edit(status=OPEN),
        Edit(assigns=True, assignee=REPLIER),
        Edit(assigns=True, assignee=None),
    ],
    ids=["same-status", "same-assignee", "unassign-unassigned"],
)
def test_an_edit_that_changes_nothing_plans_nothing_and_leaves_updated_at(edit: Edit) -> None:
    before = state(OPEN, assigned_admin_id=REPLIER if edit.assignee else None)

    assert edited(before, edit, assignee_known=True) == Plan(NOW, {}, ())


def test_an_empty_edit_of_a_closed_request_is_not_refused() -> None:
    assert edited(state(CLOSED), Edit()) == Plan(NOW, {}, ())


@pytest.mark.parametrize(
    "edit",
    [
        Edit(status=OPEN),
        Edit(status=CLOSED),
        Edit(status=RESOLVED, note=NEW_NOTE),
        Edit(note=NEW_NOTE),
        Edit(assigns=True, assignee=OTHER_ADMIN),
        Edit(assigns=True, assignee=None),
    ],
    ids=["reopen", "close-again", "resolve", "note", "assign", "unassign"],
)
def test_every_edit_of_a_closed_request_is_refused_as_final(edit: Edit) -> None:
    refusal = refusal_of(lambda: edited(state(CLOSED), edit))

    assert type(refusal) is InvalidTransition
    assert refusal.detail == (
        "Support request 7 is closed; its status, assignee and note are final."
    )


# -- every cell of the table, planned ------------------------------------------


def plan_event(actor: Actor, event: Event, before: RequestState) -> Plan:
    """The plan for ``event``, sent the way the APIs send it."""
    if event in (Event.CUSTOMER_REPLY, Event.ADMIN_REPLY):
        return plan_reply(before, actor, REPLIER, NOW)
    if event is Event.RATE:  # within its window: the window has tests of its own
        return plan_rating(dataclasses.replace(before, last_resolved_at=EARLIER), 4, None, NOW)
    if event is Event.INTERNAL_NOTE:
        return plan_internal_note(before, NOW)
    if event is Event.ASSIGN:
        edit = Edit(assigns=True, assignee=OTHER_ADMIN)
    elif event is Event.SET_NOTE:
        edit = Edit(note=NEW_NOTE)
    else:
        target = Status(event.value.removeprefix("status:"))
        edit = Edit(status=target, note=NEW_NOTE if target is RESOLVED else None)
    return edited(before, edit, assignee_known=True)


REFUSAL_ERRORS = {
    Refusal.REQUEST_CLOSED: RequestClosed,
    Refusal.INVALID_TRANSITION: InvalidTransition,
    Refusal.RATING_NOT_ALLOWED: RatingNotAllowed,
}
# Another actor's event is refused (403) before anything is planned.
PLANNED_CELLS = [
    cell
    for cell in itertools.product(Actor, Event, Status)
    if decide(*cell).refusal is not Refusal.NOT_ALLOWED
]


@pytest.mark.parametrize(
    ("actor", "event", "status"),
    PLANNED_CELLS,
    ids=[f"{a.value}-{e.value}-{s.value}" for a, e, s in PLANNED_CELLS],
)
def test_plan_follows_the_transition_table_cell(actor: Actor, event: Event, status: Status) -> None:
    before = state(status)
    outcome = decide(actor, event, status)
    if outcome.refusal is not None:
        refusal = refusal_of(lambda: plan_event(actor, event, before))
        assert type(refusal) is REFUSAL_ERRORS[outcome.refusal]
        return
    assert outcome.to is not None
    if event is Event.SET_NOTE and outcome.to is not RESOLVED:
        # The table lets an admin edit the note; the note rule needs a resolved request.
        assert isinstance(refusal_of(lambda: plan_event(actor, event, before)), RuleViolation)
        return

    plan = plan_event(actor, event, before)

    after = {**vars(before), **plan.changes}
    assert after["status"] is outcome.to
    assert (after["resolved_at"] is not None) is (outcome.to is RESOLVED)
    assert (after["resolution_note"] is not None) is (outcome.to is RESOLVED)
    assert (after["closed_at"] is not None) is (outcome.to is CLOSED)
    assert after["updated_at"] == (NOW if plan.changes else BEFORE)
    expected_assignee = OTHER_ADMIN if event is Event.ASSIGN else None
    if outcome.assigns_replier:
        expected_assignee = REPLIER
    assert after["assigned_admin_id"] == expected_assignee
    status_changes = [e.changes["status"] for e in plan.events if e.type == "status_changed"]
    assert status_changes == ([] if outcome.to is status else [(status, outcome.to)])


# -- what storage receives -----------------------------------------------------


def test_recorded_changes_are_stored_as_plain_values_with_the_new_message_id() -> None:
    recorded = Recorded(
        "customer_replied",
        {
            "messageId": NEW_MESSAGE,
            "lastCustomerMessageAt": (None, NOW),
            "status": (RESOLVED, OPEN),
            "resolutionNote": (STORED_NOTE, None),
        },
    )

    assert recorded.stored(42) == {
        "messageId": {"from": None, "to": 42},
        "lastCustomerMessageAt": {"from": None, "to": "2026-03-17T10:06:00.123Z"},
        "status": {"from": "resolved", "to": "open"},
        "resolutionNote": {"from": STORED_NOTE, "to": None},
    }
    assert type(recorded.stored(42)["status"]["to"]) is str


def test_an_edit_reads_the_api_fields_and_tells_unassigning_from_leaving_alone() -> None:
    assert Edit.of({"status": "resolved", "resolutionNote": NEW_NOTE}) == Edit(
        status=RESOLVED, note=NEW_NOTE
    )
    assert Edit.of({"assignedAdminId": OTHER_ADMIN.upper()}) == Edit(
        assigns=True, assignee=OTHER_ADMIN
    )
    assert Edit.of({"assignedAdminId": None}) == Edit(assigns=True, assignee=None)
    assert Edit.of({}) == Edit()


def test_the_first_public_staff_reply_is_the_first_response_and_later_ones_keep_it() -> None:
    first = plan_reply(state(IN_PROGRESS), ADMIN, REPLIER, NOW)
    assert first.changes["first_response_at"] == NOW
    later = plan_reply(state(IN_PROGRESS, first_response_at=EARLIER), ADMIN, REPLIER, NOW)
    assert "first_response_at" not in later.changes
    customer = plan_reply(state(IN_PROGRESS), CUSTOMER, "c-1", NOW)
    assert "first_response_at" not in customer.changes


def test_the_last_resolution_stands_when_closing_and_falls_when_reopening() -> None:
    resolved = state(RESOLVED, last_resolved_at=EARLIER)
    assert "last_resolved_at" not in edited(resolved, Edit(status=CLOSED)).changes
    for target in (OPEN, IN_PROGRESS):
        assert edited(resolved, Edit(status=target)).changes["last_resolved_at"] is None
    reopened = plan_reply(resolved, CUSTOMER, "c-1", NOW)
    assert reopened.changes["last_resolved_at"] is None
    assert "last_resolved_at" not in edited(state(OPEN), Edit(status=IN_PROGRESS)).changes


# -- ratings (CSAT) --------------------------------------------------------------

RESOLVED_AT = datetime(2026, 3, 1, 9, 0, 0)
RATED_BEFORE = datetime(2026, 3, 2, 9, 0, 0)


def test_rating_a_resolved_request_writes_the_rating_and_records_it() -> None:
    before = state(RESOLVED, last_resolved_at=RESOLVED_AT, updated_at=RESOLVED_AT)
    now = RESOLVED_AT + timedelta(days=1)

    plan = plan_rating(before, 5, "Quick fix, thanks.", now)

    assert plan.changes == {
        "rating_score": 5,
        "rating_comment": "Quick fix, thanks.",
        "rated_at": now,
        "updated_at": now,
    }
    assert plan.events == (
        Recorded("rated", {"score": (None, 5), "comment": (None, "Quick fix, thanks.")}),
    )


def test_rating_again_replaces_the_rating_and_records_the_old_one() -> None:
    before = state(
        CLOSED,
        last_resolved_at=RESOLVED_AT,
        rating_score=2,
        rating_comment="Slow.",
        updated_at=RATED_BEFORE,
    )
    now = RESOLVED_AT + timedelta(days=3)

    plan = plan_rating(before, 4, None, now)

    assert plan.changes["rating_score"] == 4
    assert plan.changes["rating_comment"] is None
    assert plan.events == (Recorded("rated", {"score": (2, 4), "comment": ("Slow.", None)}),)
    assert "status" not in plan.changes


@pytest.mark.parametrize("status", [OPEN, IN_PROGRESS])
def test_rating_a_request_not_resolved_nor_closed_is_refused(status: Status) -> None:
    # Reopened after a rating: the old rating stays, a new one waits for the next resolution.
    before = state(status, rating_score=3, rating_comment=None)

    refusal = refusal_of(lambda: plan_rating(before, 5, None, NOW))

    assert type(refusal) is RatingNotAllowed
    assert refusal.detail == "Support request 7 can be rated once it is resolved or closed."


@pytest.mark.parametrize(
    ("after_resolution", "allowed"),
    [
        (timedelta(days=13, hours=23), True),
        (RATING_WINDOW, True),
        (RATING_WINDOW + timedelta(milliseconds=1), False),
    ],
    ids=["13d23h", "14d", "14d+1ms"],
)
@pytest.mark.parametrize("status", [RESOLVED, CLOSED])
def test_rating_window_runs_14_days_from_the_last_resolution(
    status: Status, after_resolution: timedelta, allowed: bool
) -> None:
    closed_at = RESOLVED_AT + timedelta(days=1) if status is CLOSED else None
    before = state(status, last_resolved_at=RESOLVED_AT, closed_at=closed_at)
    now = RESOLVED_AT + after_resolution

    assert rating_allowed(status, RESOLVED_AT, closed_at, now) is allowed
    if allowed:
        assert plan_rating(before, 3, None, now).changes["rating_score"] == 3
    else:
        refusal = refusal_of(lambda: plan_rating(before, 3, None, now))
        assert type(refusal) is RatingNotAllowed
        assert refusal.detail == (
            "Support request 7 can be rated only within 14 days of its resolution."
        )


def test_a_request_closed_without_resolution_is_rated_within_14_days_of_closing() -> None:
    closed_at = RESOLVED_AT
    before = state(CLOSED, closed_at=closed_at, last_resolved_at=None)

    assert rating_window_open(None, closed_at, closed_at + RATING_WINDOW)
    assert plan_rating(before, 1, None, closed_at + RATING_WINDOW).changes["rating_score"] == 1
    late = closed_at + RATING_WINDOW + timedelta(milliseconds=1)
    assert type(refusal_of(lambda: plan_rating(before, 1, None, late))) is RatingNotAllowed


def test_no_rating_window_without_a_resolution_or_a_closing() -> None:
    assert not rating_window_open(None, None, NOW)
    assert not rating_allowed(RESOLVED, None, None, NOW)


# -- internal notes --------------------------------------------------------------


@pytest.mark.parametrize("status", list(Status))
def test_an_internal_note_changes_no_column_and_records_only_its_entry(status: Status) -> None:
    plan = plan_internal_note(state(status), NOW)

    assert plan.changes == {}  # no status, assignee, updated_at nor last admin message
    assert plan.events == (Recorded("internal_note_added", {"messageId": NEW_MESSAGE}),)
    assert plan.at == NOW
