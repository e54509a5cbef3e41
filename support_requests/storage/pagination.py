"""Opaque keyset cursors, bound to the filters and sort they were issued for."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from datetime import datetime
from typing import Any

from support_requests.domain.errors import FieldProblem, RuleViolation


def scope_of(**filters: Any) -> str:
    """A short fingerprint of a listing's filters and sort."""
    canonical = json.dumps(filters, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def encode(moment: datetime, row_id: int, scope: str) -> str:
    """The cursor that continues after the row keyed (moment, row_id)."""
    raw = json.dumps([moment.isoformat(), row_id, scope], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()


def decode(cursor: str, scope: str) -> tuple[datetime, int]:
    """The key a cursor continues after; 422 when it is not ours or not for this listing."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        moment, row_id, issued_for = json.loads(base64.urlsafe_b64decode(padded))
        key = (datetime.fromisoformat(moment), int(row_id))
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise RuleViolation(
            [FieldProblem("cursor", "is not a cursor this service issued")]
        ) from None
    if issued_for != scope:
        raise RuleViolation(
            [FieldProblem("cursor", "was issued for other filters or another sort order")]
        )
    return key
