"""Problem titles are RFC 9110's reason phrases ("Unprocessable Content", "Content Too Large").

``assert_problem`` (tests/helpers.py) checks the title of every problem any test receives;
these tests check every status the service can answer with a problem, and the spec's examples.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
import yaml

from support_requests.handlers.problems import _DOMAIN_STATUS, CODE_BY_STATUS, problem_body
from support_requests.openapi import SPEC_PATH
from tests.helpers import MOBILE, RFC_9110_TITLES, assert_problem, customer

SPEC = yaml.safe_load(SPEC_PATH.read_text())
PROBLEM_JSON = "application/problem+json"


def _response(response: dict[str, Any]) -> dict[str, Any]:
    reference = response.get("$ref")
    if reference is None:
        return response
    return dict(SPEC["components"]["responses"][reference.rsplit("/", 1)[-1]])


def _problem_statuses_in_the_spec() -> set[int]:
    """Every status an operation declares a problem+json response for."""
    return {
        int(status)
        for item in SPEC["paths"].values()
        for operation in item.values()
        if isinstance(operation, dict) and "responses" in operation
        for status, response in operation["responses"].items()
        if str(status).isdigit() and PROBLEM_JSON in _response(response).get("content", {})
    }


def _problem_examples(node: Any) -> Iterator[dict[str, Any]]:
    """Every example problem written anywhere in the spec (a mapping with title and status)."""
    if isinstance(node, dict):
        if isinstance(node.get("title"), str) and isinstance(node.get("status"), int):
            yield node
        for value in node.values():
            yield from _problem_examples(value)
    elif isinstance(node, list):
        for value in node:
            yield from _problem_examples(value)


def _stored_requests(db: sa.Engine) -> int:
    with db.connect() as connection:
        return int(connection.scalar(sa.text("SELECT count(*) FROM support_requests")) or 0)


def test_every_problem_status_of_the_spec_is_titled_with_rfc_9110s_phrase() -> None:
    statuses = _problem_statuses_in_the_spec()
    assert {400, 401, 403, 404, 409, 413, 415, 416, 422, 429, 500, 503} <= statuses
    for status in statuses:
        assert problem_body(status, "code", "Detail.")["title"] == RFC_9110_TITLES[status]


def test_every_status_the_problem_mapping_sends_is_titled_with_rfc_9110s_phrase() -> None:
    statuses = set(CODE_BY_STATUS) | {status for status, _ in _DOMAIN_STATUS.values()}
    for status in statuses:
        assert problem_body(status, "code", "Detail.")["title"] == RFC_9110_TITLES[status]


def test_the_specs_problem_examples_carry_rfc_9110_titles() -> None:
    examples = list(_problem_examples(SPEC))
    assert {example["status"] for example in examples} >= {400, 409, 415, 422, 429}
    for example in examples:
        assert example["title"] == RFC_9110_TITLES[example["status"]], example


def test_a_422_problem_is_titled_unprocessable_content(client: Any, db: sa.Engine) -> None:
    body = {"category": "nonsense", "subject": "Locked out", "message": "Help."}
    response = client.post(MOBILE, json=body, headers=customer())
    problem = assert_problem(response, 422, "validation_failed")
    assert problem["title"] == "Unprocessable Content"
    assert _stored_requests(db) == 0


def test_a_413_problem_is_titled_content_too_large(client: Any, db: sa.Engine) -> None:
    body = {"category": "account", "subject": "Locked out", "message": "m" * (64 * 1024)}
    response = client.post(MOBILE, json=body, headers=customer())
    problem = assert_problem(response, 413, "payload_too_large")
    assert problem["title"] == "Content Too Large"
    assert _stored_requests(db) == 0
