"""Webhook signing secrets: issued once, stored sealed when the operator gives a key.

A secret is Standard Webhooks' form, ``whsec_`` and the base64 of 24 random bytes, and
the ``standardwebhooks`` library signs with it as it is. At rest it is sealed with
Fernet (``cryptography``: AES-128-CBC and HMAC-SHA256) under a key derived by HKDF
from ``SUPPORT_SECRET_KEY``, so a database dump alone does not reveal it; without that
variable it is stored as issued (documented in docs/operations.md).
"""

from __future__ import annotations

import base64
import secrets

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "whsec_"
SEALED = "sealed:v1:"
SECRET_BYTES = 24


class SecretUnavailable(RuntimeError):
    """A stored secret that this process cannot open (no key, or another key)."""


def new_secret() -> str:
    """A fresh signing secret, ``whsec_…``."""
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


class SecretBox:
    """Seals secrets for storage and opens them for signing, with ``key`` if given."""

    def __init__(self, key: bytes | None) -> None:
        self._fernet: Fernet | None = None
        if key is not None:
            derived = HKDF(
                algorithm=hashes.SHA256(),
                length=32,
                salt=None,
                info=b"support-requests webhook secrets v1",
            ).derive(key)
            self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def seal(self, secret: str) -> str:
        """What to store for ``secret``."""
        if self._fernet is None:
            return secret
        return SEALED + self._fernet.encrypt(secret.encode()).decode()

    def open(self, stored: str) -> str:
        """The secret ``stored`` holds."""
        if not stored.startswith(SEALED):
            return stored
        if self._fernet is None:
            raise SecretUnavailable(
                "a webhook secret is stored sealed and SUPPORT_SECRET_KEY is not set"
            )
        try:
            return self._fernet.decrypt(stored[len(SEALED) :].encode()).decode()
        except InvalidToken:
            raise SecretUnavailable(
                "a webhook secret was sealed with another SUPPORT_SECRET_KEY"
            ) from None
