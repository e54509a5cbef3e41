"""Device and app context: ``create`` takes an optional ``device``, the spec validates it,
the ``device_*`` columns store it, and every view of the request shows it (``null`` when
the app sent none)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import (
    ADMIN,
    MOBILE,
    admin,
    assert_problem,
    create,
    customer,
    error_fields,
    stored_request,
)

FULL_DEVICE = {
    "platform": "ios",
    "osVersion": "18.2",
    "appVersion": "4.2.1",
    "appBuild": "1042",
    "deviceModel": "iPhone15,3",
    "locale": "de-DE",
    "timeZone": "Europe/Berlin",
}
STORED_COLUMNS = {
    "platform": "device_platform",
    "osVersion": "device_os_version",
    "appVersion": "device_app_version",
    "appBuild": "device_app_build",
    "deviceModel": "device_model",
    "locale": "device_locale",
    "timeZone": "device_time_zone",
}
BODY = {"category": "technical", "subject": "App crashes", "message": "It crashes."}


def _post(client: Any, device: Any, headers: dict[str, str] | None = None) -> Any:
    return client.post(MOBILE, json={**BODY, "device": device}, headers=headers or customer())


def test_device_is_stored_in_its_columns_and_shown_on_every_view(client: Any, db: Any) -> None:
    alice = customer()
    created = create(client, alice, device=FULL_DEVICE)

    assert created["device"] == FULL_DEVICE
    row = stored_request(db, created["id"])
    assert {name: row[column] for name, column in STORED_COLUMNS.items()} == FULL_DEVICE
    mobile_detail = client.get(f"{MOBILE}/{created['id']}", headers=alice).json()["data"]
    mobile_item = client.get(MOBILE, headers=alice).json()["data"][0]
    admin_detail = client.get(f"{ADMIN}/{created['id']}", headers=admin()).json()["data"]
    admin_item = client.get(ADMIN, headers=admin()).json()["data"][0]
    for view in (mobile_detail, mobile_item, admin_detail, admin_item):
        assert view["device"] == FULL_DEVICE


def test_device_is_null_when_not_sent(client: Any, db: Any) -> None:
    alice = customer()
    created = create(client, alice)

    assert created["device"] is None
    row = stored_request(db, created["id"])
    assert all(row[column] is None for column in STORED_COLUMNS.values())
    assert client.get(f"{MOBILE}/{created['id']}", headers=alice).json()["data"]["device"] is None
    assert client.get(f"{ADMIN}/{created['id']}", headers=admin()).json()["data"]["device"] is None
    assert client.get(ADMIN, headers=admin()).json()["data"][0]["device"] is None


def test_device_fields_not_sent_are_null(client: Any, db: Any) -> None:
    created = create(client, customer(), device={"platform": "android", "appVersion": "4.0"})

    assert created["device"] == {
        "platform": "android",
        "osVersion": None,
        "appVersion": "4.0",
        "appBuild": None,
        "deviceModel": None,
        "locale": None,
        "timeZone": None,
    }
    row = stored_request(db, created["id"])
    assert row["device_platform"] == "android"
    assert row["device_app_version"] == "4.0"
    assert row["device_model"] is None


def test_device_text_fields_are_trimmed(client: Any, db: Any) -> None:
    created = create(
        client,
        customer(),
        device={"platform": "android", "deviceModel": "  Pixel 8 Pro ", "osVersion": "\t15 "},
    )

    assert created["device"]["deviceModel"] == "Pixel 8 Pro"
    assert created["device"]["osVersion"] == "15"
    assert stored_request(db, created["id"])["device_model"] == "Pixel 8 Pro"


@pytest.mark.parametrize(
    "zone", ["Europe/Berlin", "America/Argentina/Buenos_Aires", "UTC", "Etc/GMT+3"]
)
def test_device_accepts_iana_time_zones(client: Any, db: Any, zone: str) -> None:
    created = create(client, customer(), device={"platform": "web", "timeZone": zone})

    assert created["device"]["timeZone"] == zone
    assert stored_request(db, created["id"])["device_time_zone"] == zone


@pytest.mark.parametrize("locale", ["en", "de-DE", "zh-Hans-CN", "es-419", "sr-Latn-RS"])
def test_device_accepts_bcp47_locales(client: Any, db: Any, locale: str) -> None:
    created = create(client, customer(), device={"platform": "ios", "locale": locale})

    assert created["device"]["locale"] == locale
    assert stored_request(db, created["id"])["device_locale"] == locale


@pytest.mark.parametrize(
    ("device", "field"),
    [
        ({"platform": "symbian"}, "device.platform"),
        ({"appVersion": "4.2.1"}, "device.platform"),
        ({"platform": "ios", "osVersion": "1" * 33}, "device.osVersion"),
        ({"platform": "ios", "appVersion": "4." + "1" * 31}, "device.appVersion"),
        ({"platform": "ios", "appBuild": "b" * 33}, "device.appBuild"),
        ({"platform": "ios", "deviceModel": "m" * 65}, "device.deviceModel"),
        ({"platform": "ios", "appVersion": "   "}, "device.appVersion"),
        ({"platform": "ios", "deviceModel": "Pixel\n8"}, "device.deviceModel"),
        ({"platform": "ios", "locale": "german"}, "device.locale"),
        ({"platform": "ios", "locale": "de_DE"}, "device.locale"),
        ({"platform": "ios", "locale": "en-" + "a" * 33}, "device.locale"),
        ({"platform": "ios", "timeZone": "Berlin Time"}, "device.timeZone"),
        ({"platform": "ios", "timeZone": "+02:00"}, "device.timeZone"),
        ({"platform": "ios", "timeZone": "../etc/passwd"}, "device.timeZone"),
        ({"platform": "ios", "timeZone": "Europe/" + "B" * 60}, "device.timeZone"),
        ({"platform": "ios", "pushToken": "abc"}, "device.pushToken"),
        ("ios", "device"),
    ],
    ids=[
        "bad-platform",
        "platform-missing",
        "os-version-too-long",
        "app-version-too-long",
        "app-build-too-long",
        "device-model-too-long",
        "blank-app-version",
        "control-character",
        "bad-locale",
        "locale-with-underscore",
        "locale-too-long",
        "bad-zone",
        "offset-is-not-a-zone",
        "zone-path",
        "zone-too-long",
        "unknown-field",
        "not-an-object",
    ],
)
def test_device_that_breaks_a_rule_is_422_naming_the_field(
    client: Any, db: Any, device: Any, field: str
) -> None:
    response = _post(client, device)

    body = assert_problem(response, 422, "validation_failed")
    assert error_fields(body) == [field]
    with db.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM support_requests").scalar() == 0


def test_device_is_never_shown_with_an_admin_uuid_on_mobile(client: Any) -> None:
    alice = customer()
    created = create(client, alice, device=FULL_DEVICE)

    detail = client.get(f"{MOBILE}/{created['id']}", headers=alice).json()["data"]

    assert "tags" not in detail
    assert "assignedAdminId" not in detail
    assert set(detail["device"]) == set(FULL_DEVICE)
