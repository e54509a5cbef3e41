"""``framework.connexion_security`` against Connexion's stock bearer handling.

Stock Connexion calls the function a scheme's ``x-bearerInfoFunc`` names; here those
are module functions running the same ``authenticate`` as the app. Ours is the handler
class the app puts in ``security_map``. Every ``Authorization`` header below must get
the same status, problem code and security context (the handler's ``user`` and
``token_info``) from both.
"""

from __future__ import annotations

from typing import Any

import pytest
from connexion import AsyncApp
from connexion.security import AbstractSecurityHandler

from support_requests.domain.lifecycle import Actor
from support_requests.handlers import problems
from support_requests.handlers.app import load_spec
from support_requests.handlers.auth import (
    TokenVerifier,
    authenticate,
    bearer_security,
    bearer_token,
)
from support_requests.handlers.settings import Settings
from tests.helpers import ADMIN, MOBILE, SECRET, mint
from tests.test_framework_operations import Call, recording_resolver, stack

VERIFIER = TokenVerifier(Settings(database_url="sqlite://", jwt_secret=SECRET.encode()))


async def stock_customer_check(token: str) -> dict[str, Any]:
    """What ``x-bearerInfoFunc`` names for the customer scheme in the stock app."""
    principal = await authenticate(VERIFIER, token, Actor.CUSTOMER)
    return {"sub": principal.sub, "principal": principal}


async def stock_admin_check(token: str) -> dict[str, Any]:
    """What ``x-bearerInfoFunc`` names for the admin scheme in the stock app."""
    principal = await authenticate(VERIFIER, token, Actor.ADMIN)
    return {"sub": principal.sub, "principal": principal}


def _app(*, stock: bool, calls: list[Call]) -> AsyncApp:
    spec = load_spec()
    options: dict[str, Any] = {}
    if stock:
        schemes = spec["components"]["securitySchemes"]
        schemes["customerToken"]["x-bearerInfoFunc"] = f"{__name__}.stock_customer_check"
        schemes["adminToken"]["x-bearerInfoFunc"] = f"{__name__}.stock_admin_check"
    else:
        options["security_map"] = {"bearer": bearer_security(VERIFIER)}
    app = AsyncApp(
        __name__,
        middlewares=stack(),
    )
    app.add_api(spec, resolver=recording_resolver(calls), pythonic_params=True, **options)
    problems.register(app, lambda _path: "GET")
    return app


CUSTOMER_TOKEN = mint("security-customer")
ADMIN_TOKEN = mint("5b3f2c1e-8d4a-4f6b-9c2d-1e0f3a4b5c6d", role="admin")
AUTHORIZATIONS = [
    None,
    "",
    "Bearer",
    "Bearer ",
    "Basic dXNlcjpwYXNz",
    f"Bearer {CUSTOMER_TOKEN}",
    f"bearer {CUSTOMER_TOKEN}",
    f"BEARER {CUSTOMER_TOKEN}",
    f"Bearer  {CUSTOMER_TOKEN}",
    f"Bearer\t{CUSTOMER_TOKEN}",
    f"Bearer {CUSTOMER_TOKEN} ",
    f" Bearer {CUSTOMER_TOKEN}",
    f"Bearer {ADMIN_TOKEN}",
    f"Bearer {mint('security-customer', ttl=-10)}",
    f"Bearer {mint('security-customer', secret='another-secret-' + 'y' * 40)}",
    f"Bearer {CUSTOMER_TOKEN}x",
    "Bearer not.a.jwt",
]


def _answers(*, stock: bool) -> list[tuple[int, str | None, list[Call]]]:
    calls: list[Call] = []
    answers = []
    with _app(stock=stock, calls=calls).test_client() as client:
        for path in (f"{MOBILE}/1", f"{ADMIN}/1", "/healthz"):
            for authorization in AUTHORIZATIONS:
                calls.clear()
                headers = {} if authorization is None else {"Authorization": authorization}
                response = client.get(path, headers=headers)
                code = response.json().get("code") if response.status_code != 200 else None
                answers.append((response.status_code, code, list(calls)))
    return answers


def test_every_authorization_gets_what_stock_connexion_gives_it() -> None:
    stock, ours = _answers(stock=True), _answers(stock=False)

    assert ours == stock
    statuses = {status for status, _, _ in ours}
    assert statuses == {200, 401, 403}


class _Request:
    def __init__(self, authorization: str | None) -> None:
        self.headers = {} if authorization is None else {"Authorization": authorization}


@pytest.mark.parametrize("authorization", AUTHORIZATIONS)
def test_the_token_is_the_one_connexion_finds(authorization: str | None) -> None:
    try:
        scheme, value = AbstractSecurityHandler.get_auth_header_value(_Request(authorization))
    except Exception:  # Connexion's "invalid authorization header"
        scheme, value = None, None
    assert bearer_token(authorization) == (value if scheme == "bearer" else None)
