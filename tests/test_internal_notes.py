"""Internal notes, end to end: ``POST /api/admin/support-requests/{id}/messages`` with
``"internal": true``.

A note goes through the lifecycle table as an event that changes nothing: no status,
assignment, ``updatedAt``, last staff message or first response; only the staff version
moves. The customer never sees it: not in the detail, the list, a reply's answer, an ETag,
nor its attachments. Each test asserts status, body and stored state, on both databases.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import (
    ADMIN,
    MOBILE,
    admin,
    admin_id_of,
    assert_problem,
    create,
    customer,
    error_fields,
    known_admin,
    move_to,
    reply,
    snapshot,
    stored_request,
    stored_rows,
)
from tests.test_attachments import png, uploaded

ADMIN_UPLOAD = "/api/admin/attachments"


def note(
    client: Any, headers: dict[str, str], request_id: int, body: str = "VIP customer.", **more: Any
) -> Any:
    return client.post(
        f"{ADMIN}/{request_id}/messages",
        json={"body": body, "internal": True, **more},
        headers=headers,
    )


def mobile_views(client: Any, owner: dict[str, str], request_id: int) -> dict[str, Any]:
    """What the customer sees of their request: detail and list, with their tags."""
    detail = client.get(f"{MOBILE}/{request_id}", headers=owner)
    listing = client.get(MOBILE, headers=owner)
    return {
        "detail": detail.json()["data"],
        "detail_tag": detail.headers["etag"],
        "list": listing.json()["data"],
        "list_tag": listing.headers["etag"],
    }


def test_an_internal_note_is_stored_as_internal_and_changes_nothing_else(client, db):
    owner, staff = customer(), known_admin(client)
    request_id = create(client, owner)["id"]
    before = stored_request(db, request_id)

    response = note(client, staff, request_id, "  Refund approved by finance.  ")

    assert response.status_code == 201, response.text
    data = response.json()["data"]
    *_, added = data["messages"]
    assert (added["body"], added["authorType"], added["internal"]) == (
        "Refund approved by finance.",
        "admin",
        True,
    )
    assert added["authorId"] == admin_id_of(staff)
    assert data["status"] == "open"
    assert (data["isAssigned"], data["assignedAdminId"]) == (False, None)
    assert data["lastAdminMessageAt"] is None
    after = stored_request(db, request_id)
    changed = {k for k in after if after[k] != before[k]}
    assert changed == {"version"}
    assert after["version"] == before["version"] + 1
    assert after["customer_version"] == before["customer_version"]
    assert after["first_response_at"] is None
    stored = stored_rows(db, "messages", request_id)[-1]
    assert (stored["id"], stored["internal"]) == (added["id"], True)
    event = stored_rows(db, "request_events", request_id)[-1]
    assert (event["type"], event["actor_type"]) == ("internal_note_added", "admin")
    assert event["changes"] == {"messageId": {"from": None, "to": added["id"]}}


def test_an_internal_note_on_a_closed_request_is_201(client, db):
    owner, staff = customer(), known_admin(client)
    request_id = create(client, owner)["id"]
    move_to(client, staff, request_id, "closed")

    response = note(client, staff, request_id, "Customer called back; nothing to do.")

    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert data["status"] == "closed"
    assert data["messages"][-1]["internal"] is True
    assert stored_request(db, request_id)["status"] == "closed"
    assert stored_rows(db, "messages", request_id)[-1]["internal"] is True


def test_a_public_staff_reply_is_not_internal(client, db):
    owner, staff = customer(), known_admin(client)
    request_id = create(client, owner)["id"]

    explicit = client.post(
        f"{ADMIN}/{request_id}/messages",
        json={"body": "We are on it.", "internal": False},
        headers=staff,
    )

    assert explicit.status_code == 201, explicit.text
    assert explicit.json()["data"]["messages"][-1]["internal"] is False
    assert explicit.json()["data"]["status"] == "in_progress"
    assert [m["internal"] for m in stored_rows(db, "messages", request_id)] == [False, False]


def test_a_customer_never_sees_an_internal_note(client):
    owner, staff = customer(), known_admin(client)
    request_id = create(client, owner)["id"]
    reply(client, staff, request_id, "Looking into it.", api=ADMIN)
    seen = mobile_views(client, owner, request_id)

    assert note(client, staff, request_id, "Suspected fraud.").status_code == 201

    detail = client.get(
        f"{MOBILE}/{request_id}", headers={**owner, "If-None-Match": seen["detail_tag"]}
    )
    listing = client.get(MOBILE, headers={**owner, "If-None-Match": seen["list_tag"]})
    assert (detail.status_code, listing.status_code) == (304, 304)
    assert detail.headers["etag"] == seen["detail_tag"]
    assert listing.headers["etag"] == seen["list_tag"]
    assert mobile_views(client, owner, request_id) == seen
    assert "Suspected fraud." not in client.get(f"{MOBILE}/{request_id}", headers=owner).text
    # Staff see it, and their tag moved.
    staff_detail = client.get(f"{ADMIN}/{request_id}", headers=staff).json()["data"]
    assert [m["internal"] for m in staff_detail["messages"]] == [False, False, True]


def test_a_customer_reply_answers_without_the_internal_notes(client):
    owner, staff = customer(), known_admin(client)
    request_id = create(client, owner)["id"]
    note(client, staff, request_id, "Do not refund.")

    replied = reply(client, owner, request_id, "Any news?")

    assert [m["body"] for m in replied["messages"]] == ["It crashes.", "Any news?"]
    assert all("internal" not in m for m in replied["messages"])


def test_the_mobile_reply_does_not_take_internal(client, db):
    owner = customer()
    request_id = create(client, owner)["id"]
    before = snapshot(db, request_id)

    response = client.post(
        f"{MOBILE}/{request_id}/messages",
        json={"body": "Let me hide this.", "internal": True},
        headers=owner,
    )

    problem = assert_problem(response, 422, "validation_failed")
    assert error_fields(problem) == ["internal"]
    assert snapshot(db, request_id) == before


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_internal_must_be_a_boolean(client, db, value):
    owner, staff = customer(), known_admin(client)
    request_id = create(client, owner)["id"]
    before = snapshot(db, request_id)

    response = client.post(
        f"{ADMIN}/{request_id}/messages", json={"body": "x", "internal": value}, headers=staff
    )

    assert error_fields(assert_problem(response, 422, "validation_failed")) == ["internal"]
    assert snapshot(db, request_id) == before


def test_an_internal_note_is_in_the_history(client):
    owner, staff = customer(), known_admin(client)
    request_id = create(client, owner)["id"]
    message_id = note(client, staff, request_id).json()["data"]["messages"][-1]["id"]

    events = client.get(f"{ADMIN}/{request_id}/events", headers=staff).json()["data"]

    assert [e["type"] for e in events] == ["created", "internal_note_added"]
    assert events[-1]["changes"] == {"messageId": {"from": None, "to": message_id}}
    assert events[-1]["actor"] == {"type": "admin", "id": admin_id_of(staff)}


def test_an_internal_notes_attachment_is_never_served_to_the_customer(client, db):
    owner, staff = customer(), known_admin(client)
    request_id = create(client, owner)["id"]
    attachment_id = uploaded(client, staff, png(), "ledger.png", path=ADMIN_UPLOAD)
    seen = mobile_views(client, owner, request_id)

    response = note(client, staff, request_id, "Ledger attached.", attachments=[attachment_id])

    assert response.status_code == 201, response.text
    [attached] = response.json()["data"]["messages"][-1]["attachments"]
    assert attached["id"] == attachment_id
    for suffix in ("", "/thumbnail"):
        refused = client.get(f"/api/mobile/attachments/{attachment_id}{suffix}", headers=owner)
        assert_problem(refused, 404, "not_found")
        served = client.get(f"{ADMIN_UPLOAD}/{attachment_id}{suffix}", headers=admin())
        assert served.status_code == 200, suffix
    assert mobile_views(client, owner, request_id) == seen
    assert stored_request(db, request_id)["attachment_count"] == 1


def test_removing_an_internal_notes_attachment_moves_only_the_staff_version(client, db):
    owner, staff = customer(), known_admin(client)
    request_id = create(client, owner)["id"]
    attachment_id = uploaded(client, staff, png(), "ledger.png", path=ADMIN_UPLOAD)
    note(client, staff, request_id, "Ledger attached.", attachments=[attachment_id])
    seen = mobile_views(client, owner, request_id)
    before = stored_request(db, request_id)

    removed = client.delete(f"{ADMIN_UPLOAD}/{attachment_id}", headers=staff)

    assert removed.status_code == 200, removed.text
    assert removed.json()["data"]["removed"] is True
    after = stored_request(db, request_id)
    assert {k for k in after if after[k] != before[k]} == {"version"}
    assert mobile_views(client, owner, request_id) == seen
    assert stored_rows(db, "request_events", request_id)[-1]["type"] == "attachment_removed"
