"""Safe retries: ``Idempotency-Key`` on create and reply.

The key's scope is the caller (``sub``) plus the key. A retry with the same body gets the
first response again (``Idempotent-Replayed: true``) and writes nothing; the same key with
another request is 422 ``idempotency_key_reused``. The first response is stored in the
transaction of the change it answers (``storage/idempotency.py``), so a retry after a
crash at any moment either runs afresh or replays: never twice, never a 409.
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
    Keeper,
    KeyTaken,
    StoredAnswer,
    StoredResponse,
)
from support_requests.storage.support_desk import RequestRecord

HEADER = "Idempotency-Key"


def fingerprint(method: str, path: str, body: Any) -> str:
    """What makes two requests "the same" under one key: method, path and JSON body."""
    canonical = orjson.dumps([method, path, body], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


async def once(
    store: IdempotencyStore,
    caller: Principal,
    body: Any,
    act: Callable[[Keeper | None], Awaitable[RequestRecord]],
    render: Callable[[RequestRecord], Response],
) -> Response:
    """``render(await act(...))`` once per (caller, Idempotency-Key); without the header,
    just that. ``act`` runs the change with the ``Keeper`` it is given, which stores the
    rendered answer with the change (``storage/idempotency.py``)."""
    key = request.headers.get(HEADER)
    if key is None:
        return render(await act(None))
    digest = fingerprint(request.method, request.url.path, body)

    rendered: list[Response] = []

    def answer(record: RequestRecord) -> StoredResponse:
        response = render(record)
        rendered.append(response)  # the last is the change's own (a create renders twice)
        return StoredResponse(
            response.status_code, bytes(response.body), response.headers.get("location")
        )

    # No read before the change: a first request (the usual case) costs one statement more
    # than without a key, the upsert of its answer. A retry runs the change too; the taken
    # key rolls it back, or (a change now refused, e.g. on a request closed since) the
    # refusal is answered with the stored answer if there is one.
    try:
        await act(Keeper(store, caller.sub, key, digest, answer))
    except KeyTaken:
        # A request with the same key committed first: this one's change was rolled back.
        first = await store.find(caller.sub, key)
        if first is None:  # it expired in between: a request this old is not a retry
            raise HttpProblem(
                409,
                "idempotency_key_in_use",
                "This Idempotency-Key was just used; retry with a new key.",
            ) from None
        return _replay(first, digest)
    except Exception:
        stored = await store.find(caller.sub, key)
        if stored is None:
            raise
        return _replay(stored, digest)
    return rendered[-1]


def _replay(stored: StoredAnswer, digest: str) -> Response:
    if stored.fingerprint != digest:
        raise HttpProblem(
            422,
            "idempotency_key_reused",
            "This Idempotency-Key was already used with a different request.",
        )
    metrics.idempotent_replays_total.inc()
    headers = {"Idempotent-Replayed": "true"}
    if stored.response.location:
        headers["Location"] = stored.response.location
    return Response(
        stored.response.body,
        stored.response.status_code,
        headers=headers,
        media_type="application/json",
    )
