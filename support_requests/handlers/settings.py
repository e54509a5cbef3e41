"""Configuration, read once at start into a typed object that ``create_app`` receives.

Bearer tokens are verified in exactly one key mode (``KeyMode``): an HS256
secret (``SUPPORT_JWT_SECRET``, or the development secret when nothing is
configured), a PEM public key (``SUPPORT_JWT_PUBLIC_KEY``: RS256 or ES256 by
its key type), or the keys an identity provider publishes
(``SUPPORT_JWKS_URL``: RS256/ES256 by ``kid``). Configuring two is refused.
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from support_requests.storage.rate_limits import Limit, redis_storage_uri
from support_requests.tracing import mode_from_environment

MIN_SECRET_BYTES = 32
MIN_RSA_BITS = 2048
DEV_SECRET_FILE = "dev-jwt-secret"
DEFAULT_RATE_LIMIT_READS = "12000/minute"
DEFAULT_RATE_LIMIT_WRITES = "3000/minute"
DEFAULT_IDEMPOTENCY_TTL = 24 * 3600
DEFAULT_DATA_DIR = ".supportdesk"
DEFAULT_ATTACHMENT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_ATTACHMENT_CLEANUP_SECONDS = 600.0
KEY_VARIABLES = ("SUPPORT_JWT_SECRET", "SUPPORT_JWT_PUBLIC_KEY", "SUPPORT_JWKS_URL")
JWKS_ALGORITHMS = ("RS256", "ES256")
DEFAULT_JWKS_TIMEOUT = 3.0
DEFAULT_JWKS_CACHE_SECONDS = 300.0
DEFAULT_JWKS_REFETCH_SECONDS = 10.0
DEFAULT_WEBHOOK_FIRST_RETRY_SECONDS = 5.0


class ConfigurationError(ValueError):
    """The configuration cannot work; the message says what to change."""


class KeyMode(StrEnum):
    """Which key verifies bearer tokens; exactly one is configured."""

    SECRET = "secret"
    DEV_SECRET = "dev-secret"
    PUBLIC_KEY = "public-key"
    JWKS = "jwks"


@dataclass(frozen=True)
class Settings:
    """Everything the service needs to run."""

    database_url: str
    jwt_secret: bytes | None = None
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    dev_secret_path: Path | None = None
    validate_responses: bool = False
    # True: create missing tables directly (tests). False: the schema must be at the
    # newest Alembic revision; an empty SQLite database is migrated on start.
    create_schema: bool = True
    pool_size: int = 20
    sqlite_busy_timeout_ms: int = 30_000
    # Per-caller budgets (``N/second|minute|hour`` or ``off``); generous: no honest app or
    # QA run meets them, a runaway client or a token in the wrong hands does.
    rate_limit_reads: str = DEFAULT_RATE_LIMIT_READS
    rate_limit_writes: str = DEFAULT_RATE_LIMIT_WRITES
    idempotency_ttl_seconds: int = DEFAULT_IDEMPOTENCY_TTL
    # Token keys: exactly one of jwt_secret, jwt_public_key (PEM bytes), jwks_url.
    jwt_public_key: bytes | None = None
    jwks_url: str | None = None
    jwks_timeout: float = DEFAULT_JWKS_TIMEOUT
    jwks_cache_seconds: float = DEFAULT_JWKS_CACHE_SECONDS
    jwks_refetch_seconds: float = DEFAULT_JWKS_REFETCH_SECONDS
    # Attachments: the largest upload, and where the bytes live (None: in the database).
    attachment_max_bytes: int = DEFAULT_ATTACHMENT_MAX_BYTES
    attachment_dir: Path | None = None
    # How often the server deletes uploads that expired unattached.
    attachment_cleanup_seconds: float = DEFAULT_ATTACHMENT_CLEANUP_SECONDS
    # Encrypts webhook signing secrets at rest (None: stored as issued; a database dump
    # then reveals them).
    secret_key: bytes | None = None
    # Webhook URLs: private, loopback, link-local and metadata addresses, and plain http,
    # are refused unless these allow them (local development and tests).
    webhook_allow_private: bool = False
    webhook_allow_http: bool = False
    # Seconds before a failed delivery's first retry; each next one about twice as late.
    webhook_first_retry_seconds: float = DEFAULT_WEBHOOK_FIRST_RETRY_SECONDS
    # Whether the server process runs a delivery worker of its own (from the environment:
    # on by default on SQLite, where `supportctl worker` is not needed).
    embedded_worker: bool = False
    # Rate-limit budgets in Redis, shared by every process and host (None: per process).
    redis_url: str | None = None
    # GET /metrics answers only with this bearer token (None: no /metrics, 404).
    metrics_token: str | None = None
    # OpenTelemetry traces: "otlp" (OTEL_EXPORTER_OTLP_ENDPOINT), "console", or None (off).
    tracing: str | None = None

    def __post_init__(self) -> None:
        configured = [
            name
            for name, value in zip(
                KEY_VARIABLES, (self.jwt_secret, self.jwt_public_key, self.jwks_url), strict=True
            )
            if value is not None
        ]
        _exactly_one_key(configured)
        for name, value in (
            ("SUPPORT_RATE_LIMIT_READS", self.rate_limit_reads),
            ("SUPPORT_RATE_LIMIT_WRITES", self.rate_limit_writes),
        ):
            try:
                Limit.parse(value)
            except ValueError as exc:
                raise ConfigurationError(f"{name}: {exc}") from None
        if self.idempotency_ttl_seconds < 1:
            raise ConfigurationError("SUPPORT_IDEMPOTENCY_TTL must be at least 1 second")
        if self.jwt_secret is not None and len(self.jwt_secret) < MIN_SECRET_BYTES:
            raise ConfigurationError(
                f"SUPPORT_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes "
                f"(got {len(self.jwt_secret)})"
            )
        if self.jwt_public_key is not None:
            parse_public_key(self.jwt_public_key)
        if self.jwks_url is not None:
            _check_jwks_url(self.jwks_url)
        _check_seconds("SUPPORT_JWKS_TIMEOUT", self.jwks_timeout, allow_zero=False)
        _check_seconds("SUPPORT_JWKS_CACHE_SECONDS", self.jwks_cache_seconds, allow_zero=False)
        _check_seconds("SUPPORT_JWKS_REFETCH_SECONDS", self.jwks_refetch_seconds, allow_zero=True)
        _check_seconds(
            "SUPPORT_WEBHOOK_FIRST_RETRY_SECONDS", self.webhook_first_retry_seconds, allow_zero=True
        )
        if self.metrics_token is not None and len(self.metrics_token) < 16:
            raise ConfigurationError(
                "SUPPORT_METRICS_TOKEN must be at least 16 characters "
                f"(got {len(self.metrics_token)})"
            )
        if self.redis_url is not None:
            try:
                redis_storage_uri(self.redis_url)
            except ValueError as exc:
                raise ConfigurationError(str(exc)) from None
        if self.secret_key is not None and len(self.secret_key) < MIN_SECRET_BYTES:
            raise ConfigurationError(
                f"SUPPORT_SECRET_KEY must be at least {MIN_SECRET_BYTES} bytes "
                f"(got {len(self.secret_key)})"
            )
        if self.jwks_refetch_seconds > self.jwks_cache_seconds:
            raise ConfigurationError(
                "SUPPORT_JWKS_REFETCH_SECONDS must not exceed SUPPORT_JWKS_CACHE_SECONDS "
                f"({self.jwks_refetch_seconds:g} > {self.jwks_cache_seconds:g})"
            )

    @property
    def key_mode(self) -> KeyMode:
        """The one way bearer tokens are verified."""
        if self.jwks_url is not None:
            return KeyMode.JWKS
        if self.jwt_public_key is not None:
            return KeyMode.PUBLIC_KEY
        return KeyMode.SECRET if self.dev_secret_path is None else KeyMode.DEV_SECRET

    @property
    def jwt_algorithms(self) -> tuple[str, ...]:
        """The accepted ``alg`` values, pinned by the key mode (never read from a token)."""
        if self.jwks_url is not None:
            return JWKS_ALGORITHMS
        if self.jwt_public_key is not None:
            return (parse_public_key(self.jwt_public_key)[1],)
        return ("HS256",)

    @property
    def key_description(self) -> str:
        """One line for the operator: how tokens are verified (no key material)."""
        algorithms = "/".join(self.jwt_algorithms)
        match self.key_mode:
            case KeyMode.JWKS:
                return f"{algorithms} with the keys published at {self.jwks_url}, by kid"
            case KeyMode.PUBLIC_KEY:
                return f"{algorithms} with the public key from SUPPORT_JWT_PUBLIC_KEY"
            case KeyMode.DEV_SECRET:
                return (
                    f"{algorithms} with the development secret in {self.dev_secret_path} "
                    "(local use only; set SUPPORT_JWT_SECRET, SUPPORT_JWT_PUBLIC_KEY "
                    "or SUPPORT_JWKS_URL in production)"
                )
            case _:
                return f"{algorithms} with the secret from SUPPORT_JWT_SECRET"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``SUPPORT_*`` variables, creating the dev secret when no key is set."""
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("SUPPORT_DATA_DIR") or DEFAULT_DATA_DIR)
        database_url = env.get("SUPPORT_DATABASE_URL") or default_database_url(data_dir)
        _exactly_one_key([name for name in KEY_VARIABLES if env.get(name)], allow_none=True)
        secret = env.get("SUPPORT_JWT_SECRET")
        public_key_path = env.get("SUPPORT_JWT_PUBLIC_KEY")
        jwks_url = env.get("SUPPORT_JWKS_URL") or None
        attachment_dir = env.get("SUPPORT_ATTACHMENT_DIR")
        secret_key = env.get("SUPPORT_SECRET_KEY")
        key = secret.encode() if secret else None
        public_key = read_public_key(Path(public_key_path)) if public_key_path else None
        dev_secret_path = None
        if key is None and public_key is None and jwks_url is None:
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
            pool_size=_whole(env, "SUPPORT_DB_POOL_SIZE", 20),
            jwt_public_key=public_key,
            jwks_url=jwks_url,
            rate_limit_reads=env.get("SUPPORT_RATE_LIMIT_READS") or DEFAULT_RATE_LIMIT_READS,
            rate_limit_writes=env.get("SUPPORT_RATE_LIMIT_WRITES") or DEFAULT_RATE_LIMIT_WRITES,
            idempotency_ttl_seconds=_whole(env, "SUPPORT_IDEMPOTENCY_TTL", DEFAULT_IDEMPOTENCY_TTL),
            jwks_timeout=_seconds(env, "SUPPORT_JWKS_TIMEOUT", DEFAULT_JWKS_TIMEOUT),
            jwks_cache_seconds=_seconds(
                env, "SUPPORT_JWKS_CACHE_SECONDS", DEFAULT_JWKS_CACHE_SECONDS
            ),
            jwks_refetch_seconds=_seconds(
                env, "SUPPORT_JWKS_REFETCH_SECONDS", DEFAULT_JWKS_REFETCH_SECONDS
            ),
            attachment_max_bytes=_whole(
                env, "SUPPORT_ATTACHMENT_MAX_BYTES", DEFAULT_ATTACHMENT_MAX_BYTES
            ),
            attachment_dir=Path(attachment_dir) if attachment_dir else None,
            secret_key=secret_key.encode() if secret_key else None,
            webhook_allow_private=_flag(env, "SUPPORT_WEBHOOK_ALLOW_PRIVATE", False),
            webhook_allow_http=_flag(env, "SUPPORT_WEBHOOK_ALLOW_HTTP", False),
            webhook_first_retry_seconds=_seconds(
                env, "SUPPORT_WEBHOOK_FIRST_RETRY_SECONDS", DEFAULT_WEBHOOK_FIRST_RETRY_SECONDS
            ),
            redis_url=env.get("SUPPORT_REDIS_URL") or None,
            metrics_token=env.get("SUPPORT_METRICS_TOKEN") or None,
            tracing=_tracing_mode(env),
            embedded_worker=_flag(env, "SUPPORT_WEBHOOK_WORKER", database_url.startswith("sqlite")),
        )


