"""Conditional requests for polling: strong ETags, ``If-None-Match`` and ``304 Not Modified``.

The detail and list GETs (mobile and admin) carry an ``ETag`` and ``Cache-Control: private,
no-cache``; a poll that sends the tag back gets a ``304`` with no body until something the
caller sees changes, whichever side changed it. Tags depend on what the caller sees, never
on the token. A request that is not the caller's stays a 404.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import sqlite3
from collections.abc import Iterator
from typing import Any, TypeVar

import jwt
import pytest
import sqlalchemy as sa

from support_requests.domain.errors import NotFound
from support_requests.handlers.app import create_app
from support_requests.handlers.conditional import IfNoneMatch, parse
from support_requests.handlers.settings import Settings
from support_requests.storage.database import STATEMENT_OBSERVERS, Database
from support_requests.storage.models import Base
from support_requests.storage.support_desk import QueueFilters, SupportDesk
from tests.helpers import (
    ADMIN,
    MOBILE,
    SECRET,
    TRANSACTION_CONTROL,
    admin_id_of,
    admin_principal,
    assert_problem,
    bearer,
    create,
    customer,
    customer_principal,
    known_admin,
    mint,
    move_to,
    reply,
    with_desk,
)

T = TypeVar("T")
REQUESTS = Base.metadata.tables["support_requests"]
POLLED = "private, no-cache"
STRONG_ETAG = re.compile(r'"[\x21\x23-\x7e]{1,62}"')


# -- helpers -------------------------------------------------------------------------------


def _sub_of(headers: dict[str, str]) -> str:
    return admin_id_of(headers)  # reads ``sub`` without verifying, whatever the role


def _refreshed(headers: dict[str, str]) -> dict[str, str]:
    """A new token for the same caller (another ``exp``, so another string)."""
    token = headers["Authorization"].split()[1]
    claims = jwt.decode(token, options={"verify_signature": False})
    claims.pop("exp")
    fresh = bearer(mint(claims.pop("sub"), ttl=7200, **claims))
    assert fresh != headers
    return fresh


def _get(client: Any, url: str, headers: dict[str, str], etag: str | None = None, **params: Any):
    sent = dict(headers)
    if etag is not None:
        sent["If-None-Match"] = etag
    return client.get(url, headers=sent, params=params or None)


def _assert_polled_200(response: Any) -> str:
    """A full answer to a conditional GET: JSON body, strong tag, private no-cache."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == POLLED
    etag = str(response.headers["etag"])
    assert STRONG_ETAG.fullmatch(etag), etag
    assert response.json()["data"] is not None
    return etag


def _assert_not_modified(response: Any, etag: str) -> None:
    """A 304: the current tag and caching headers, and nothing else of the representation."""
    assert response.status_code == 304, response.text
    assert response.content == b""
    assert response.headers["etag"] == etag
    assert response.headers["cache-control"] == POLLED
    assert "content-type" not in response.headers
    assert response.headers.get("content-length", "0") == "0"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-request-id"]


def _setting(settings: Settings, **changes: Any) -> Iterator[Any]:
    with create_app(dataclasses.replace(settings, **changes)).test_client() as test_client:
        yield test_client


@pytest.fixture
def unlimited(settings: Settings) -> Iterator[Any]:
    """A client of an app without rate limits (which, on PostgreSQL, write a counter row)."""
    yield from _setting(settings, rate_limit_reads="off", rate_limit_writes="off")


@pytest.fixture
def two_reads_a_minute(settings: Settings) -> Iterator[Any]:
    yield from _setting(settings, rate_limit_reads="2/minute")


