"""The running app against its own contract, with Schemathesis, in-process, on each database.

This is the command-line run in docs/testing.md's "Fuzz a deployment: Schemathesis" section
(``schemathesis run …/openapi.json --checks all --phases
examples,coverage,fuzzing,stateful`` with the project's ``schemathesis.toml``), driven
through Schemathesis' engine against the ASGI app: every check
(``negative_data_rejection`` held to the document's codes), the examples, coverage and fuzzing
phases for each operation and the stateful phase through the spec's ``links``. The mobile
operations get a customer's token and the admin operations an admin's, chosen by each
operation's security scheme (``[auth.openapi.*]`` in ``schemathesis.toml``).
"""

from __future__ import annotations

import io
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis import Case, CheckContext
from schemathesis.config import SchemathesisConfig
from schemathesis.core.transport import Response
from schemathesis.engine import events
from schemathesis.engine.recorder import ScenarioRecorder
from schemathesis.python import asgi

from support_requests.handlers.app import create_app
from support_requests.handlers.settings import Settings
from tests.helpers import SECRET, loopback_lookup, mint

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "schemathesis.toml"
SEED = 20260317
PHASES = ["examples", "coverage", "fuzzing", "stateful"]
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
MIN_CASES_PER_OPERATION = 100
# Served with every check by test_a_real_upload_and_its_removal_pass_every_check.
SERVED_BY_HAND = {
    "DELETE /api/admin/attachments/{attachmentId}",
    # A rating needs a resolved or closed request, which the stateful phase reaches only
    # when it follows a PATCH that resolved one: test_a_rating_passes_every_check serves it.
    "PUT /api/mobile/support-requests/{id}/rating",
    "GET /api/admin/attachments/{attachmentId}/thumbnail",
    "GET /api/mobile/attachments/{attachmentId}/thumbnail",
    # Fuzzed subs are customers the service never saw (404): test_an_erasure_passes_every_check
    # erases one that it did.
    "POST /api/admin/customers/{sub}/erase",
    # A retry needs a delivery of an endpoint, which fuzzed ids never name (404):
    # test_a_delivery_retry_passes_every_check pings an endpoint and retries that delivery.
    "POST /api/admin/webhooks/{endpointId}/deliveries/{deliveryId}/retry",
}
# What `--checks all` must have run at least once (the stateful ones need the links).
EXPECTED_CHECKS = {
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "positive_data_acceptance",
    "negative_data_rejection",
    "missing_required_header",
    "ignored_auth",
    "unsupported_method",
    "use_after_free",
    "ensure_resource_availability",
}

# Problem codes a well-formed request may still earn from a business rule, per operation:
# ``schemathesis.toml`` admits their statuses, this check pins the codes (and, for a 422, the
# fields) behind them. Generated Idempotency-Keys repeat, and a key reused for another request
# is 422 ``idempotency_key_reused``.
# Generated ``attachments`` ids are not the caller's uploads (422 on ``attachments[i]``); an
# upload's bytes decide its type (415 ``unsupported_attachment_type``), and an empty one is 422.
_ATTACHMENTS = {f"attachments[{i}]" for i in range(5)}
_KEY_REUSED_OR_NOT_YOURS = {"idempotency_key_reused": set[str](), "validation_failed": _ATTACHMENTS}
_UPLOAD = {415: {"unsupported_attachment_type": set[str]()}, 422: {"validation_failed": {"file"}}}
RULE_REFUSALS: dict[str, dict[int, dict[str, set[str]]]] = {
    "createSupportRequest": {422: _KEY_REUSED_OR_NOT_YOURS},
    "listSupportRequests": {422: {"validation_failed": {"cursor"}}},
    "listQueue": {422: {"validation_failed": {"cursor"}}},
    "getSupportStats": {422: {"validation_failed": {"from", "to"}}},
    "replyToSupportRequest": {400: {"request_closed": set()}, 422: _KEY_REUSED_OR_NOT_YOURS},
    # A marker that names no message of the thread the customer sees.
    "markSupportRequestRead": {422: {"validation_failed": {"lastReadMessageId"}}},
    "adminReplyToSupportRequest": {400: {"request_closed": set()}, 422: _KEY_REUSED_OR_NOT_YOURS},
    "uploadAttachment": _UPLOAD,
    "adminUploadAttachment": _UPLOAD,
    "rateSupportRequest": {409: {"rating_not_allowed": set()}},
    "adminUpdateSupportRequest": {
        409: {"invalid_transition": set()},
        422: {"validation_failed": {"assignedAdminId", "resolutionNote"}},
    },
    # A webhook URL whose host does not resolve, or not to public addresses only.
    "createWebhookEndpoint": {422: {"validation_failed": {"url"}}},
    "listWebhookDeliveries": {422: {"validation_failed": {"cursor"}}},
    "updateWebhookEndpoint": {422: {"validation_failed": {"url"}}},
    "retryWebhookDelivery": {409: {"already_delivered": set()}},
}


