"""The admin API on one request: detail, reply, PATCH, the admins list and the events.

Also the role rules (customer tokens on admin operations, admin tokens on mobile
ones) and the promise that mobile responses never show an admin UUID.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from tests.helpers import (
    ADMIN,
    MOBILE,
    UUID_PATTERN,
    admin,
    admin_id_of,
    assert_problem,
    bearer,
    create,
    customer,
    known_admin,
    mint,
    move_to,
    post_reply,
    snapshot,
    stored_request,
    stored_rows,
)

NOTE = "Fixed in app version 4.2.1."
ADMINS = "/api/admin/admins"
ADMIN_ON_OPEN = ["reply", "assign", "status:in_progress", "status:resolved", "status:closed"]


def _patch(client: Any, headers: dict[str, str], request_id: int, body: Any) -> Any:
    return client.patch(f"{ADMIN}/{request_id}", json=body, headers=headers)


def _fields(response: Any) -> list[str]:
    return [error["field"] for error in response.json()["errors"]]


def _events(client: Any, headers: dict[str, str], request_id: int) -> list[dict[str, Any]]:
    response = client.get(f"{ADMIN}/{request_id}/events", headers=headers)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


# -- detail ----------------------------------------------------------------------


def test_admin_detail_is_the_mobile_detail_plus_assignee_customer_and_author_ids(
    client: Any,
) -> None:
    alice = customer(name="Alice", picture="https://cdn.example.com/alice.png")
    staff = known_admin(client, name="Sam Staff", picture="https://cdn.example.com/sam.png")
    request_id = create(client, alice)["id"]
    post_reply(client, staff, request_id, "Thanks, we are looking into it.", api=ADMIN)
    mobile = client.get(f"{MOBILE}/{request_id}", headers=alice).json()["data"]

    response = client.get(f"{ADMIN}/{request_id}", headers=admin())

    assert response.status_code == 200, response.text
    detail = response.json()["data"]
    assert response.json()["message"]
    # The customer's own read state is theirs; staff see it as how far the customer has read.
    read_state = {"unreadCount", "lastReadMessageId"}
    assert set(detail) == set(mobile) - read_state | {
        "assignedAdminId",
        "customer",
        "customerLastReadMessageId",
        "tags",
    }
    assert detail["customerLastReadMessageId"] == mobile["lastReadMessageId"]
    for key in set(mobile) - {"messages", "allowedActions"} - read_state:
        assert detail[key] == mobile[key], key
    assert detail["assignedAdminId"] == admin_id_of(staff)
    alice_id = admin_id_of(alice)  # the token's sub, whatever its role
    assert detail["customer"] == {
        "id": alice_id,
        "name": "Alice",
        "image": "https://cdn.example.com/alice.png",
    }
    assert [m["authorId"] for m in detail["messages"]] == [alice_id, admin_id_of(staff)]
    assert [m["internal"] for m in detail["messages"]] == [False, False]
    staff_only = {"authorId", "internal"}
    assert [{k: v for k, v in m.items() if k not in staff_only} for m in detail["messages"]] == (
        mobile["messages"]
    )
    assert detail["messages"][1]["authorName"] == "Sam Staff"
    assert detail["messages"][1]["authorImage"] == "https://cdn.example.com/sam.png"
    assert mobile["allowedActions"] == ["reply"]
    assert detail["allowedActions"] == [
        "reply",
        "assign",
        "status:open",
        "status:resolved",
        "status:closed",
    ]


def test_admin_detail_of_an_unassigned_request_has_null_assignee(client: Any) -> None:
    request_id = create(client, customer(name=None))["id"]
    detail = client.get(f"{ADMIN}/{request_id}", headers=admin()).json()["data"]
    assert detail["assignedAdminId"] is None
    assert detail["isAssigned"] is False
    assert detail["customer"]["name"] is None
    assert detail["customer"]["image"] is None
    assert detail["allowedActions"] == ADMIN_ON_OPEN


ADMIN_OPERATIONS = {
    "detail": ("GET", "{base}/{id}", None),
    "reply": ("POST", "{base}/{id}/messages", {"body": "Hello."}),
    "update": ("PATCH", "{base}/{id}", {"status": "in_progress"}),
    "events": ("GET", "{base}/{id}/events", None),
}


@pytest.mark.parametrize("operation", list(ADMIN_OPERATIONS))
def test_admin_operation_on_an_unknown_request_is_404(client: Any, db: Any, operation: str) -> None:
    existing = create(client, customer())["id"]
    before = snapshot(db, existing)
    method, template, body = ADMIN_OPERATIONS[operation]
    path = template.format(base=ADMIN, id=existing + 1000)
    response = client.request(method, path, json=body, headers=admin())
    problem = assert_problem(response, 404, "not_found")
    assert str(existing + 1000) in problem["detail"]
    assert snapshot(db, existing) == before
    assert stored_rows(db, "messages", existing + 1000) == []


@pytest.mark.parametrize("operation", list(ADMIN_OPERATIONS))
@pytest.mark.parametrize("bad_id", ["abc", "0", "-1", "1.5", "9223372036854775808"])
def test_admin_operation_with_a_malformed_id_is_400(
    client: Any, operation: str, bad_id: str
) -> None:
    method, template, body = ADMIN_OPERATIONS[operation]
    response = client.request(
        method, template.format(base=ADMIN, id=bad_id), json=body, headers=admin()
    )
    assert_problem(response, 400, "invalid_path_param")


# -- admin reply -------------------------------------------------------------------


def test_admin_reply_on_open_starts_work_and_assigns_the_replier(client: Any, db: Any) -> None:
    request_id = create(client, customer())["id"]
    staff = admin(name="Sam Staff", picture="https://cdn.example.com/sam.png")

    response = post_reply(client, staff, request_id, "  We are looking into it.  ", api=ADMIN)

    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert data["status"] == "in_progress"
    assert data["assignedAdminId"] == admin_id_of(staff)
    assert data["isAssigned"] is True
    last = data["messages"][-1]
    assert last["authorType"] == "admin"
    assert last["authorId"] == admin_id_of(staff)
    assert last["authorName"] == "Sam Staff"
    assert last["authorImage"] == "https://cdn.example.com/sam.png"
    assert last["body"] == "We are looking into it."
    assert data["lastAdminMessageAt"] == last["createdAt"] == data["updatedAt"]
    stored = stored_request(db, request_id)
    assert stored["status"] == "in_progress"
    assert stored["assigned_admin_id"] == admin_id_of(staff)
    messages = stored_rows(db, "messages", request_id)
    assert len(messages) == 2
    assert messages[-1]["body"] == "We are looking into it."
    assert messages[-1]["author_id"] == admin_id_of(staff)
    assert stored["last_admin_message_at"] == messages[-1]["created_at"]


def test_admin_reply_on_open_keeps_an_existing_assignee(client: Any, db: Any) -> None:
    owner_admin = known_admin(client)
    request_id = create(client, customer())["id"]
    _patch(client, owner_admin, request_id, {"assignedAdminId": admin_id_of(owner_admin)})

    response = post_reply(client, admin(), request_id, "Another agent chiming in.", api=ADMIN)

    assert response.status_code == 201, response.text
    assert response.json()["data"]["status"] == "in_progress"
    assert response.json()["data"]["assignedAdminId"] == admin_id_of(owner_admin)
    assert stored_request(db, request_id)["assigned_admin_id"] == admin_id_of(owner_admin)


def test_admin_reply_on_in_progress_keeps_status_and_takes_no_ownership(
    client: Any, db: Any
) -> None:
    request_id = create(client, customer())["id"]
    move_to(client, admin(), request_id, "in_progress")

    response = post_reply(client, admin(), request_id, "Still on it.", api=ADMIN)

    assert response.status_code == 201, response.text
    assert response.json()["data"]["status"] == "in_progress"
    assert response.json()["data"]["assignedAdminId"] is None
    stored = stored_request(db, request_id)
    assert (stored["status"], stored["assigned_admin_id"]) == ("in_progress", None)


def test_admin_reply_on_resolved_stays_resolved_with_its_note(client: Any, db: Any) -> None:
    request_id = create(client, customer())["id"]
    resolved = move_to(client, admin(), request_id, "resolved")

    response = post_reply(client, admin(), request_id, "One more tip: restart the app.", api=ADMIN)

    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert data["status"] == "resolved"
    assert data["resolutionNote"] == resolved["resolutionNote"]
    assert data["resolvedAt"] == resolved["resolvedAt"]
    stored = stored_request(db, request_id)
    assert stored["status"] == "resolved"
    assert stored["resolution_note"] == resolved["resolutionNote"]
    assert len(stored_rows(db, "messages", request_id)) == 2


def test_admin_reply_on_closed_is_400_request_closed_and_stores_nothing(
    client: Any, db: Any
) -> None:
    request_id = create(client, customer())["id"]
    move_to(client, admin(), request_id, "closed")
    before = snapshot(db, request_id)

    response = post_reply(client, admin(), request_id, "Too late.", api=ADMIN)

    problem = assert_problem(response, 400, "request_closed")
    assert problem["message"] == problem["detail"]
    assert snapshot(db, request_id) == before


@pytest.mark.parametrize(
    "body",
    [{"body": "   "}, {"body": ""}, {}, {"body": "x" * 5001}, {"body": "ok", "extra": 1}],
    ids=["blank", "empty", "missing", "too-long", "unknown-field"],
)
def test_admin_reply_with_an_invalid_body_is_422_and_stores_nothing(
    client: Any, db: Any, body: dict[str, Any]
) -> None:
    request_id = create(client, customer())["id"]
    before = snapshot(db, request_id)
    response = client.post(f"{ADMIN}/{request_id}/messages", json=body, headers=admin())
    assert_problem(response, 422, "validation_failed")
    assert _fields(response)
    assert snapshot(db, request_id) == before


# -- PATCH -------------------------------------------------------------------------


def test_resolving_with_a_note_sets_resolved_at_and_the_note(client: Any, db: Any) -> None:
    request_id = create(client, customer())["id"]
    response = _patch(
        client, admin(), request_id, {"status": "resolved", "resolutionNote": f"  {NOTE} "}
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["status"] == "resolved"
    assert data["resolutionNote"] == NOTE
    assert data["resolvedAt"] == data["updatedAt"]
    stored = stored_request(db, request_id)
    assert stored["status"] == "resolved"
    assert stored["resolution_note"] == NOTE
    assert stored["resolved_at"] is not None


@pytest.mark.parametrize("start", ["open", "in_progress"])
def test_resolving_without_a_note_is_422_and_changes_nothing(
    client: Any, db: Any, start: str
) -> None:
    request_id = create(client, customer())["id"]
    if start != "open":
        move_to(client, admin(), request_id, start)
    before = snapshot(db, request_id)
    response = _patch(client, admin(), request_id, {"status": "resolved"})
    assert_problem(response, 422, "validation_failed")
    assert _fields(response) == ["resolutionNote"]
    assert snapshot(db, request_id) == before


def test_resolving_again_uses_the_stored_note(client: Any, db: Any) -> None:
    request_id = create(client, customer())["id"]
    resolved = move_to(client, admin(), request_id, "resolved")
    response = _patch(client, admin(), request_id, {"status": "resolved"})
    assert response.status_code == 200, response.text
    assert response.json()["data"]["resolutionNote"] == resolved["resolutionNote"]
    assert response.json()["data"]["resolvedAt"] == resolved["resolvedAt"]
    assert stored_request(db, request_id)["resolution_note"] == resolved["resolutionNote"]


def test_note_alone_on_a_resolved_request_replaces_the_note(client: Any, db: Any) -> None:
    request_id = create(client, customer())["id"]
    resolved = move_to(client, admin(), request_id, "resolved")
    response = _patch(client, admin(), request_id, {"resolutionNote": "Fixed in 4.2.2 instead."})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert (data["status"], data["resolutionNote"]) == ("resolved", "Fixed in 4.2.2 instead.")
    assert data["resolvedAt"] == resolved["resolvedAt"]
    assert stored_request(db, request_id)["resolution_note"] == "Fixed in 4.2.2 instead."


@pytest.mark.parametrize("target", ["open", "in_progress", "closed"])
def test_leaving_resolved_clears_the_note_and_resolved_at(
    client: Any, db: Any, target: str
) -> None:
    request_id = create(client, customer())["id"]
    move_to(client, admin(), request_id, "resolved")
    response = _patch(client, admin(), request_id, {"status": target})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert (data["status"], data["resolutionNote"], data["resolvedAt"]) == (target, None, None)
    stored = stored_request(db, request_id)
    assert (stored["status"], stored["resolution_note"], stored["resolved_at"]) == (
        target,
        None,
        None,
    )


@pytest.mark.parametrize("start", ["open", "in_progress", "resolved"])
def test_closing_sets_closed_at_and_leaves_nothing_to_do(client: Any, db: Any, start: str) -> None:
    owner = customer()
    request_id = create(client, owner)["id"]
    if start != "open":
        move_to(client, admin(), request_id, start)
    response = _patch(client, admin(), request_id, {"status": "closed"})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["status"] == "closed"
    assert data["closedAt"] == data["updatedAt"]
    assert data["allowedActions"] == []
    assert stored_request(db, request_id)["closed_at"] is not None
    mobile = client.get(f"{MOBILE}/{request_id}", headers=owner).json()["data"]
    # Nothing left to do but rate it (within 14 days).
    assert (mobile["closedAt"], mobile["allowedActions"]) == (data["closedAt"], ["rate"])


CHANGES_AFTER_CLOSE = {
    "status-open": {"status": "open"},
    "status-in_progress": {"status": "in_progress"},
    "status-resolved": {"status": "resolved", "resolutionNote": NOTE},
    "status-closed-again": {"status": "closed"},
    "assign": {"assignedAdminId": "KNOWN"},
    "unassign": {"assignedAdminId": None},
    "note": {"resolutionNote": NOTE},
}


@pytest.mark.parametrize("change", list(CHANGES_AFTER_CLOSE))
def test_any_change_after_close_is_409_invalid_transition(
    client: Any, db: Any, change: str
) -> None:
    staff = known_admin(client)
    request_id = create(client, customer())["id"]
    _patch(client, staff, request_id, {"assignedAdminId": admin_id_of(staff)})
    move_to(client, staff, request_id, "closed")
    body = {
        k: (admin_id_of(known_admin(client)) if v == "KNOWN" else v)
        for k, v in CHANGES_AFTER_CLOSE[change].items()
    }
    before = snapshot(db, request_id)

    response = _patch(client, staff, request_id, body)

    problem = assert_problem(response, 409, "invalid_transition")
    assert str(request_id) in problem["detail"]
    assert snapshot(db, request_id) == before


def test_assigning_to_a_seen_admin_then_unassigning(client: Any, db: Any) -> None:
    assignee = known_admin(client, name="Assignee")
    request_id = create(client, customer())["id"]

    assigned = _patch(client, admin(), request_id, {"assignedAdminId": admin_id_of(assignee)})

    assert assigned.status_code == 200, assigned.text
    assert assigned.json()["data"]["assignedAdminId"] == admin_id_of(assignee)
    assert assigned.json()["data"]["isAssigned"] is True
    assert assigned.json()["data"]["status"] == "open"
    assert stored_request(db, request_id)["assigned_admin_id"] == admin_id_of(assignee)

    unassigned = _patch(client, admin(), request_id, {"assignedAdminId": None})

    assert unassigned.status_code == 200, unassigned.text
    assert unassigned.json()["data"]["assignedAdminId"] is None
    assert unassigned.json()["data"]["isAssigned"] is False
    assert stored_request(db, request_id)["assigned_admin_id"] is None


def test_assignee_uuid_in_upper_case_is_stored_in_canonical_lower_case(
    client: Any, db: Any
) -> None:
    assignee = known_admin(client)
    request_id = create(client, customer())["id"]
    response = _patch(
        client, admin(), request_id, {"assignedAdminId": admin_id_of(assignee).upper()}
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"]["assignedAdminId"] == admin_id_of(assignee)
    assert stored_request(db, request_id)["assigned_admin_id"] == admin_id_of(assignee)


def test_assigning_to_an_admin_the_service_never_saw_is_422(client: Any, db: Any) -> None:
    request_id = create(client, customer())["id"]
    never_seen = str(uuid.uuid4())
    before = snapshot(db, request_id)
    response = _patch(client, admin(), request_id, {"assignedAdminId": never_seen})
    assert_problem(response, 422, "validation_failed")
    assert _fields(response) == ["assignedAdminId"]
    assert snapshot(db, request_id) == before


def test_a_customer_id_is_not_an_admin_to_assign(client: Any, db: Any) -> None:
    request_id = create(client, customer())["id"]
    # A customer whose sub happens to be a UUID is still not an admin.
    customer_uuid = str(uuid.uuid4())
    create(client, bearer(mint(customer_uuid)))
    response = _patch(client, admin(), request_id, {"assignedAdminId": customer_uuid})
    assert_problem(response, 422, "validation_failed")
    assert stored_request(db, request_id)["assigned_admin_id"] is None


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, ["body"]),
        ({"status": "pending"}, ["status"]),
        ({"status": None}, ["status"]),
        ({"status": "resolved", "resolutionNote": "   "}, ["resolutionNote"]),
        ({"resolutionNote": None}, ["resolutionNote"]),
        ({"assignedAdminId": "not-a-uuid"}, ["assignedAdminId"]),
        ({"assignedAdminId": 42}, ["assignedAdminId"]),
        ({"priority": "high"}, ["priority"]),
        ({"status": "closed", "closedAt": "2026-01-01T00:00:00.000Z"}, ["closedAt"]),
    ],
    ids=[
        "empty",
        "unknown-status",
        "null-status",
        "blank-note",
        "null-note",
        "malformed-assignee",
        "numeric-assignee",
        "unknown-field",
        "read-only-field",
    ],
)
def test_patch_breaking_the_schema_is_422_and_changes_nothing(
    client: Any, db: Any, body: dict[str, Any], fields: list[str]
) -> None:
    request_id = create(client, customer())["id"]
    before = snapshot(db, request_id)
    response = _patch(client, admin(), request_id, body)
    assert_problem(response, 422, "validation_failed")
    assert _fields(response) == fields
    assert snapshot(db, request_id) == before


@pytest.mark.parametrize(
    ("start", "body"),
    [
        ("open", {"resolutionNote": NOTE}),
        ("in_progress", {"resolutionNote": NOTE}),
        ("in_progress", {"status": "open", "resolutionNote": NOTE}),
        ("resolved", {"status": "open", "resolutionNote": NOTE}),
        ("resolved", {"status": "closed", "resolutionNote": NOTE}),
    ],
    ids=["open", "in_progress", "to-open", "resolved-to-open", "resolved-to-closed"],
)
def test_note_on_a_request_that_is_not_and_does_not_become_resolved_is_422(
    client: Any, db: Any, start: str, body: dict[str, Any]
) -> None:
    request_id = create(client, customer())["id"]
    if start != "open":
        move_to(client, admin(), request_id, start)
    before = snapshot(db, request_id)
    response = _patch(client, admin(), request_id, body)
    assert_problem(response, 422, "validation_failed")
    assert _fields(response) == ["resolutionNote"]
    assert snapshot(db, request_id) == before


def test_patch_lists_every_rule_it_breaks_and_applies_none_of_the_change(
    client: Any, db: Any
) -> None:
    request_id = create(client, customer())["id"]
    before = snapshot(db, request_id)
    body = {"status": "in_progress", "assignedAdminId": str(uuid.uuid4()), "resolutionNote": NOTE}
    response = _patch(client, admin(), request_id, body)
    assert_problem(response, 422, "validation_failed")
    assert sorted(_fields(response)) == ["assignedAdminId", "resolutionNote"]
    assert snapshot(db, request_id) == before


def test_status_and_assignee_change_together_in_one_patch(client: Any, db: Any) -> None:
    assignee = known_admin(client)
    request_id = create(client, customer())["id"]
    body = {"status": "resolved", "resolutionNote": NOTE, "assignedAdminId": admin_id_of(assignee)}
    response = _patch(client, admin(), request_id, body)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert (data["status"], data["resolutionNote"], data["assignedAdminId"]) == (
        "resolved",
        NOTE,
        admin_id_of(assignee),
    )
    stored = stored_request(db, request_id)
    assert (stored["status"], stored["assigned_admin_id"]) == ("resolved", admin_id_of(assignee))


def test_patch_that_changes_nothing_writes_no_event_and_keeps_updated_at(
    client: Any, db: Any
) -> None:
    request_id = create(client, customer())["id"]
    before = snapshot(db, request_id)
    response = _patch(client, admin(), request_id, {"status": "open", "assignedAdminId": None})
    assert response.status_code == 200, response.text
    assert response.json()["data"]["updatedAt"] == response.json()["data"]["createdAt"]
    assert snapshot(db, request_id) == before


# -- the admins list -----------------------------------------------------------------


def test_admins_lists_every_admin_whose_token_was_accepted_by_name(client: Any) -> None:
    zoe = admin(name="Zoe", picture="https://cdn.example.com/zoe.png")
    bo = admin(name="Bo")
    request_id = create(client, customer())["id"]
    assert client.get(f"{ADMIN}/{request_id}", headers=zoe).status_code == 200
    assert post_reply(client, bo, request_id, "Hi.", api=ADMIN).status_code == 201

    response = client.get(ADMINS, headers=bo)

    assert response.status_code == 200, response.text
    assert response.json()["data"] == [
        {"id": admin_id_of(bo), "name": "Bo", "image": None},
        {"id": admin_id_of(zoe), "name": "Zoe", "image": "https://cdn.example.com/zoe.png"},
    ]


def test_admins_list_has_no_customers_and_no_refused_tokens(client: Any) -> None:
    caller = admin(name="Caller")
    customer_uuid = str(uuid.uuid4())
    create(client, bearer(mint(customer_uuid, name="Customer With UUID Sub")))
    wrong_key = bearer(
        mint(str(uuid.uuid4()), secret="another-secret-" + "y" * 40, role="admin", name="Forger")
    )
    assert client.get(ADMINS, headers=wrong_key).status_code == 401
    expired = bearer(mint(str(uuid.uuid4()), ttl=-60, role="admin", name="Expired"))
    assert client.get(ADMINS, headers=expired).status_code == 401

    response = client.get(ADMINS, headers=caller)

    assert response.status_code == 200, response.text
    assert response.json()["data"] == [{"id": admin_id_of(caller), "name": "Caller", "image": None}]


def test_admins_list_shows_the_name_and_picture_of_the_latest_token(client: Any) -> None:
    admin_id = str(uuid.uuid4())
    client.get(ADMINS, headers=admin(admin_id, name="Old Name"))
    renamed = admin(admin_id, name="New Name", picture="https://cdn.example.com/new.png")
    response = client.get(ADMINS, headers=renamed)
    assert response.json()["data"] == [
        {"id": admin_id, "name": "New Name", "image": "https://cdn.example.com/new.png"}
    ]


def test_an_admin_seen_only_in_the_queue_can_be_assigned(client: Any, db: Any) -> None:
    watcher = admin(name="Watcher")
    assert client.get(ADMIN, headers=watcher).status_code == 200
    request_id = create(client, customer())["id"]
    response = _patch(client, admin(), request_id, {"assignedAdminId": admin_id_of(watcher)})
    assert response.status_code == 200, response.text
    assert stored_request(db, request_id)["assigned_admin_id"] == admin_id_of(watcher)


# -- events --------------------------------------------------------------------------


def test_events_record_a_full_lifecycle_oldest_first(client: Any) -> None:
    alice = customer()
    first = known_admin(client, name="First Agent")
    second = known_admin(client, name="Second Agent")
    a, b = admin_id_of(first), admin_id_of(second)
    created = create(client, alice, category="payment", subject="Refund missing")
    request_id = created["id"]
    alice_id = client.get(f"{ADMIN}/{request_id}", headers=first).json()["data"]["customer"]["id"]

    steps = [created]
    steps.append(post_reply(client, alice, request_id, "Any news?").json()["data"])
    steps.append(post_reply(client, first, request_id, "Checking.", api=ADMIN).json()["data"])
    steps.append(_patch(client, first, request_id, {"assignedAdminId": b}).json()["data"])
    steps.append(move_to(client, second, request_id, "resolved"))
    steps.append(_patch(client, second, request_id, {"resolutionNote": "Refunded."}).json()["data"])
    steps.append(post_reply(client, alice, request_id, "Not received.").json()["data"])
    steps.append(move_to(client, first, request_id, "closed"))
    times = [step["updatedAt"] for step in steps]
    thread = client.get(f"{ADMIN}/{request_id}", headers=first).json()["data"]["messages"]
    message_ids = [m["id"] for m in thread]

    events = _events(client, first, request_id)

    def event(kind: str, actor: tuple[str, str], at: str, **changes: Any) -> dict[str, Any]:
        return {
            "type": kind,
            "actor": {"type": actor[0], "id": actor[1]},
            "at": at,
            "changes": {k: {"from": v[0], "to": v[1]} for k, v in changes.items()},
        }

    customer_actor, first_actor, second_actor = ("customer", alice_id), ("admin", a), ("admin", b)
    expected = [
        event(
            "created",
            customer_actor,
            times[0],
            status=(None, "open"),
            category=(None, "payment"),
            subject=(None, "Refund missing"),
        ),
        event(
            "customer_replied",
            customer_actor,
            times[1],
            messageId=(None, message_ids[1]),
            lastCustomerMessageAt=(times[0], times[1]),
        ),
        event(
            "admin_replied",
            first_actor,
            times[2],
            messageId=(None, message_ids[2]),
            lastAdminMessageAt=(None, times[2]),
        ),
        event("status_changed", first_actor, times[2], status=("open", "in_progress")),
        event("assignment_changed", first_actor, times[2], assignedAdminId=(None, a)),
        event("assignment_changed", first_actor, times[3], assignedAdminId=(a, b)),
        event(
            "status_changed",
            second_actor,
            times[4],
            status=("in_progress", "resolved"),
            resolvedAt=(None, times[4]),
        ),
        event(
            "resolution_note_set",
            second_actor,
            times[4],
            resolutionNote=(None, steps[4]["resolutionNote"]),
        ),
        event(
            "resolution_note_set",
            second_actor,
            times[5],
            resolutionNote=(steps[4]["resolutionNote"], "Refunded."),
        ),
        event(
            "customer_replied",
            customer_actor,
            times[6],
            messageId=(None, message_ids[3]),
            lastCustomerMessageAt=(times[1], times[6]),
        ),
        event(
            "status_changed",
            customer_actor,
            times[6],
            status=("resolved", "open"),
            resolvedAt=(times[4], None),
            resolutionNote=("Refunded.", None),
        ),
        event(
            "status_changed",
            first_actor,
            times[7],
            status=("open", "closed"),
            closedAt=(None, times[7]),
        ),
    ]
    assert [{k: v for k, v in e.items() if k != "id"} for e in events] == expected
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    assert len({e["id"] for e in events}) == len(events)


@pytest.mark.parametrize(
    "failure",
    ["reply-on-closed", "change-after-close", "resolve-without-note", "unknown-assignee"],
)
def test_a_refused_change_leaves_no_event(client: Any, db: Any, failure: str) -> None:
    owner = customer()
    staff = known_admin(client)
    request_id = create(client, owner)["id"]
    if failure in ("reply-on-closed", "change-after-close"):
        move_to(client, staff, request_id, "closed")
    events_before = _events(client, staff, request_id)
    rows_before = stored_rows(db, "request_events", request_id)

    if failure == "reply-on-closed":
        responses = [
            post_reply(client, owner, request_id, "Hello?"),
            post_reply(client, staff, request_id, "Hello.", api=ADMIN),
        ]
        expected = {400}
    elif failure == "change-after-close":
        responses = [
            _patch(client, staff, request_id, {"status": "open"}),
            _patch(client, staff, request_id, {"assignedAdminId": admin_id_of(staff)}),
        ]
        expected = {409}
    elif failure == "resolve-without-note":
        responses = [_patch(client, staff, request_id, {"status": "resolved"})]
        expected = {422}
    else:
        body = {"status": "in_progress", "assignedAdminId": str(uuid.uuid4())}
        responses = [_patch(client, staff, request_id, body)]
        expected = {422}

    assert {r.status_code for r in responses} == expected
    assert _events(client, staff, request_id) == events_before
    assert stored_rows(db, "request_events", request_id) == rows_before


def test_events_of_an_unknown_request_is_404(client: Any) -> None:
    assert_problem(client.get(f"{ADMIN}/4242/events", headers=admin()), 404, "not_found")


# -- allowedActions on every view ----------------------------------------------------

ADMIN_ACTIONS = {
    "open": ADMIN_ON_OPEN,
    "in_progress": ["reply", "assign", "status:open", "status:resolved", "status:closed"],
    "resolved": ["reply", "assign", "status:open", "status:in_progress", "status:closed"],
    "closed": [],
}


@pytest.mark.parametrize("status", list(ADMIN_ACTIONS))
def test_every_view_of_a_request_carries_the_callers_allowed_actions(
    client: Any, status: str
) -> None:
    owner = customer()
    staff = admin()
    request_id = create(client, owner)["id"]
    views: dict[str, Any] = {}
    if status != "open":
        views["admin-patch"] = move_to(client, staff, request_id, status)
    mobile_actions = {
        "open": ["reply"],
        "in_progress": ["reply"],
        "resolved": ["reply", "rate"],
        "closed": ["rate"],
    }[status]
    views["admin-detail"] = client.get(f"{ADMIN}/{request_id}", headers=staff).json()["data"]
    [views["admin-queue"]] = client.get(ADMIN, headers=staff).json()["data"]
    mobile_detail = client.get(f"{MOBILE}/{request_id}", headers=owner).json()["data"]
    [mobile_item] = client.get(MOBILE, headers=owner).json()["data"]

    for name, view in views.items():
        assert view["status"] == status, name
        assert view["allowedActions"] == ADMIN_ACTIONS[status], name
    assert mobile_detail["allowedActions"] == mobile_actions
    assert mobile_item["allowedActions"] == mobile_actions


# -- roles -------------------------------------------------------------------------

ALL_ADMIN_OPERATIONS = {
    "queue": ("GET", ADMIN, None),
    "admins": ("GET", ADMINS, None),
    **{name: spec for name, spec in ADMIN_OPERATIONS.items()},
}
MOBILE_OPERATIONS = {
    "create": ("POST", "{base}", {"category": "other", "subject": "Hi", "message": "Hello."}),
    "list": ("GET", "{base}", None),
    "detail": ("GET", "{base}/{id}", None),
    "reply": ("POST", "{base}/{id}/messages", {"body": "Hello."}),
}


def _count(db: Any, table: str) -> int:
    import sqlalchemy as sa

    with db.connect() as connection:
        return int(connection.scalar(sa.text(f"SELECT count(*) FROM {table}")))


@pytest.mark.parametrize("operation", list(ALL_ADMIN_OPERATIONS))
def test_customer_token_on_an_admin_operation_is_403_and_changes_nothing(
    client: Any, db: Any, operation: str
) -> None:
    owner = customer()
    request_id = create(client, owner)["id"]
    before = snapshot(db, request_id)
    method, template, body = ALL_ADMIN_OPERATIONS[operation]
    path = template.format(base=ADMIN, id=request_id)

    response = client.request(method, path, json=body, headers=owner)

    problem = assert_problem(response, 403, "forbidden")
    assert problem["message"] == problem["detail"]
    assert snapshot(db, request_id) == before
    assert _count(db, "admins") == 0


@pytest.mark.parametrize("operation", list(MOBILE_OPERATIONS))
def test_admin_token_on_a_mobile_operation_is_403_and_changes_nothing(
    client: Any, db: Any, operation: str
) -> None:
    request_id = create(client, customer())["id"]
    before = snapshot(db, request_id)
    method, template, body = MOBILE_OPERATIONS[operation]
    path = template.format(base=MOBILE, id=request_id)

    response = client.request(method, path, json=body, headers=admin())

    assert_problem(response, 403, "forbidden")
    assert snapshot(db, request_id) == before
    assert _count(db, "support_requests") == 1
    assert _count(db, "messages") == 1


@pytest.mark.parametrize("operation", list(ALL_ADMIN_OPERATIONS))
def test_admin_operation_without_a_token_is_401_with_the_bearer_challenge(
    client: Any, operation: str
) -> None:
    method, template, body = ALL_ADMIN_OPERATIONS[operation]
    response = client.request(method, template.format(base=ADMIN, id=1), json=body)
    assert_problem(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"].startswith("Bearer")


# -- no admin UUID on mobile ---------------------------------------------------------


def test_mobile_responses_contain_no_admin_uuid_after_assignment_and_admin_replies(
    client: Any,
) -> None:
    uuid_in_text = re.compile(UUID_PATTERN)
    owner = customer()
    first = known_admin(client, name="First Agent")
    second = known_admin(client, name="Second Agent")
    created = client.post(
        MOBILE,
        json={"category": "account", "subject": "Locked out", "message": "Help."},
        headers=owner,
    )
    request_id = created.json()["data"]["id"]
    post_reply(client, first, request_id, "Looking.", api=ADMIN)
    _patch(client, first, request_id, {"assignedAdminId": admin_id_of(second)})
    post_reply(client, second, request_id, "Reset sent.", api=ADMIN)
    move_to(client, second, request_id, "resolved")
    reply = post_reply(client, owner, request_id, "Works now.")
    admin_view = client.get(f"{ADMIN}/{request_id}", headers=first)
    assert uuid_in_text.search(admin_view.text), "the admin view should show the UUIDs"

    mobile_texts = {
        "create": created,
        "reply": reply,
        "detail": client.get(f"{MOBILE}/{request_id}", headers=owner),
        "list": client.get(MOBILE, headers=owner),
        "list-open": client.get(MOBILE, params={"status": "open"}, headers=owner),
    }
    for name, response in mobile_texts.items():
        assert response.status_code in (200, 201), (name, response.text)
        assert not uuid_in_text.search(response.text), name
    detail = mobile_texts["detail"].json()["data"]
    assert detail["isAssigned"] is True
    assert [m["authorName"] for m in detail["messages"]] == [
        "Alex Customer",
        "First Agent",
        "Second Agent",
        "Alex Customer",
    ]