class Views:
    """One request seen by its customer and by an admin, with each view's URL and headers."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.customer = customer()
        self.admin = known_admin(client)
        self.id = create(self.client, self.customer)["id"]
        self.mobile_url = f"{MOBILE}/{self.id}"
        self.admin_url = f"{ADMIN}/{self.id}"

    def url_and_headers(self, view: str) -> tuple[str, dict[str, str]]:
        if view == "mobile":
            return self.mobile_url, self.customer
        return self.admin_url, self.admin

    def etag(self, view: str) -> str:
        url, headers = self.url_and_headers(view)
        return _assert_polled_200(_get(self.client, url, headers))


VIEWS = ["mobile", "admin"]


# -- If-None-Match, as RFC 9110 writes it ---------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("*", IfNoneMatch(any=True, opaque_tags=frozenset())),
        (" \t* ", IfNoneMatch(any=True, opaque_tags=frozenset())),
        ('"m1-1-2"', IfNoneMatch(any=False, opaque_tags=frozenset({"m1-1-2"}))),
        ('W/"m1-1-2"', IfNoneMatch(any=False, opaque_tags=frozenset({"m1-1-2"}))),
        ('"a", W/"b" ,"c"', IfNoneMatch(any=False, opaque_tags=frozenset({"a", "b", "c"}))),
        (', ,"a",,', IfNoneMatch(any=False, opaque_tags=frozenset({"a"}))),
        ('"with,comma"', IfNoneMatch(any=False, opaque_tags=frozenset({"with,comma"}))),
        ('""', IfNoneMatch(any=False, opaque_tags=frozenset({""}))),
    ],
)
def test_if_none_match_is_star_or_a_list_of_tags_compared_weakly(value, expected):
    assert parse(value) == expected


@pytest.mark.parametrize(
    "value",
    ["m1-1-2", '"m1-1-2', 'w/"m1-1-2"', '"a" "b"', '*, "a"', '"a";"b"', '"in"side"', "", " , "],
)
def test_a_malformed_or_empty_if_none_match_is_no_condition(value):
    assert parse(value) is None


def test_a_tag_matches_by_its_opaque_part():
    condition = parse('W/"m1-7-3", "a1-7-3"')
    assert condition is not None
    assert condition.matches('"m1-7-3"')
    assert condition.matches('"a1-7-3"')
    assert not condition.matches('"m1-7-4"')


# -- detail ----------------------------------------------------------------------------------


@pytest.mark.parametrize("view", VIEWS)
def test_detail_is_polled_with_a_strong_etag_and_private_no_cache(client, view):
    views = Views(client)
    url, headers = views.url_and_headers(view)

    first = _get(client, url, headers)
    second = _get(client, url, headers)

    etag = _assert_polled_200(first)
    assert _assert_polled_200(second) == etag
    assert first.content == second.content


@pytest.mark.parametrize("view", VIEWS)
def test_detail_unchanged_is_304_without_a_body(client, view):
    views = Views(client)
    url, headers = views.url_and_headers(view)
    etag = views.etag(view)

    _assert_not_modified(_get(client, url, headers, etag), etag)


@pytest.mark.parametrize("view", VIEWS)
def test_detail_unchanged_is_304_for_a_refreshed_token_of_the_same_caller(client, view):
    views = Views(client)
    url, headers = views.url_and_headers(view)
    etag = views.etag(view)

    _assert_not_modified(_get(client, url, _refreshed(headers), etag), etag)


@pytest.mark.parametrize("view", VIEWS)
def test_detail_after_a_customer_reply_is_200_with_a_new_etag(client, view):
    views = Views(client)
    url, headers = views.url_and_headers(view)
    etag = views.etag(view)

    reply(client, views.customer, views.id, "It crashes again.")
    response = _get(client, url, headers, etag)

    assert _assert_polled_200(response) != etag
    assert response.json()["data"]["messages"][-1]["body"] == "It crashes again."


@pytest.mark.parametrize("view", VIEWS)
def test_detail_after_an_admin_reply_is_200_with_a_new_etag(client, view):
    views = Views(client)
    url, headers = views.url_and_headers(view)
    etag = views.etag(view)

    reply(client, views.admin, views.id, "We are on it.", api=ADMIN)
    response = _get(client, url, headers, etag)

    new_etag = _assert_polled_200(response)
    assert new_etag != etag
    assert response.json()["data"]["status"] == "in_progress"
    assert response.json()["data"]["messages"][-1]["body"] == "We are on it."
    _assert_not_modified(_get(client, url, headers, new_etag), new_etag)


@pytest.mark.parametrize("view", VIEWS)
def test_detail_after_a_status_change_is_200_with_a_new_etag(client, view):
    views = Views(client)
    url, headers = views.url_and_headers(view)
    etag = views.etag(view)

    move_to(client, views.admin, views.id, "resolved")
    response = _get(client, url, headers, etag)

    assert _assert_polled_200(response) != etag
    assert response.json()["data"]["status"] == "resolved"


@pytest.mark.parametrize("view", VIEWS)
def test_detail_after_an_assignment_is_200_with_a_new_etag(client, view):
    views = Views(client)
    url, headers = views.url_and_headers(view)
    colleague = known_admin(client, name="Colleague")
    etag = views.etag(view)

    patched = client.patch(
        views.admin_url, json={"assignedAdminId": _sub_of(colleague)}, headers=views.admin
    )
    assert patched.status_code == 200, patched.text
    response = _get(client, url, headers, etag)

    assert _assert_polled_200(response) != etag
    assert response.json()["data"]["isAssigned"] is True


def test_a_patch_that_changes_nothing_keeps_the_etag(client):
    views = Views(client)
    move_to(client, views.admin, views.id, "in_progress")
    etag = views.etag("admin")

    again = client.patch(views.admin_url, json={"status": "in_progress"}, headers=views.admin)
    assert again.status_code == 200, again.text

    _assert_not_modified(_get(client, views.admin_url, views.admin, etag), etag)


def test_mobile_and_admin_views_of_a_request_have_different_etags(client):
    views = Views(client)
    mobile_etag, admin_etag = views.etag("mobile"), views.etag("admin")

    assert mobile_etag != admin_etag
    _assert_polled_200(_get(client, views.mobile_url, views.customer, admin_etag))
    _assert_polled_200(_get(client, views.admin_url, views.admin, mobile_etag))


@pytest.mark.parametrize("view", VIEWS)
def test_detail_if_none_match_star_is_304_for_an_existing_request(client, view):
    views = Views(client)
    url, headers = views.url_and_headers(view)
    etag = views.etag(view)

    _assert_not_modified(_get(client, url, headers, "*"), etag)


@pytest.mark.parametrize("view", VIEWS)
def test_detail_if_none_match_is_a_list_any_of_which_may_match(client, view):
    views = Views(client)
    url, headers = views.url_and_headers(view)
    etag = views.etag(view)

    _assert_not_modified(_get(client, url, headers, f'"stale-1", {etag}, "stale-2"'), etag)
    _assert_polled_200(_get(client, url, headers, '"stale-1", "stale-2"'))


@pytest.mark.parametrize("view", VIEWS)
def test_detail_if_none_match_compares_weakly(client, view):
    views = Views(client)
    url, headers = views.url_and_headers(view)
    etag = views.etag(view)

    _assert_not_modified(_get(client, url, headers, f"W/{etag}"), etag)


@pytest.mark.parametrize("view", VIEWS)
def test_detail_if_none_match_in_several_field_lines_is_one_list(client, view):
    views = Views(client)
    url, headers = views.url_and_headers(view)
    etag = views.etag(view)

    response = client.get(
        url,
        headers=[*headers.items(), ("If-None-Match", '"stale"'), ("If-None-Match", etag)],
    )

    _assert_not_modified(response, etag)


@pytest.mark.parametrize("view", VIEWS)
def test_detail_head_and_an_empty_body_revalidate_like_get(client, view):
    views = Views(client)
    url, headers = views.url_and_headers(view)
    etag = views.etag(view)

    head = client.head(url, headers={**headers, "If-None-Match": etag})
    empty_body = client.request(
        "GET", url, headers={**headers, "If-None-Match": etag, "Content-Length": "0"}
    )

    _assert_not_modified(head, etag)
    _assert_not_modified(empty_body, etag)


@pytest.mark.parametrize("view", VIEWS)
def test_detail_malformed_if_none_match_is_ignored(client, view):
    views = Views(client)
    url, headers = views.url_and_headers(view)
    etag = views.etag(view)
    unquoted = etag.strip('"')

    for malformed in (unquoted, f"{etag} {etag}", f"*, {etag}", f"w/{etag}", etag[:-1]):
        response = _get(client, url, headers, malformed)
        assert _assert_polled_200(response) == etag, malformed


def test_detail_if_none_match_beyond_the_schema_is_422(client):
    views = Views(client)

    response = _get(client, views.mobile_url, views.customer, '"a", ' * 2000)

    body = assert_problem(response, 422, "validation_failed")
    assert [error["field"] for error in body["errors"]] == ["If-None-Match"]
    assert response.headers["cache-control"] == "no-store"


def test_another_customers_request_is_404_never_304(client):
    views = Views(client)
    owner_etag = views.etag("mobile")
    stranger = customer()
    missing = _get(client, f"{MOBILE}/{views.id + 1000}", stranger)

    for guess in ("*", owner_etag, f'"m1-{views.id}-1"', f'W/"m1-{views.id}-1"'):
        response = _get(client, views.mobile_url, stranger, guess)
        body = assert_problem(response, 404, "not_found")
        assert response.headers["cache-control"] == "no-store"
        assert "etag" not in response.headers
        assert body["detail"] == missing.json()["detail"].replace(
            str(views.id + 1000), str(views.id)
        )


@pytest.mark.parametrize("view", VIEWS)
def test_a_request_that_does_not_exist_is_404_even_with_star(client, view):
    headers = customer() if view == "mobile" else known_admin(client)
    url = f"{MOBILE if view == 'mobile' else ADMIN}/424242"

    response = _get(client, url, headers, "*")

    assert_problem(response, 404, "not_found")
    assert "etag" not in response.headers


def test_conditional_detail_keeps_every_other_answer_of_the_contract(client):
    views = Views(client)
    etag = views.etag("mobile")

    no_token = client.get(views.mobile_url, headers={"If-None-Match": etag})
    bad_token = _get(client, views.mobile_url, bearer("not-a-jwt"), etag)
    admin_on_mobile = _get(client, views.mobile_url, views.admin, "*")
    customer_on_admin = _get(client, views.admin_url, views.customer, "*")
    bad_id = _get(client, f"{MOBILE}/0{views.id}x", views.customer, "*")
    too_big = _get(client, f"{MOBILE}/{'9' * 25}", views.customer, "*")
    unknown_query = _get(client, views.mobile_url, views.customer, etag, verbose="1")

    assert_problem(no_token, 401, "unauthenticated")
    assert no_token.headers["www-authenticate"].startswith("Bearer")
    assert_problem(bad_token, 401, "unauthenticated")
    assert_problem(admin_on_mobile, 403, "forbidden")
    assert_problem(customer_on_admin, 403, "forbidden")
    assert_problem(bad_id, 400, "invalid_path_param")
    assert_problem(too_big, 400, "invalid_path_param")
    assert_problem(unknown_query, 422, "validation_failed")


def test_mobile_etags_show_no_admin_uuid(client):
    views = Views(client)
    reply(client, views.admin, views.id, api=ADMIN)
    admin_id = _sub_of(views.admin).lower()

    detail = _get(client, views.mobile_url, views.customer)
    listing = _get(client, MOBILE, views.customer)
    revalidated = _get(client, views.mobile_url, views.customer, detail.headers["etag"])

    for response in (detail, listing, revalidated):
        assert admin_id not in str(response.headers).lower()
        assert UUID_TEXT.search(response.headers["etag"]) is None


UUID_TEXT = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", re.I)


# -- lists -----------------------------------------------------------------------------------


def _list_views(client: Any) -> tuple[Views, dict[str, tuple[str, dict[str, str]]]]:
    views = Views(client)
    return views, {"mobile": (MOBILE, views.customer), "admin": (ADMIN, views.admin)}


@pytest.mark.parametrize("view", VIEWS)
def test_list_unchanged_is_304_without_a_body(client, view):
    _, lists = _list_views(client)
    url, headers = lists[view]
    etag = _assert_polled_200(_get(client, url, headers))

    _assert_not_modified(_get(client, url, headers, etag), etag)
    _assert_not_modified(_get(client, url, _refreshed(headers), etag), etag)
    _assert_not_modified(_get(client, url, headers, "*"), etag)
    _assert_not_modified(_get(client, url, headers, f'W/{etag}, "other"'), etag)


@pytest.mark.parametrize("view", VIEWS)
def test_list_malformed_if_none_match_is_ignored(client, view):
    _, lists = _list_views(client)
    url, headers = lists[view]
    etag = _assert_polled_200(_get(client, url, headers))

    for malformed in (etag.strip('"'), f"{etag} {etag}", f"*, {etag}", etag[:-1]):
        assert _assert_polled_200(_get(client, url, headers, malformed)) == etag, malformed


@pytest.mark.parametrize("view", VIEWS)
def test_list_after_a_new_request_is_200_with_a_new_etag(client, view):
    views, lists = _list_views(client)
    url, headers = lists[view]
    etag = _assert_polled_200(_get(client, url, headers))

    newer = create(client, views.customer, subject="Another one")
    response = _get(client, url, headers, etag)

    assert _assert_polled_200(response) != etag
    assert response.json()["data"][0]["id"] == newer["id"]


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("side", ["customer", "admin"])
def test_list_after_a_reply_on_an_item_is_200_with_a_new_etag(client, view, side):
    views, lists = _list_views(client)
    url, headers = lists[view]
    etag = _assert_polled_200(_get(client, url, headers))

    if side == "customer":
        reply(client, views.customer, views.id)
    else:
        reply(client, views.admin, views.id, api=ADMIN)
    response = _get(client, url, headers, etag)

    assert _assert_polled_200(response) != etag


@pytest.mark.parametrize("view", VIEWS)
def test_list_after_a_status_change_moving_an_item_out_of_the_filter_is_200(client, view):
    views, lists = _list_views(client)
    url, headers = lists[view]
    etag = _assert_polled_200(_get(client, url, headers, status="open"))

    move_to(client, views.admin, views.id, "in_progress")
    response = _get(client, url, headers, etag, status="open")

    assert _assert_polled_200(response) != etag
    assert views.id not in [item["id"] for item in response.json()["data"]]


def test_admin_list_after_an_assignment_is_200_with_a_new_etag(client):
    views = Views(client)
    params = {"assigned": "false"}
    etag = _assert_polled_200(_get(client, ADMIN, views.admin, **params))

    patched = client.patch(
        views.admin_url, json={"assignedAdminId": _sub_of(views.admin)}, headers=views.admin
    )
    assert patched.status_code == 200, patched.text
    response = _get(client, ADMIN, views.admin, etag, **params)

    assert _assert_polled_200(response) != etag


def test_list_etag_names_the_query_it_answers(client):
    views, _ = _list_views(client)
    create(client, views.customer)
    whole = _assert_polled_200(_get(client, MOBILE, views.customer))
    first_page = _get(client, MOBILE, views.customer, limit=1)
    first_etag = _assert_polled_200(first_page)
    cursor = first_page.json()["meta"]["nextCursor"]
    second_etag = _assert_polled_200(_get(client, MOBILE, views.customer, limit=1, cursor=cursor))

    assert len({whole, first_etag, second_etag}) == 3
    _assert_polled_200(_get(client, MOBILE, views.customer, whole, limit=1))
    _assert_not_modified(
        _get(client, MOBILE, views.customer, second_etag, limit=1, cursor=cursor), second_etag
    )


def test_list_page_changes_when_a_next_page_appears(client):
    views, _ = _list_views(client)
    etag = _assert_polled_200(_get(client, MOBILE, views.customer, limit=1))

    create(client, views.customer)
    response = _get(client, MOBILE, views.customer, etag, limit=1)

    assert _assert_polled_200(response) != etag
    assert response.json()["meta"]["nextCursor"] is not None


def test_mobile_list_etags_are_per_customer(client):
    alice, bob = customer(), customer()
    alice_etag = _assert_polled_200(_get(client, MOBILE, alice))
    bob_etag = _assert_polled_200(_get(client, MOBILE, bob))

    assert alice_etag != bob_etag  # both lists are empty, but they are not the same list
    _assert_polled_200(_get(client, MOBILE, bob, alice_etag))


def test_a_list_request_refused_by_validation_is_never_304(client):
    views, _ = _list_views(client)

    response = _get(client, MOBILE, views.customer, "*", cursor="not-ours")

    assert_problem(response, 422, "validation_failed")
    assert "etag" not in response.headers


# -- caching headers everywhere else ---------------------------------------------------------


def test_every_other_authenticated_response_stays_no_store(client):
    views = Views(client)
    responses = {
        "create": client.post(
            MOBILE,
            json={"category": "other", "subject": "s", "message": "m"},
            headers=views.customer,
        ),
        "reply": client.post(
            f"{views.mobile_url}/messages", json={"body": "b"}, headers=views.customer
        ),
        "admin reply": client.post(
            f"{views.admin_url}/messages", json={"body": "b"}, headers=views.admin
        ),
        "patch": client.patch(views.admin_url, json={"status": "open"}, headers=views.admin),
        "events": client.get(f"{views.admin_url}/events", headers=views.admin),
        "admins": client.get("/api/admin/admins", headers=views.admin),
        "not found": _get(client, f"{MOBILE}/{views.id + 1000}", views.customer, "*"),
    }

    for name, response in responses.items():
        assert response.status_code < 500, (name, response.text)
        assert response.headers["cache-control"] == "no-store", name
        assert "etag" not in response.headers, name


# -- the detail poll's fast path: rate limit, access log, one statement ---------------------


def test_a_304_counts_against_the_read_budget(two_reads_a_minute):
    client = two_reads_a_minute
    alice = customer()
    request_id = create(client, alice)["id"]
    url = f"{MOBILE}/{request_id}"

    full = _get(client, url, alice)
    revalidated = _get(client, url, alice, full.headers["etag"])
    refused = _get(client, url, alice, full.headers["etag"])

    _assert_not_modified(revalidated, full.headers["etag"])
    assert [full.headers["ratelimit-remaining"], revalidated.headers["ratelimit-remaining"]] == [
        "1",
        "0",
    ]
    assert_problem(refused, 429, "rate_limited")
    assert refused.headers["retry-after"]


def test_a_304_is_logged_with_its_route_and_caller(client, caplog):
    views = Views(client)
    etag = views.etag("mobile")
    caplog.set_level(logging.INFO, logger="support_requests.access")
    caplog.clear()

    _assert_not_modified(_get(client, views.mobile_url, views.customer, etag), etag)

    [line] = [r.fields for r in caplog.records if r.name == "support_requests.access"]
    assert line["status"] == 304
    assert line["route"] == "/api/mobile/support-requests/{id}"
    assert line["sub"] == _sub_of(views.customer)


def test_a_304_lookup_on_an_unreadable_sqlite_database_is_503(tmp_path):
    database_file = tmp_path / "support.db"
    settings = Settings(
        database_url=f"sqlite:///{database_file}",
        jwt_secret=SECRET.encode(),
        data_dir=tmp_path,
        validate_responses=True,
    )
    with create_app(settings).test_client() as client:
        views = Views(client)
        etag = views.etag("mobile")
        with sqlite3.connect(database_file) as outside:
            outside.execute("ALTER TABLE support_requests RENAME TO moved_away")

        response = _get(client, views.mobile_url, views.customer, etag)

    assert_problem(response, 503, "service_unavailable")
    assert response.headers["retry-after"]


class _Statements:
    """Every statement the driver runs while counting, transaction control included."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []
        self.counting = False

    def __call__(self, statement: str, parameters: Any) -> None:
        if self.counting:
            self.seen.append((statement, parameters))

    @property
    def statements(self) -> list[str]:
        return [statement for statement, _ in self.seen]