@schemathesis.check
def positive_refusals_are_business_rules(
    ctx: CheckContext, response: Response, case: Case
) -> bool | None:
    """Valid data refused with 400/409/422 must be a lifecycle rule, not a validation slip."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    operation_id = case.operation.definition.raw.get("operationId", "")
    expected = RULE_REFUSALS.get(operation_id, {}).get(response.status_code)
    if expected is None:
        return None
    problem = response.json()
    assert problem["code"] in expected, f"valid data refused: {problem}"
    if problem["code"] == "validation_failed":
        named = {error["field"] for error in problem["errors"]}
        assert named <= expected["validation_failed"], f"valid data failed validation: {problem}"
    return True


def _config() -> SchemathesisConfig:
    """``schemathesis.toml`` with a customer's and an admin's token, as QA would pass them."""
    tokens = {
        "SUPPORT_CUSTOMER_TOKEN": mint(name="Schemathesis Customer"),
        "SUPPORT_ADMIN_TOKEN": mint(str(uuid.uuid4()), role="admin", name="Schemathesis Admin"),
    }
    saved = {name: os.environ.get(name) for name in tokens}
    os.environ.update(tokens)
    try:
        config = SchemathesisConfig.from_path(CONFIG)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    # The command line's `--checks all --phases … --seed …`.
    config.update(seed=SEED, max_failures=None)
    config.projects.override.checks.update(included_check_names=["all"])
    config.projects.override.phases.update(phases=PHASES)
    # Nothing carried between runs: no failure replay cache, no example database.
    config.cache.enabled = False
    config.projects.override.generation.update(database="none")
    return config


@pytest.fixture
def contract_app(database_url: str, tmp_path: Path) -> Iterator[Any]:
    """A fresh app on each backend; Schemathesis runs its lifespan, stopped afterwards."""
    settings = Settings(
        database_url=database_url,
        jwt_secret=SECRET.encode(),
        data_dir=tmp_path,
        validate_responses=False,
    )
    # Webhook hosts resolve without DNS: no fuzzed name leaves the machine.
    yield create_app(settings, lookup=loopback_lookup)
    asgi.shutdown_lifespans()


def _failures(recorder: ScenarioRecorder) -> list[str]:
    """Each failed check with its reproduction and the response it saw."""
    found = []
    for case_id, checks in recorder.checks.items():
        for check in checks:
            if check.failure_info is None:
                continue
            failure = check.failure_info.failure
            interaction = recorder.interactions.get(case_id)
            response = interaction.response if interaction is not None else None
            seen = (
                f"{response.status_code} {response.content[:300]!r}" if response else "no response"
            )
            found.append(
                f"{recorder.label}: {check.name}: {failure.title}\n  {failure.message}\n"
                f"  reproduce: {check.failure_info.code_sample}\n  response: {seen}"
            )
    return found


def _operations(spec: dict[str, Any]) -> dict[str, bool]:
    """Each operation's label, and whether it takes any input (parameters, body or token)."""
    found = {}
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            security = operation.get("security", spec.get("security", []))
            found[f"{method.upper()} {path}"] = bool(
                item.get("parameters")
                or operation.get("parameters")
                or operation.get("requestBody")
                or any(security)
            )
    return found


