"""``framework.connexion_validation`` against Connexion's stock request validation.

Both stacks validate with the app's ``validator_map`` (``handlers.validation``), one
through Connexion's ``RequestValidationMiddleware``, which builds the validators per
request, the other through ours, which builds them once. Every request of
``test_framework_operations`` (each operation with odd ids, queries and bodies) must
get the same status, problem code and handler arguments from both, except where the
contract differs from Connexion: a body sent without ``Content-Type`` is 415. And a
JSON body is parsed once, by validation, for the handler too.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from connexion import AsyncApp
from connexion.middleware.request_validation import RequestValidationMiddleware

from support_requests.framework.connexion_operations import PreparedAsyncApp
from support_requests.framework.connexion_validation import RequestValidation
from support_requests.handlers import problems
from support_requests.handlers.app import load_spec
from support_requests.handlers.auth import TokenVerifier, bearer_security
from support_requests.handlers.settings import Settings
from support_requests.handlers.validation import VALIDATOR_MAP
from tests.helpers import MOBILE, SECRET, customer
from tests.test_framework_operations import JSON, Call, contract_requests, recording_resolver, stack

Answer = tuple[int, str | None, list[Call]]


def _app(
    app_class: type[AsyncApp], validation: type[RequestValidationMiddleware], calls: list[Call]
) -> AsyncApp:
    verifier = TokenVerifier(Settings(database_url="sqlite://", jwt_secret=SECRET.encode()))
    app = app_class(
        __name__,
        middlewares=stack(validation),
    )
    app.add_api(
        load_spec(),
        resolver=recording_resolver(calls),
        validator_map=VALIDATOR_MAP,
        security_map={"bearer": bearer_security(verifier)},
        strict_validation=True,
        pythonic_params=True,
    )
    problems.register(app, lambda _path: "GET")
    return app


def _answers(validation: type[RequestValidationMiddleware]) -> list[Answer]:
    calls: list[Call] = []
    app = _app(AsyncApp, validation, calls)
    answers: list[Answer] = []
    with app.test_client(raise_server_exceptions=False) as client:
        for method, url, headers, body in contract_requests():
            calls.clear()
            response = client.request(method, url, headers=headers, content=body)
            code = response.json().get("code") if response.status_code >= 400 else None
            answers.append((response.status_code, code, _comparable(calls)))
    return answers


def _comparable(calls: list[Call]) -> list[Call]:
    """The calls, with the security context reduced to its subject."""
    return [
        (operation, {k: v for k, v in kwargs.items() if k != "token_info"})
        for operation, kwargs in calls
    ]


def test_requests_are_validated_as_stock_connexion_validates_them() -> None:
    stock = _answers(RequestValidationMiddleware)
    ours = _answers(RequestValidation)

    differences: list[tuple[Any, Answer, Answer]] = []
    for request, expected, actual in zip(contract_requests(), stock, ours, strict=True):
        if actual != expected:
            differences.append((request, expected, actual))
    for (_method, _url, headers, body), _expected, actual in differences:
        assert body and "Content-Type" not in headers
        assert actual[:2] == (415, "unsupported_media_type")
    assert 0 < len(differences) < 20
    assert {status for status, _, _ in ours} >= {200, 400, 415, 422}


def test_a_json_body_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[str | bytes] = []
    original = json.loads

    def counting_loads(text: str | bytes, **kwargs: Any) -> Any:
        parsed.append(text)
        return original(text, **kwargs)

    monkeypatch.setattr(json, "loads", counting_loads)
    calls: list[Call] = []
    app = _app(PreparedAsyncApp, RequestValidation, calls)
    body = b'{"category": "other", "subject": "s", "message": "m"}'
    with app.test_client() as client:
        parsed.clear()
        response = client.post(MOBILE, headers={**customer(), **JSON}, content=body)

    assert response.status_code == 200
    assert [text for text in parsed if text in (body, body.decode())] == [body.decode()]
    assert calls[0][1]["body"] == original(body)