@pytest.fixture
def statements() -> Iterator[_Statements]:
    log = _Statements()
    STATEMENT_OBSERVERS.append(log)
    yield log
    STATEMENT_OBSERVERS.remove(log)


@pytest.mark.parametrize("view", VIEWS)
def test_a_304_detail_over_http_runs_one_statement_and_reads_no_message(
    unlimited, statements, view
):
    views = Views(unlimited)
    for _ in range(3):
        reply(unlimited, views.customer, views.id)
    url, headers = views.url_and_headers(view)
    etag = views.etag(view)

    statements.counting = True
    response = _get(unlimited, url, headers, etag)
    statements.counting = False

    _assert_not_modified(response, etag)
    [statement] = statements.statements  # no BEGIN or ROLLBACK either
    assert statement.lstrip().upper().startswith("SELECT")
    assert "support_requests" in statement
    assert "messages" not in statement


# -- storage: one indexed statement per revalidation ----------------------------------------


def _without_transaction_control(statements: list[str]) -> list[str]:
    return [s for s in statements if not s.lstrip().upper().startswith(TRANSACTION_CONTROL)]


def _plan(engine: sa.Engine, statement: str, parameters: Any) -> str:
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            return "\n".join(str(row[-1]) for row in rows)
        rows = connection.exec_driver_sql(f"EXPLAIN {statement}", parameters)
        return "\n".join(str(row[0]) for row in rows)