def test_schemathesis_finds_nothing_in_any_phase(contract_app: Any) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", contract_app, config=_config())
    problems: list[str] = []
    cases: Counter[str] = Counter()
    answered: dict[str, Counter[int]] = {}
    checks_run: Counter[str] = Counter()
    phases_run: set[str] = set()
    finished = None
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            phases_run.add(event.phase.value)
            for case_id, node in event.recorder.cases.items():
                label = node.value.operation.label
                cases[label] += 1
                interaction = event.recorder.interactions.get(case_id)
                if interaction is not None and interaction.response is not None:
                    answered.setdefault(label, Counter())[interaction.response.status_code] += 1
            for checks in event.recorder.checks.values():
                checks_run.update(check.name for check in checks)
            problems.extend(_failures(event.recorder))
        elif isinstance(event, events.NonFatalError):
            problems.append(f"{event.label}: error: {event.info.format()}")
        elif isinstance(event, events.FatalError):
            problems.append(f"fatal error: {event.exception!r}")
        elif isinstance(event, events.EngineFinished):
            finished = event
    assert finished is not None
    assert not problems, "\n".join(problems)
    assert not finished.failures
    assert set(PHASES) <= phases_run, phases_run
    assert {"positive_refusals_are_business_rules", *EXPECTED_CHECKS} <= set(checks_run), checks_run

    operations = _operations(schema.raw_schema)
    # An operation that takes no input has one distinct request; every other gets 100 or more.
    thin = {
        label: cases[label]
        for label, takes_input in operations.items()
        if cases[label] < (MIN_CASES_PER_OPERATION if takes_input else 1)
    }
    assert not thin, f"too few cases: {thin} (all: {dict(cases)})"
    # The tokens work: every operation was really served, not only refused.
    # The removal and the thumbnails are reached only through an upload that succeeded (of an
    # image, for a thumbnail), which the stateful phase seldom follows up with a served step;
    # the next test serves them on purpose.
    unserved = [
        o
        for o in operations
        if o not in SERVED_BY_HAND and not any(200 <= s < 300 for s in answered.get(o, {}))
    ]
    assert not unserved, f"no 2xx for {unserved}: {answered}"
    print(f"\nSchemathesis cases per operation: {dict(cases)}")
    print(f"statuses: { {o: dict(c) for o, c in answered.items()} }")
    print(f"checks run: {dict(checks_run)}")


def test_a_real_upload_and_its_removal_pass_every_check(contract_app: Any) -> None:
    """An admin uploads a real PNG, downloads it and its thumbnail and removes it, and a
    customer's upload gets its thumbnail, each response held to every check; the removed
    file is gone afterwards (404), as ``use_after_free`` expects of the stateful phase."""
    from PIL import Image

    schema = schemathesis.openapi.from_asgi("/openapi.json", contract_app, config=_config())
    png = io.BytesIO()
    Image.new("RGB", (40, 30), (30, 120, 200)).save(png, format="PNG")
    admin = {"Authorization": f"Bearer {mint(str(uuid.uuid4()), role='admin', name='Remover')}"}
    upload = schema["/api/admin/attachments"]["POST"].Case(
        body={"file": png.getvalue()}, media_type="multipart/form-data", headers=admin
    )
    uploaded = upload.call_and_validate()
    assert uploaded.status_code == 201
    attachment_id = uploaded.json()["data"]["id"]
    item = schema["/api/admin/attachments/{attachmentId}"]
    path = {"attachmentId": attachment_id}
    assert (
        item["GET"].Case(path_parameters=path, headers=admin).call_and_validate().status_code == 200
    )
    thumbnail = schema["/api/admin/attachments/{attachmentId}/thumbnail"]["GET"]
    assert (
        thumbnail.Case(path_parameters=path, headers=admin).call_and_validate().status_code == 200
    )
    customer = {"Authorization": f"Bearer {mint(name='Uploader')}"}
    mine = schema["/api/mobile/attachments"]["POST"].Case(
        body={"file": png.getvalue()}, media_type="multipart/form-data", headers=customer
    )
    own = {"attachmentId": mine.call_and_validate().json()["data"]["id"]}
    mobile_thumbnail = schema["/api/mobile/attachments/{attachmentId}/thumbnail"]["GET"]
    assert (
        mobile_thumbnail.Case(path_parameters=own, headers=customer).call_and_validate().status_code
        == 200
    )
    removed = item["DELETE"].Case(path_parameters=path, headers=admin).call_and_validate()
    assert removed.status_code == 200
    assert removed.json()["data"]["id"] == attachment_id
    assert (
        item["GET"].Case(path_parameters=path, headers=admin).call_and_validate().status_code == 404
    )


