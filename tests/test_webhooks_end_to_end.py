"""Every change reaches the phone: through the API only, an endpoint registered by staff
receives signed events from the server's own worker, in order, and the push carries the
customer's devices and badge."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import httpx

from support_requests.handlers.app import create_app
from support_requests.handlers.settings import Settings
from tests.helpers import ADMIN, MOBILE, admin, admin_id_of, customer, loopback_lookup
from tests.servers import app_in_thread
from tests.webhook_receiver import receiving

DEVICES = "/api/mobile/devices"
WEBHOOKS = "/api/admin/webhooks"


def _bodies(received: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(arrived.body) for arrived in received]


def test_an_api_change_arrives_signed_in_order_with_the_push(settings: Settings) -> None:
    served = dataclasses.replace(
        settings,
        webhook_allow_private=True,
        webhook_allow_http=True,
        embedded_worker=True,
        validate_responses=False,
        secret_key=b"end-to-end-key-" + b"k" * 20,
    )
    alice, staff = customer(name="Alex Customer"), admin(name="Sam Agent")
    with (
        receiving("whsec_" + "A" * 32) as receiver,
        app_in_thread(create_app(served, lookup=loopback_lookup)) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        added = client.post(
            WEBHOOKS,
            json={
                "url": f"{receiver.url}/hooks",
                "events": [
                    "support_request.created",
                    "support_request.message_created",
                    "support_request.status_changed",
                    "support_request.assigned",
                    "notification.push",
                ],
            },
            headers=staff,
        )
        assert added.status_code == 201, added.text
        receiver.secret = added.json()["data"]["secret"]
        device = client.post(
            DEVICES, json={"platform": "ios", "token": "apns-token-1"}, headers=alice
        )
        assert device.status_code == 201, device.text
        created = client.post(
            MOBILE,
            json={"category": "technical", "subject": "App crashes", "message": "On start."},
            headers=alice,
        )
        assert created.status_code == 201, created.text
        request_id = created.json()["data"]["id"]
        answer = "We are on it: a fix ships tomorrow."
        reply = client.post(f"{ADMIN}/{request_id}/messages", json={"body": answer}, headers=staff)
        assert reply.status_code == 201, reply.text
        admin_view = client.get(f"{ADMIN}/{request_id}", headers=staff).json()["data"]
        received = receiver.wait_for(5, timeout=20)
        time.sleep(0.3)  # nothing more arrives
        received = list(receiver.received)

    assert all(arrived.verified for arrived in received)
    assert len({arrived.webhook_id for arrived in received}) == len(received) == 5
    bodies = _bodies(received)
    assert [body["type"] for body in bodies] == [
        "support_request.created",
        "support_request.message_created",
        "support_request.status_changed",
        "support_request.assigned",
        "notification.push",
    ]
    created_event, message, status, assigned, push = (body["data"] for body in bodies)
    assert created_event["requestId"] == request_id
    assert created_event["request"]["messages"][0]["body"] == "On start."
    assert message["message"]["body"] == answer
    assert message["message"]["authorType"] == "admin"
    assert (status["from"], status["to"]) == ("open", "in_progress")
    assert (assigned["from"], assigned["to"]) == (None, admin_id_of(staff))
    assert admin_view["assignedAdminId"] == admin_id_of(staff)
    assert push["devices"] == [
        {
            "id": device.json()["data"]["id"],
            "platform": "ios",
            "token": "apns-token-1",
            "appId": None,
        }
    ]
    assert push["notification"]["badge"] == 1
    assert push["notification"]["body"] == answer
    assert push["notification"]["requestId"] == request_id
    # Tokens travel in the push only.
    assert all("apns-token-1" not in arrived.body.decode() for arrived in received[:4])