def test_detail_revalidation_is_one_indexed_lookup(database_url, db, statements):
    alice, agent = customer_principal(), admin_principal()

    async def work(desk: SupportDesk) -> dict[str, Any]:
        record = await desk.create_request(alice, category="other", subject="s", message="m")
        for body in ("two", "three"):
            await desk.reply_as_customer(alice, record.row.id, body)
        await desk.version_for_admin(agent, record.row.id)  # the admin is now known
        statements.counting = True
        customer_version = await desk.version_for_customer(alice, record.row.id)
        customer_statements = len(statements.seen)
        admin_version = await desk.version_for_admin(agent, record.row.id)
        statements.counting = False
        return {
            "versions": [customer_version, admin_version],
            "counts": [customer_statements, len(statements.seen)],
        }

    result = with_desk(database_url, work)

    assert result["versions"] == [(3, False), 3]  # the customer's: and whether they may rate
    assert result["counts"] == [1, 2]
    for statement, parameters in statements.seen:
        assert statement.lstrip().upper().startswith("SELECT"), statement
        assert "messages" not in statement
        plan = _plan(db, statement, parameters)
        if db.dialect.name == "sqlite":
            assert "SEARCH support_requests USING" in plan, plan
            assert "SCAN" not in plan, plan
        else:  # the primary key, or the customer index that holds the id too
            assert "Index Scan using" in plan, plan
            assert "Seq Scan" not in plan, plan