def _created(schema: Any, customer: dict[str, str], subject: str) -> int:
    """The id of a request the customer opened, the create held to every check."""
    created = (
        schema["/api/mobile/support-requests"]["POST"]
        .Case(
            body={"category": "other", "subject": subject, "message": "Please."},
            media_type="application/json",
            headers=customer,
        )
        .call_and_validate()
    )
    assert created.status_code == 201
    return int(created.json()["data"]["id"])


def test_a_rating_passes_every_check(contract_app: Any) -> None:
    """A customer rates the request an admin resolved, and rates it again: each response held
    to every check."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", contract_app, config=_config())
    customer = {"Authorization": f"Bearer {mint(name='Rater')}"}
    admin = {"Authorization": f"Bearer {mint(str(uuid.uuid4()), role='admin', name='Resolver')}"}
    path = {"id": _created(schema, customer, "Rate me")}
    resolved = (
        schema["/api/admin/support-requests/{id}"]["PATCH"]
        .Case(
            path_parameters=path,
            body={"status": "resolved", "resolutionNote": "Done."},
            media_type="application/json",
            headers=admin,
        )
        .call_and_validate()
    )
    assert resolved.status_code == 200
    rating = schema["/api/mobile/support-requests/{id}/rating"]["PUT"]
    for body in ({"score": 5, "comment": "Thanks!"}, {"score": 3}):
        rated = rating.Case(
            path_parameters=path, body=body, media_type="application/json", headers=customer
        ).call_and_validate()
        assert rated.status_code == 200
        assert rated.json()["data"]["rating"]["score"] == body["score"]


def test_an_erasure_passes_every_check(contract_app: Any) -> None:
    """An admin erases a customer who opened a request, then again (zeros), and one the
    service never saw (404): each response held to every check."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", contract_app, config=_config())
    sub = f"customer-{uuid.uuid4().hex}"
    customer = {"Authorization": f"Bearer {mint(sub, name='Forget Me')}"}
    admin = {"Authorization": f"Bearer {mint(str(uuid.uuid4()), role='admin', name='Eraser')}"}
    _created(schema, customer, "Forget me")
    erase = schema["/api/admin/customers/{sub}/erase"]["POST"]
    for expected in (1, 0):
        erased = erase.Case(path_parameters={"sub": sub}, headers=admin).call_and_validate()
        assert erased.status_code == 200
        assert (erased.json()["data"]["customerId"], erased.json()["data"]["requests"]) == (
            sub,
            expected,
        )
    unknown = erase.Case(path_parameters={"sub": "nobody"}, headers=admin).call_and_validate()
    assert unknown.status_code == 404


def test_a_delivery_retry_passes_every_check(contract_app: Any) -> None:
    """An admin registers an endpoint, pings it and retries that delivery (still pending):
    each response held to every check."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", contract_app, config=_config())
    admin = {"Authorization": f"Bearer {mint(str(uuid.uuid4()), role='admin', name='Hooks')}"}
    added = (
        schema["/api/admin/webhooks"]["POST"]
        .Case(
            body={"url": "https://hooks.example.test/support", "events": ["support_request.rated"]},
            media_type="application/json",
            headers=admin,
        )
        .call_and_validate()
    )
    assert added.status_code == 201, added.text
    endpoint = {"endpointId": added.json()["data"]["id"]}
    pinged = (
        schema["/api/admin/webhooks/{endpointId}/ping"]["POST"]
        .Case(path_parameters=endpoint, headers=admin)
        .call_and_validate()
    )
    assert pinged.status_code == 202, pinged.text
    delivery = {**endpoint, "deliveryId": pinged.json()["data"]["id"]}
    retried = (
        schema["/api/admin/webhooks/{endpointId}/deliveries/{deliveryId}/retry"]["POST"]
        .Case(path_parameters=delivery, headers=admin)
        .call_and_validate()
    )
    assert retried.status_code == 200, retried.text
    assert retried.json()["data"]["status"] == "pending"
