"""What the CLI reads from this machine's server configuration (``SUPPORT_*``).

Only the local commands use it: minting tokens with the server's key
(``token mint``, ``--as``, ``--as-admin``), ``serve``, ``db`` and ``demo``.
The server's modules are imported on first use, so API commands start fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from support_requests.cli.render import fail

if TYPE_CHECKING:
    from support_requests.handlers.settings import Settings


def local_settings() -> Settings:
    """The settings ``supportctl serve`` would start with, or a clear error."""
    from support_requests.handlers.settings import ConfigurationError, Settings

    try:
        return Settings.from_env()
    except (ConfigurationError, OSError) as exc:
        fail(str(exc))


def signing_key(settings: Settings) -> bytes:
    """The HS256 secret tokens are signed with, or a clear error when the server has none."""
    if settings.jwt_secret is None:
        fail(
            f"The server verifies tokens with {settings.key_description}; "
            "supportctl can only sign HS256 tokens (SUPPORT_JWT_SECRET or the development "
            "secret).",
            "Get a token from your identity provider and pass it with --token.",
        )
    return settings.jwt_secret


def database_url(explicit: str | None) -> str:
    """``explicit``, else the server's database: ``SUPPORT_DATABASE_URL`` or the data dir's file.

    Reading it does not create the development secret, unlike ``Settings.from_env()``.
    """
    from support_requests.handlers.settings import DEFAULT_DATA_DIR, default_database_url

    if explicit:
        return explicit
    data_dir = Path(os.environ.get("SUPPORT_DATA_DIR") or DEFAULT_DATA_DIR)
    return os.environ.get("SUPPORT_DATABASE_URL") or default_database_url(data_dir)
