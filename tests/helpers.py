"""Helpers for tests: random principals, minted tokens, request shortcuts."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt

SECRET = "test-secret-" + "x" * 40
MOBILE = "/api/mobile/support-requests"
ADMIN = "/api/admin/support-requests"


def mint(sub: str | None = None, *, secret: str = SECRET, ttl: int = 3600, **claims: Any) -> str:
    """A signed HS256 token; ``claims`` override or add (``None`` drops a claim)."""
    payload: dict[str, Any] = {"sub": sub or f"customer-{uuid.uuid4().hex[:12]}"}
    payload["exp"] = int(time.time()) + ttl
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, secret, algorithm="HS256")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def customer(name: str | None = "Alex Customer", **claims: Any) -> dict[str, str]:
    """Headers for a fresh random customer."""
    return bearer(mint(name=name, **claims))


def admin(
    admin_id: str | None = None, name: str | None = "Support Agent", **claims: Any
) -> dict[str, str]:
    """Headers for an admin (a fresh random UUID unless given)."""
    return bearer(mint(admin_id or str(uuid.uuid4()), role="admin", name=name, **claims))


def admin_id_of(headers: dict[str, str]) -> str:
    token = headers["Authorization"].split()[1]
    return str(jwt.decode(token, options={"verify_signature": False})["sub"])


def create(client: Any, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    """Create a request through the API and return its detail (asserting 201)."""
    body = {"category": "technical", "subject": "App crashes", "message": "It crashes.", **fields}
    response = client.post(MOBILE, json=body, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json()["data"])
