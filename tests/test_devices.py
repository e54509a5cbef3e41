"""Push devices (``/api/mobile/devices``): register or move a token, 20 per customer, list,
remove; tokens are the customer's to see, never staff's nor another customer's."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from support_requests.handlers.app import create_app
from support_requests.handlers.settings import Settings
from support_requests.openapi import SPEC_PATH
from support_requests.storage.database import Database
from support_requests.storage.devices import MAX_DEVICES_PER_CUSTOMER, DeviceRegistry
from tests.helpers import (
    ADMIN,
    TIMESTAMP_PATTERN,
    admin,
    assert_problem,
    create,
    customer,
    customer_principal,
    error_fields,
    reply,
)

DEVICES = "/api/mobile/devices"
APNS_TOKEN = "740f4707bebcf74f9b7c25d48e3358945f6aa01da5ddb387462c7eaf61bb78ad"


class Ticking:
    """A clock one second later at each reading, so registrations never share a moment."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 17, 10, 0, 0)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def client(settings: Settings) -> Iterator[Any]:
    """The app on a ticking clock (the 20-device cap drops the oldest by registration time)."""
    app = create_app(settings, clock=Ticking())
    with app.test_client() as test_client:
        yield test_client


def register(client: Any, headers: dict[str, str], token: str, **fields: Any) -> Any:
    body = {"platform": "ios", "token": token, **fields}
    return client.post(DEVICES, json=body, headers=headers)


