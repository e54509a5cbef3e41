"""Bearer tokens on the mobile API: every defect is a 401 with the Bearer challenge.

Tokens here are built by hand (header, payload, signature) so that each defect
is exactly the one named, whatever PyJWT's encoder would allow.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from support_requests.handlers.app import create_app
from support_requests.storage.models import Base
from tests.helpers import (
    ADMIN,
    MOBILE,
    SECRET,
    admin,
    assert_problem,
    bearer,
    create,
    customer,
    mint,
)

OTHER_SECRET = "another-secret-" + "y" * 40


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(document: Any) -> str:
    return _b64(json.dumps(document).encode())


def _hmac_token(
    payload: Any, *, alg: str = "HS256", secret: str = SECRET, header: Any = None
) -> str:
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    signing_input = f"{_segment(header or {'alg': alg, 'typ': 'JWT'})}.{_segment(payload)}"
    signature = hmac.new(secret.encode(), signing_input.encode(), digest).digest()
    return f"{signing_input}.{_b64(signature)}"


def _claims(**overrides: Any) -> dict[str, Any]:
    """Valid customer claims with ``overrides`` (``None`` drops a claim)."""
    claims: dict[str, Any] = {
        "sub": f"customer-{uuid.uuid4().hex[:12]}",
        "exp": int(time.time()) + 600,
        "name": "Alex Customer",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _rs256_token() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(_claims(), key, algorithm="RS256")


def _es256_token() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return jwt.encode(_claims(), key, algorithm="ES256")


def _tampered_token() -> str:
    header, _, signature = _hmac_token(_claims()).split(".")
    return f"{header}.{_segment(_claims(sub='someone-else'))}.{signature}"


BAD_AUTHORIZATION: dict[str, Callable[[], str | None]] = {
    "missing": lambda: None,
    "empty": lambda: "",
    "scheme-only": lambda: "Bearer",
    "empty-token": lambda: "Bearer ",
    "basic-scheme": lambda: "Basic " + _b64(b"alex:secret"),
    "token-without-scheme": lambda: _hmac_token(_claims()),
    "not-a-jwt": lambda: "Bearer not-a-jwt",
    "two-segments": lambda: "Bearer " + ".".join(_hmac_token(_claims()).split(".")[:2]),
    "garbage-segments": lambda: "Bearer a.b.c",
    "wrong-key": lambda: "Bearer " + _hmac_token(_claims(), secret=OTHER_SECRET),
    "tampered-payload": lambda: "Bearer " + _tampered_token(),
    "expired": lambda: "Bearer " + _hmac_token(_claims(exp=int(time.time()) - 60)),
    "not-yet-valid": lambda: "Bearer " + _hmac_token(_claims(nbf=int(time.time()) + 600)),
    "no-sub": lambda: "Bearer " + _hmac_token(_claims(sub=None)),
    "no-exp": lambda: "Bearer " + _hmac_token(_claims(exp=None)),
    "exp-not-a-number": lambda: "Bearer " + _hmac_token(_claims(exp="tomorrow")),
    "empty-sub": lambda: "Bearer " + _hmac_token(_claims(sub="")),
    "blank-sub": lambda: "Bearer " + _hmac_token(_claims(sub="   ")),
    "numeric-sub": lambda: "Bearer " + _hmac_token(_claims(sub=12345)),
    "sub-over-255": lambda: "Bearer " + _hmac_token(_claims(sub="c" * 256)),
    "sub-with-nul": lambda: "Bearer " + _hmac_token(_claims(sub="alex\u0000")),
    # json.dumps writes the lone surrogate as a "\\ud800" escape, as a forger would.
    "name-with-lone-surrogate": lambda: "Bearer " + _hmac_token(_claims(name="A\ud800")),
    "unknown-role": lambda: "Bearer " + _hmac_token(_claims(role="superuser")),
    "picture-not-a-url": lambda: "Bearer " + _hmac_token(_claims(picture="javascript:alert(1)")),
    "alg-none": lambda: (
        "Bearer " + f"{_segment({'alg': 'none', 'typ': 'JWT'})}.{_segment(_claims())}."
    ),
    "alg-none-signed": lambda: (
        "Bearer " + _hmac_token(_claims(), header={"alg": "none", "typ": "JWT"})
    ),
    "hs512-same-secret": lambda: "Bearer " + _hmac_token(_claims(), alg="HS512"),
    "hs384-same-secret": lambda: "Bearer " + _hmac_token(_claims(), alg="HS384"),
    "rs256-signed": lambda: "Bearer " + _rs256_token(),
    "es256-signed": lambda: "Bearer " + _es256_token(),
}

OPERATIONS = ["create", "list", "detail", "reply"]


def _call(client: Any, operation: str, headers: dict[str, str], request_id: int) -> Any:
    if operation == "create":
        body = {"category": "account", "subject": "Locked out", "message": "Help."}
        return client.post(MOBILE, json=body, headers=headers)
    if operation == "list":
        return client.get(MOBILE, headers=headers)
    if operation == "detail":
        return client.get(f"{MOBILE}/{request_id}", headers=headers)
    return client.post(f"{MOBILE}/{request_id}/messages", json={"body": "Hi"}, headers=headers)


def _counts(db: sa.Engine) -> tuple[int, int]:
    tables = Base.metadata.tables
    with db.connect() as connection:
        return (
            connection.scalar(sa.select(sa.func.count()).select_from(tables["support_requests"])),
            connection.scalar(sa.select(sa.func.count()).select_from(tables["messages"])),
        )


@pytest.mark.parametrize("case", list(BAD_AUTHORIZATION))
def test_bad_token_is_401_with_bearer_challenge_and_changes_nothing(client, db, case):
    existing = create(client, customer())
    before = _counts(db)

    for operation in OPERATIONS:
        authorization = BAD_AUTHORIZATION[case]()
        headers = {} if authorization is None else {"Authorization": authorization}

        response = _call(client, operation, headers, existing["id"])

        body = assert_problem(response, 401, "unauthenticated")
        assert response.headers["www-authenticate"].startswith("Bearer"), operation
        assert response.headers["cache-control"] == "no-store"
        assert "Traceback" not in body["detail"]
    assert _counts(db) == before


def test_admin_token_on_the_mobile_api_is_403(client, db):
    existing = create(client, customer())
    before = _counts(db)

    for operation in OPERATIONS:
        response = _call(client, operation, admin(), existing["id"])

        body = assert_problem(response, 403, "forbidden")
        assert "mobile" in body["detail"], operation
    assert _counts(db) == before


def test_customer_token_on_the_admin_api_is_403(client):
    existing = create(client, customer())

    for response in (
        client.get(ADMIN, headers=customer()),
        client.get(f"{ADMIN}/{existing['id']}", headers=customer()),
    ):
        assert_problem(response, 403, "forbidden")


def test_token_problems_say_what_is_wrong(client):
    expired = bearer(_hmac_token(_claims(exp=int(time.time()) - 60)))
    no_exp = bearer(_hmac_token(_claims(exp=None)))
    no_sub = bearer(_hmac_token(_claims(sub=None)))

    assert "expired" in client.get(MOBILE, headers=expired).json()["detail"]
    assert "'exp'" in client.get(MOBILE, headers=no_exp).json()["detail"]
    assert "'sub'" in client.get(MOBILE, headers=no_sub).json()["detail"]


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_bearer_scheme_name_is_case_insensitive(client, scheme):
    token = mint()

    response = client.get(MOBILE, headers={"Authorization": f"{scheme} {token}"})

    assert response.status_code == 200, response.text


def test_a_customer_is_identified_by_sub_whatever_else_the_token_says(client):
    sub = f"customer-{uuid.uuid4().hex}"
    first = bearer(mint(sub, name="Alex", ttl=60))
    second = bearer(mint(sub, name="Alexandra", picture="https://cdn.example.com/a.png"))
    created = create(client, first)

    response = client.get(f"{MOBILE}/{created['id']}", headers=second)

    assert response.status_code == 200
    assert response.json()["data"]["id"] == created["id"]


@pytest.fixture
def strict_client(settings: Any) -> Any:
    """A client of an app that checks ``iss`` and ``aud``."""
    strict = dataclasses.replace(
        settings, jwt_issuer="https://login.example.com", jwt_audience="support-requests"
    )
    with create_app(strict).test_client() as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("claims", "status"),
    [
        ({"iss": "https://login.example.com", "aud": "support-requests"}, 200),
        ({"iss": "https://login.example.com", "aud": ["other", "support-requests"]}, 200),
        ({"aud": "support-requests"}, 401),
        ({"iss": "https://login.example.com"}, 401),
        ({"iss": "https://evil.example.com", "aud": "support-requests"}, 401),
        ({"iss": "https://login.example.com", "aud": "other-service"}, 401),
        ({"iss": "https://login.example.com.evil", "aud": "support-requests"}, 401),
    ],
)
def test_issuer_and_audience_are_checked_when_configured(strict_client, claims, status):
    token = _hmac_token(_claims(**claims))

    response = strict_client.get(MOBILE, headers=bearer(token))

    assert response.status_code == status, response.text
    if status == 401:
        assert_problem(response, 401, "unauthenticated")
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_authenticated_responses_are_never_kept_by_shared_caches(client):
    """``no-store`` everywhere, but the polled list and detail ``200``s: revalidated, private."""
    alice = customer()
    created = client.post(
        MOBILE, json={"category": "other", "subject": "s", "message": "m"}, headers=alice
    )
    request_id = created.json()["data"]["id"]

    stored_nowhere = [
        created,
        client.post(f"{MOBILE}/{request_id}/messages", json={"body": "b"}, headers=alice),
        client.get(f"{MOBILE}/{request_id + 1}", headers=alice),
        client.get(MOBILE, params={"limit": 0}, headers=alice),
        client.get(MOBILE, headers=admin()),
    ]
    revalidated = [
        client.get(MOBILE, headers=alice),
        client.get(f"{MOBILE}/{request_id}", headers=alice),
    ]

    assert [r.status_code for r in stored_nowhere] == [201, 201, 404, 422, 403]
    for response in stored_nowhere:
        assert response.headers["cache-control"] == "no-store"
    for response in revalidated:
        assert response.status_code == 200
        assert response.headers["cache-control"] == "private, no-cache"
        assert response.headers["etag"]
