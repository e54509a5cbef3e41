"""Safe retries: ``Idempotency-Key`` on create and reply.

The key's scope is the caller (``sub``) plus the key. A retry with the same
body gets the first response again (``Idempotent-Replayed: true``) and writes
nothing; the same key with another request is 422 ``idempotency_key_reused``;
the same key while the first request still runs is 409 ``idempotency_key_in_use``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from connexion import request
from starlette.responses import Response

from support_requests import metrics
from support_requests.domain.principal import Principal
from support_requests.handlers.problems import HttpProblem
from support_requests.storage.idempotency import (
    IdempotencyStore,
    KeyInFlight,
    KeyReused,
    StoredResponse,
)

HEADER = "Idempotency-Key"


def fingerprint(method: str, path: str, body: Any) -> str:
    """What makes two requests "the same" under one key: method, path and JSON body."""
    canonical = orjson.dumps([method, path, body], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


async def once(
    store: IdempotencyStore,
    caller: Principal,
    body: Any,
    run: Callable[[], Awaitable[Response]],
) -> Response:
    """Run ``run`` once per (caller, Idempotency-Key); without the header, just run it."""
    key = request.headers.get(HEADER)
    if key is None:
        return await run()
    digest = fingerprint(request.method, request.url.path, body)
    try:
        stored = await store.claim(caller.sub, key, digest)
    except KeyReused:
        raise HttpProblem(
            422,
            "idempotency_key_reused",
            "This Idempotency-Key was already used with a different request.",
        ) from None
    except KeyInFlight:
        raise HttpProblem(
            409,
            "idempotency_key_in_use",
            "A request with this Idempotency-Key is still being processed; retry shortly.",
            headers={"Retry-After": "1"},
        ) from None
    if stored is not None:
        metrics.idempotent_replays_total.inc()
        headers = {"Idempotent-Replayed": "true"}
        if stored.location:
            headers["Location"] = stored.location
        return Response(
            stored.body, stored.status_code, headers=headers, media_type="application/json"
        )
    try:
        response = await run()
    except BaseException:
        await store.release(caller.sub, key)
        raise
    await store.complete(
        caller.sub,
        key,
        StoredResponse(
            response.status_code, bytes(response.body), response.headers.get("location")
        ),
    )
    return response