def listed(client: Any, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = client.get(DEVICES, headers=headers)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def stored_devices(db: sa.Engine) -> list[dict[str, Any]]:
    with db.connect() as connection:
        rows = connection.execute(sa.text("SELECT * FROM devices ORDER BY registered_at"))
        return [dict(row._mapping) for row in rows]


def token(n: int) -> str:
    return f"fcm:{n:04d}-{'t' * 40}"


def test_a_new_token_is_201_with_location_and_stored_by_its_digest(client: Any, db: Any) -> None:
    alice = customer(sub="alice-devices")

    response = register(client, alice, APNS_TOKEN, appId="com.example.support")

    assert response.status_code == 201, response.text
    device = response.json()["data"]
    assert response.headers["location"] == f"{DEVICES}/{device['id']}"
    assert device["id"].startswith("dev_") and len(device["id"]) == 26
    assert (device["platform"], device["token"], device["appId"]) == (
        "ios",
        APNS_TOKEN,
        "com.example.support",
    )
    assert device["createdAt"] == device["registeredAt"]
    assert re.fullmatch(TIMESTAMP_PATTERN, device["createdAt"])
    [row] = stored_devices(db)
    assert row["id"] == device["id"]
    assert row["customer_id"] == "alice-devices"
    assert row["token"] == APNS_TOKEN
    assert row["token_sha256"] == hashlib.sha256(APNS_TOKEN.encode()).hexdigest()


def test_a_known_token_is_200_with_its_platform_app_and_registration_time_updated(
    client: Any, db: Any
) -> None:
    alice = customer()
    first = register(client, alice, APNS_TOKEN, appId="com.example.old").json()["data"]

    again = register(client, alice, APNS_TOKEN, platform="android")

    assert again.status_code == 200, again.text
    assert "location" not in again.headers
    device = again.json()["data"]
    assert device["id"] == first["id"]
    assert (device["platform"], device["appId"]) == ("android", None)
    assert device["createdAt"] == first["createdAt"]
    assert device["registeredAt"] > first["registeredAt"]
    [row] = stored_devices(db)
    assert (row["platform"], row["app_id"]) == ("android", None)


def test_a_token_registered_by_another_customer_moves_to_the_caller(client: Any, db: Any) -> None:
    alice, bob = customer(sub="alice-phone"), customer(sub="bob-phone")
    first = register(client, alice, APNS_TOKEN).json()["data"]

    moved = register(client, bob, APNS_TOKEN)

    assert moved.status_code == 200, moved.text
    assert moved.json()["data"]["id"] == first["id"]
    assert listed(client, alice) == []
    assert [d["token"] for d in listed(client, bob)] == [APNS_TOKEN]
    [row] = stored_devices(db)
    assert row["customer_id"] == "bob-phone"


def test_the_21st_device_drops_the_one_registered_longest_ago(client: Any, db: Any) -> None:
    alice = customer()
    for n in range(MAX_DEVICES_PER_CUSTOMER):
        assert register(client, alice, token(n)).status_code == 201

    response = register(client, alice, token(MAX_DEVICES_PER_CUSTOMER))

    assert response.status_code == 201, response.text
    tokens = [d["token"] for d in listed(client, alice)]
    assert len(tokens) == MAX_DEVICES_PER_CUSTOMER
    assert token(0) not in tokens
    assert tokens[0] == token(MAX_DEVICES_PER_CUSTOMER)
    assert {row["token"] for row in stored_devices(db)} == set(tokens)


def test_registering_a_token_again_keeps_it_from_being_dropped(client: Any, db: Any) -> None:
    alice = customer()
    for n in range(MAX_DEVICES_PER_CUSTOMER):
        register(client, alice, token(n))

    assert register(client, alice, token(0)).status_code == 200
    register(client, alice, token(99))

    stored = {row["token"] for row in stored_devices(db)}
    assert token(0) in stored and token(1) not in stored
    assert len(stored) == MAX_DEVICES_PER_CUSTOMER


def test_the_list_shows_only_the_callers_devices_newest_first(client: Any) -> None:
    alice, bob = customer(), customer()
    register(client, alice, token(1))
    register(client, bob, token(2))
    register(client, alice, token(3), platform="android", appId="com.example.support")

    mine = listed(client, alice)

    assert [d["token"] for d in mine] == [token(3), token(1)]
    assert set(mine[0]) == {"id", "platform", "token", "appId", "createdAt", "registeredAt"}
    assert [d["token"] for d in listed(client, bob)] == [token(2)]


def test_removing_a_device_is_204_and_it_is_gone(client: Any, db: Any) -> None:
    alice = customer()
    device_id = register(client, alice, token(1)).json()["data"]["id"]

    response = client.delete(f"{DEVICES}/{device_id}", headers=alice)

    assert response.status_code == 204
    assert response.content == b""
    assert listed(client, alice) == []
    assert stored_devices(db) == []


def test_removing_another_customers_device_is_404_as_for_an_unknown_one(
    client: Any, db: Any
) -> None:
    alice, mallory = customer(), customer()
    device_id = register(client, alice, token(1)).json()["data"]["id"]
    unknown = "dev_" + "A" * 22

    foreign = client.delete(f"{DEVICES}/{device_id}", headers=mallory)
    missing = client.delete(f"{DEVICES}/{unknown}", headers=mallory)

    assert_problem(foreign, 404, "not_found")
    assert_problem(missing, 404, "not_found")
    assert foreign.json()["detail"].replace(device_id, "X") == missing.json()["detail"].replace(
        unknown, "X"
    )
    assert [row["id"] for row in stored_devices(db)] == [device_id]


def test_a_malformed_device_id_is_400(client: Any) -> None:
    response = client.delete(f"{DEVICES}/not-a-device", headers=customer())

    assert_problem(response, 400, "invalid_path_param")


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"platform": "web", "token": "t"}, ["platform"]),
        ({"platform": "ios", "token": ""}, ["token"]),
        ({"platform": "ios", "token": "has space"}, ["token"]),
        ({"platform": "ios", "token": "t" * 4097}, ["token"]),
        ({"platform": "ios", "token": "t", "appId": "a" * 256}, ["appId"]),
        ({"platform": "ios", "token": "t", "appId": "-starts-with-dash"}, ["appId"]),
        ({"platform": "ios"}, ["token"]),
        ({"platform": "ios", "token": "t", "customerId": "someone-else"}, ["customerId"]),
    ],
)
def test_a_registration_that_breaks_the_schema_is_422_and_stores_nothing(
    client: Any, db: Any, body: dict[str, Any], fields: list[str]
) -> None:
    response = client.post(DEVICES, json=body, headers=customer())

    problem = assert_problem(response, 422, "validation_failed")
    assert error_fields(problem) == fields
    assert stored_devices(db) == []