def default_database_url(data_dir: Path) -> str:
    """The zero-configuration database: a SQLite file in the data directory."""
    return f"sqlite:///{(data_dir / 'support.db').resolve()}"


def _exactly_one_key(configured: list[str], *, allow_none: bool = False) -> None:
    """HS and RS/ES are never accepted together: one key mode, or (from the env) none yet."""
    if len(configured) > 1:
        raise ConfigurationError(
            f"{' and '.join(configured)} are both set; configure exactly one of "
            f"{', '.join(KEY_VARIABLES)} (HS256 and RS256/ES256 tokens are never "
            "accepted together)"
        )
    if not configured and not allow_none:
        raise ConfigurationError(
            f"No token key is configured; set one of {', '.join(KEY_VARIABLES)}"
        )


def parse_public_key(pem: bytes) -> tuple[PublicKeyTypes, str]:
    """The PEM public key (or certificate) and the one algorithm its type pins.

    RSA (at least 2048 bits) verifies RS256, EC P-256 verifies ES256; anything
    else is a ``ConfigurationError``.
    """
    if b"PRIVATE KEY" in pem:
        raise ConfigurationError(
            "SUPPORT_JWT_PUBLIC_KEY holds a private key; give the service only the public key "
            "(openssl pkey -in private.pem -pubout)"
        )
    key: object
    try:
        if b"-----BEGIN CERTIFICATE-----" in pem:
            key = x509.load_pem_x509_certificate(pem).public_key()
        else:
            key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigurationError(
            "SUPPORT_JWT_PUBLIC_KEY is not a PEM public key (-----BEGIN PUBLIC KEY-----) "
            "or certificate"
        ) from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ConfigurationError(
                f"SUPPORT_JWT_PUBLIC_KEY is a {key.key_size}-bit RSA key; "
                f"at least {MIN_RSA_BITS} bits are required"
            )
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey):
        if isinstance(key.curve, ec.SECP256R1):
            return key, "ES256"
        raise ConfigurationError(
            f"SUPPORT_JWT_PUBLIC_KEY is an EC key on {key.curve.name}; only P-256 (ES256) "
            "is accepted"
        )
    raise ConfigurationError(
        "SUPPORT_JWT_PUBLIC_KEY must be an RSA (RS256) or EC P-256 (ES256) public key"
    )


def read_public_key(path: Path) -> bytes:
    """The PEM file named by ``SUPPORT_JWT_PUBLIC_KEY``."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"SUPPORT_JWT_PUBLIC_KEY: cannot read {path}: {exc.strerror or exc}"
        ) from None


def _check_jwks_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigurationError(f"SUPPORT_JWKS_URL must be an http(s) URL (got {url!r})")


def _check_seconds(name: str, value: float, *, allow_zero: bool) -> None:
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "more than zero"
        raise ConfigurationError(f"{name} must be a number of seconds, {bound} (got {value})")


def _whole(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number (got {raw!r})") from None
    if value < 1:
        raise ConfigurationError(f"{name} must be at least 1 (got {value})")
    return value


def _tracing_mode(env: Mapping[str, str]) -> str | None:
    try:
        return mode_from_environment(env)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{name} must be 1 or 0 (got {raw!r})")


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number of seconds (got {raw!r})") from None


def load_or_create_dev_secret(path: Path) -> bytes:
    """The development signing secret, created (mode 0600) on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip().encode()
