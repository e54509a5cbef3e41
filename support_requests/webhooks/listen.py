"""The receiver behind ``supportctl webhooks listen``: verify each delivery, report it, answer.

``Listener`` is a small ASGI app (uvicorn serves it) that checks every request with
``standardwebhooks.Webhook(secret).verify``, the library the service signs with, so what
it accepts is what an integrator's endpoint accepts. A verified delivery is answered with
204 (or the status QA asks for, to watch the service retry); anything else with a 401
problem. Each request, verified or refused, becomes a ``Receipt`` handed to a callback:
the CLI prints it. Nothing here prints or reads configuration.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import EmptyWebhookSecretError, WebhookVerificationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from support_requests.reason_phrases import reason_phrase

# Deliveries are small JSON documents; anything much larger is not one of ours.
MAX_BODY_BYTES = 1024 * 1024
SUMMARY_CHARACTERS = 60


class InvalidSecret(ValueError):
    """The secret is not a Standard Webhooks secret (``whsec_`` and base64)."""


def webhook_for(secret: str) -> Webhook:
    """The verifier for ``secret``, as an endpoint's ``whsec_…`` secret is shown once."""
    try:
        binascii.a2b_base64(secret.removeprefix("whsec_").encode(), strict_mode=True)
        return Webhook(secret)
    except (binascii.Error, EmptyWebhookSecretError) as exc:
        raise InvalidSecret(
            "not a webhook signing secret (whsec_ followed by base64), as the service shows it "
            "when the endpoint is created"
        ) from exc


@dataclass(frozen=True)
class Receipt:
    """One request the listener received: when, its ``webhook-id``, its body, and either
    the parsed event (verified) or why it was refused."""

    received_at: datetime
    webhook_id: str | None
    body: bytes
    event: dict[str, Any] | None
    refusal: str | None

    @property
    def verified(self) -> bool:
        return self.refusal is None


def check(webhook: Webhook, body: bytes, headers: Mapping[str, str], at: datetime) -> Receipt:
    """Verify ``body`` and its Standard Webhooks headers (signature and timestamp)."""
    webhook_id = headers.get("webhook-id") or None
    try:
        webhook.verify(body, dict(headers), json_parse=False)
    except WebhookVerificationError as refusal:
        return Receipt(at, webhook_id, body, None, str(refusal))
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    return Receipt(at, webhook_id, body, parsed if isinstance(parsed, dict) else None, None)


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


def _clip(text: str, limit: int = SUMMARY_CHARACTERS) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def summary(event: Mapping[str, Any]) -> str:
    """A few words on what ``event`` says (its type and request are shown beside it)."""
    data = event.get("data")
    if not isinstance(data, dict):
        return ""
    kind = event.get("type")
    if kind == "support_request.created":
        return _clip(f"[{_text(data.get('category'))}] {_text(data.get('subject'))}")
    if kind == "support_request.message_created":
        message = data.get("message")
        message = message if isinstance(message, dict) else {}
        return _clip(f"{_text(message.get('authorType'))}: {_text(message.get('body'))}")
    if kind in ("support_request.status_changed", "support_request.assigned"):
        return f"{_text(data.get('from'))} -> {_text(data.get('to'))}"
    if kind == "support_request.rated":
        return f"score {_text(data.get('score'))}"
    if kind == "notification.push":
        notification = data.get("notification")
        devices = data.get("devices")
        count = len(devices) if isinstance(devices, list) else 0
        text = _text(notification.get("body")) if isinstance(notification, dict) else "-"
        return _clip(f"to {count} device{'s' if count != 1 else ''}: {text}")
    shown = {k: v for k, v in data.items() if k not in ("requestId", "customerId")}
    return _clip(json.dumps(shown, separators=(",", ":"), ensure_ascii=False)) if shown else ""


def _problem(status: int, detail: str, headers: Mapping[str, str] | None = None) -> Response:
    document = {"type": "about:blank", "title": reason_phrase(status), "status": status}
    return Response(
        json.dumps({**document, "detail": detail}),
        status_code=status,
        media_type="application/problem+json",
        headers=dict(headers or {}),
    )


async def _body(request: Request, limit: int) -> bytes | None:
    """The request's body, or None once it passes ``limit`` bytes."""
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > limit:
            return None
    return bytes(received)


class Listener:
    """An ASGI app that verifies every request with ``webhook`` and answers ``answer``
    (204 by default) to the verified ones; ``on_receipt`` sees every request."""

    def __init__(
        self,
        webhook: Webhook,
        on_receipt: Callable[[Receipt], None],
        *,
        answer: int = 204,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.webhook = webhook
        self.on_receipt = on_receipt
        self.answer = answer
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        response = await self._respond(request)
        await response(scope, receive, send)

    async def _respond(self, request: Request) -> Response:
        if request.method != "POST":
            return _problem(405, "Deliveries are POSTed here.", {"Allow": "POST"})
        body = await _body(request, MAX_BODY_BYTES)
        if body is None:
            return _problem(413, f"A delivery is at most {MAX_BODY_BYTES} bytes.")
        receipt = check(self.webhook, body, request.headers, self.clock())
        self.on_receipt(receipt)
        if receipt.refusal is not None:
            return _problem(401, f"The delivery is refused: {receipt.refusal}.")
        return Response(status_code=self.answer)