def test_a_token_of_4096_characters_is_registered(client: Any, db: Any) -> None:
    response = register(client, customer(), "t" * 4096)

    assert response.status_code == 201, response.text
    assert len(stored_devices(db)[0]["token"]) == 4096


def test_no_admin_operation_can_show_a_push_token() -> None:
    """The contract: no admin operation's responses reach the ``Device`` schema."""
    spec = yaml.safe_load(SPEC_PATH.read_text())
    schemas = spec["components"]["schemas"]

    def reaches_device(node: Any, seen: set[str]) -> bool:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                name = ref.rsplit("/", 1)[1]
                if name == "Device":
                    return True
                if name in seen:
                    return False
                return reaches_device(schemas[name], seen | {name})
            return any(reaches_device(value, seen) for value in node.values())
        if isinstance(node, list):
            return any(reaches_device(value, seen) for value in node)
        return False

    admin_operations = [
        operation
        for item in spec["paths"].values()
        for operation in item.values()
        if isinstance(operation, dict) and "admin" in operation.get("tags", [])
    ]
    assert admin_operations
    assert not [o["operationId"] for o in admin_operations if reaches_device(o["responses"], set())]
    registration = spec["paths"][DEVICES]["post"]["responses"]["201"]
    assert reaches_device(registration, set())


def test_staff_never_see_a_customers_push_token(client: Any) -> None:
    alice, agent = customer(), admin()
    register(client, alice, APNS_TOKEN)
    request_id = create(client, alice)["id"]
    reply(client, agent, request_id, "We are on it.", api=ADMIN)

    seen = [
        client.get(f"{ADMIN}/{request_id}", headers=agent),
        client.get(ADMIN, headers=agent),
        client.get(f"{ADMIN}/{request_id}/events", headers=agent),
    ]

    for response in seen:
        assert response.status_code == 200, response.text
        assert APNS_TOKEN not in response.text
    assert client.get(DEVICES, headers=agent).status_code == 403


# -- at once (real concurrency on PostgreSQL; SQLite runs one writer at a time) -----------


def _at_once(database_url: str, work: Any) -> Any:
    async def run() -> Any:
        database = Database(database_url)
        try:
            return await work(DeviceRegistry(database))
        finally:
            await database.dispose()

    return asyncio.run(run())


def test_one_new_token_registered_by_two_customers_at_once_is_stored_once(
    database_url: str, db: Any
) -> None:
    alice, bob = customer_principal(), customer_principal()

    async def both(devices: DeviceRegistry) -> list[Any]:
        return list(
            await asyncio.gather(
                *(
                    devices.register(who, platform="ios", token=APNS_TOKEN, app_id=None)
                    for who in (alice, bob)
                )
            )
        )

    first, second = _at_once(database_url, both)

    assert sorted([first.created, second.created]) == [False, True]
    assert first.device.id == second.device.id
    [row] = stored_devices(db)
    assert row["customer_id"] in (alice.sub, bob.sub)


def test_registrations_of_one_customer_at_once_never_keep_more_than_20(
    database_url: str, db: Any
) -> None:
    alice = customer_principal()

    async def many(devices: DeviceRegistry) -> None:
        await asyncio.gather(
            *(
                devices.register(alice, platform="android", token=token(n), app_id=None)
                for n in range(MAX_DEVICES_PER_CUSTOMER + 5)
            )
        )

    _at_once(database_url, many)

    assert len(stored_devices(db)) == MAX_DEVICES_PER_CUSTOMER