def test_a_version_lookup_leaves_its_pooled_connection_as_it_found_it(database_url, db):
    """The lookup runs outside a transaction; the next user of the connection is inside one."""
    alice = customer_principal()

    class Refused(Exception):
        pass

    async def work() -> list[str]:
        database = Database(database_url, pool_size=1)
        desk = SupportDesk(database)
        try:
            await database.create_schema()
            record = await desk.create_request(alice, category="other", subject="s", message="m")
            await desk.version_for_customer(alice, record.row.id)
            with pytest.raises(Refused):
                async with database.writing() as connection:
                    await connection.execute(
                        sa.update(REQUESTS).values(subject="changed").where(REQUESTS.c.id == 1)
                    )
                    raise Refused
            await desk.version_for_customer(alice, record.row.id)
            if database.is_sqlite:
                return []
            async with database.reading() as connection:
                return [await connection.scalar(sa.text("SHOW transaction_isolation"))]
        finally:
            await database.dispose()

    isolation = asyncio.run(work())

    with db.connect() as connection:
        assert connection.scalar(sa.select(REQUESTS.c.subject)) == "s"  # rolled back
    assert isolation == ([] if database_url.startswith("sqlite") else ["read committed"])


def test_version_lookup_of_another_customers_request_is_not_found(database_url):
    alice, bob = customer_principal(), customer_principal()

    async def work(desk: SupportDesk) -> list[str]:
        record = await desk.create_request(alice, category="other", subject="s", message="m")
        refusals = []
        for who, request_id in ((bob, record.row.id), (alice, record.row.id + 1)):
            with pytest.raises(NotFound) as refused:
                await desk.version_for_customer(who, request_id)
            refusals.append(str(refused.value))
        return refusals

    assert with_desk(database_url, work) == [
        "Support request 1 was not found.",
        "Support request 2 was not found.",
    ]


