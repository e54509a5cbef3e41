"""Configuration, read once at start into a typed object that ``create_app`` receives."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

MIN_SECRET_BYTES = 32
DEV_SECRET_FILE = "dev-jwt-secret"
DEFAULT_DATA_DIR = ".supportdesk"


class ConfigurationError(ValueError):
    """The configuration cannot work; the message says what to change."""


@dataclass(frozen=True)
class Settings:
    """Everything the service needs to run."""

    database_url: str
    jwt_secret: bytes
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    dev_secret_path: Path | None = None
    validate_responses: bool = False
    # True: create missing tables directly (tests). False: the schema must be at the
    # newest Alembic revision; an empty SQLite database is migrated on start.
    create_schema: bool = True
    pool_size: int = 10

    def __post_init__(self) -> None:
        if len(self.jwt_secret) < MIN_SECRET_BYTES:
            raise ConfigurationError(
                f"SUPPORT_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes "
                f"(got {len(self.jwt_secret)})"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``SUPPORT_*`` variables, creating the dev secret when no key is set."""
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("SUPPORT_DATA_DIR") or DEFAULT_DATA_DIR)
        database_url = env.get("SUPPORT_DATABASE_URL") or default_database_url(data_dir)
        secret = env.get("SUPPORT_JWT_SECRET")
        dev_secret_path = None
        if secret:
            key = secret.encode()
        else:
            dev_secret_path = data_dir / DEV_SECRET_FILE
            key = load_or_create_dev_secret(dev_secret_path)
        return cls(
            database_url=database_url,
            jwt_secret=key,
            data_dir=data_dir,
            jwt_issuer=env.get("SUPPORT_JWT_ISSUER") or None,
            jwt_audience=env.get("SUPPORT_JWT_AUDIENCE") or None,
            dev_secret_path=dev_secret_path,
            create_schema=False,
        )


def default_database_url(data_dir: Path) -> str:
    """The zero-configuration database: a SQLite file in the data directory."""
    return f"sqlite:///{(data_dir / 'support.db').resolve()}"


def load_or_create_dev_secret(path: Path) -> bytes:
    """The development signing secret, created (mode 0600) on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip().encode()
