"""Every cell of the lifecycle table, exercised through the HTTP API.

For each actor, event and current status the request is brought to that status
through the API, the event is sent as the actor would send it, and the answer
and the stored state must be what ``domain.lifecycle.decide`` says: the target
status with its side effects, or the refusal with nothing written.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from support_requests.domain.lifecycle import Actor, Event, Refusal, Status, allowed_actions, decide
from tests.helpers import (
    ADMIN,
    MOBILE,
    admin_id_of,
    create,
    customer,
    known_admin,
    move_to,
    snapshot,
    stored_request,
    stored_rows,
)

# The exhaustive sweep runs in the full suite; the fast tier checks the table itself
# (test_lifecycle) and each transition rule by name through HTTP (test_admin_requests,
# test_mobile_reply).
pytestmark = pytest.mark.slow

CELLS = list(itertools.product(Actor, Event, Status))
NOTE = "Fixed in app version 4.2.1."
REFUSAL_ANSWERS = {
    Refusal.NOT_ALLOWED: (403, "forbidden"),
    Refusal.REQUEST_CLOSED: (400, "request_closed"),
    Refusal.INVALID_TRANSITION: (409, "invalid_transition"),
    Refusal.RATING_NOT_ALLOWED: (409, "rating_not_allowed"),
}


def _send(
    client: Any,
    event: Event,
    request_id: int,
    headers: dict[str, str],
    assignee_id: str,
) -> Any:
    """The HTTP call that performs ``event``, sent with ``headers``."""
    if event is Event.CUSTOMER_REPLY:
        return client.post(
            f"{MOBILE}/{request_id}/messages", json={"body": "More detail."}, headers=headers
        )
    if event is Event.ADMIN_REPLY:
        return client.post(
            f"{ADMIN}/{request_id}/messages", json={"body": "We are on it."}, headers=headers
        )
    if event is Event.INTERNAL_NOTE:
        return client.post(
            f"{ADMIN}/{request_id}/messages",
            json={"body": "Staff only.", "internal": True},
            headers=headers,
        )
    if event is Event.RATE:
        return client.put(f"{MOBILE}/{request_id}/rating", json={"score": 4}, headers=headers)
    if event is Event.ASSIGN:
        body: dict[str, Any] = {"assignedAdminId": assignee_id}
    elif event is Event.SET_NOTE:
        body = {"resolutionNote": NOTE}
    else:
        target = event.value.removeprefix("status:")
        body = {"status": target}
        if target == Status.RESOLVED:
            body["resolutionNote"] = NOTE
    return client.patch(f"{ADMIN}/{request_id}", json=body, headers=headers)


@pytest.mark.parametrize(
    ("actor", "event", "status"),
    CELLS,
    ids=[f"{a.value}-{e.value}-{s.value}" for a, e, s in CELLS],
)
def test_http_api_follows_the_transition_table_cell(
    client: Any, db: Any, actor: Actor, event: Event, status: Status
) -> None:
    owner = customer()
    staff = known_admin(client, name="Staff Member")
    assignee = known_admin(client, name="Assignee")
    request_id = create(client, owner)["id"]
    if status is not Status.OPEN:
        move_to(client, staff, request_id, status.value)
    headers = owner if actor is Actor.CUSTOMER else staff
    before = snapshot(db, request_id)
    row_before = before[0]

    response = _send(client, event, request_id, headers, admin_id_of(assignee))

    outcome = decide(actor, event, status)
    if outcome.refusal is not None:
        code, problem = REFUSAL_ANSWERS[outcome.refusal]
        assert response.status_code == code, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == problem
        assert snapshot(db, request_id) == before
        return

    assert outcome.to is not None
    if event is Event.SET_NOTE and outcome.to is not Status.RESOLVED:
        # The table lets an admin edit the note; the note rule needs a resolved request.
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "validation_failed"
        assert response.json()["errors"][0]["field"] == "resolutionNote"
        assert snapshot(db, request_id) == before
        return

    replying = event in (Event.CUSTOMER_REPLY, Event.ADMIN_REPLY, Event.INTERNAL_NOTE)
    assert response.status_code == (201 if replying else 200), response.text
    data = response.json()["data"]
    stored = stored_request(db, request_id)
    assert data["status"] == stored["status"] == outcome.to.value
    # Every request here was resolved or closed just now: well within its 14 days to rate.
    assert data["allowedActions"] == allowed_actions(actor, outcome.to, rating_open=True)
    assert (stored["resolved_at"] is not None) is (outcome.to is Status.RESOLVED)
    assert (stored["resolution_note"] is not None) is (outcome.to is Status.RESOLVED)
    assert (stored["closed_at"] is not None) is (outcome.to is Status.CLOSED)

    messages = stored_rows(db, "messages", request_id)
    if replying:
        assert len(messages) == len(before[1]) + 1
        assert messages[-1]["author_type"] == actor.value
        assert messages[-1]["body"] == data["messages"][-1]["body"]
        last_column = f"last_{actor.value}_message_at"
        if event is Event.INTERNAL_NOTE:  # a note is not a message the customer sees
            assert messages[-1]["internal"] is True
            assert stored[last_column] == row_before[last_column]
        else:
            assert stored[last_column] == messages[-1]["created_at"]
    else:
        assert messages == before[1]

    expected_assignee = row_before["assigned_admin_id"]
    if event is Event.ASSIGN:
        expected_assignee = admin_id_of(assignee)
    if outcome.assigns_replier and expected_assignee is None:
        expected_assignee = admin_id_of(staff)
    assert stored["assigned_admin_id"] == expected_assignee
    if actor is Actor.ADMIN:
        assert data["assignedAdminId"] == expected_assignee

    status_events = [
        e
        for e in stored_rows(db, "request_events", request_id)[len(before[2]) :]
        if e["type"] == "status_changed"
    ]
    if outcome.to is status:
        assert status_events == []
    else:
        assert len(status_events) == 1
        assert status_events[0]["changes"]["status"] == {
            "from": status.value,
            "to": outcome.to.value,
        }

    mobile = client.get(f"{MOBILE}/{request_id}", headers=owner).json()["data"]
    assert mobile["status"] == outcome.to.value
    assert mobile["allowedActions"] == allowed_actions(Actor.CUSTOMER, outcome.to, rating_open=True)