def test_list_revalidation_is_one_statement_that_reads_the_page_by_reference(
    database_url, statements
):
    alice, agent = customer_principal(), admin_principal()
    log = statements

    async def work(desk: SupportDesk) -> dict[str, Any]:
        ids = []
        for index in range(3):
            record = await desk.create_request(
                alice, category="other", subject=f"s{index}", message="m"
            )
            ids.append(record.row.id)
        await desk.reply_as_customer(alice, ids[0], "again")
        await desk.list_queue(agent, QueueFilters(), limit=1, cursor=None)  # admin now known
        log.counting = True
        mobile = await desk.page_versions_for_customer(alice, limit=2, cursor=None, status=None)
        mobile_count = len(_without_transaction_control(log.statements))
        queue = await desk.queue_page_versions(agent, QueueFilters(), limit=5, cursor=None)
        log.counting = False
        page = await desk.list_for_customer(alice, limit=2, cursor=None, status=None)
        return {
            "ids": ids,
            "counts": [mobile_count, len(_without_transaction_control(log.statements))],
            "mobile": mobile,
            "queue": queue,
            "page": page,
        }

    result = with_desk(database_url, work)

    first, second, third = result["ids"]
    assert result["counts"] == [1, 2]
    assert result["mobile"].rows == ((third, 1, False), (second, 1, False))
    assert result["mobile"].has_more is True
    assert result["queue"].rows == ((third, 1), (second, 1), (first, 2))
    assert result["queue"].has_more is False
    assert [row_id for row_id, *_ in result["mobile"].rows] == [
        record.row.id for record in result["page"].records
    ]
