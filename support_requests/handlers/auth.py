"""Bearer JWT verification with PyJWT, plugged into Connexion's security handling.

Algorithms come from configuration, never from the token: HS256 with a secret,
RS256 or ES256 with a PEM public key (pinned by its key type), or RS256/ES256
with the key an identity provider publishes under the token's ``kid``
(``JwksKeys``). ``sub`` and ``exp`` are required; ``iss``/``aud`` are checked
when configured. Every failure is a 401 problem with the Bearer challenge; a
token of the wrong role for the operation's security scheme (``x-role`` in the
spec) is 403; signing keys that cannot be fetched are a 503 with
``Retry-After``, never a 500 and never an accepted token.

The bearer function runs on the event loop, so verification with a cached key
is CPU-only; a JWKS fetch runs in a worker thread and is shared by every
request that waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from connexion.security import BearerSecurityHandler
from starlette.types import Scope

from support_requests.domain.lifecycle import Actor
from support_requests.domain.principal import Principal
from support_requests.framework.connexion_security import TokenCheck, bearer_security_handler
from support_requests.handlers.observability import remember_caller
from support_requests.handlers.problems import HttpProblem
from support_requests.handlers.settings import JWKS_ALGORITHMS, Settings, parse_public_key

logger = logging.getLogger(__name__)

MAX_SUB_LENGTH = 255
MAX_NAME_LENGTH = 255
MAX_PICTURE_LENGTH = 2048
VERIFIED_TOKENS_KEPT = 10_000
JWKS_USER_AGENT = "support-requests (JWKS client)"


def _unauthenticated(detail: str) -> HttpProblem:
    return HttpProblem(401, "unauthenticated", detail)


def _keys_unavailable(retry_after: float) -> HttpProblem:
    return HttpProblem(
        503,
        "service_unavailable",
        "The identity provider's signing keys cannot be fetched; try again shortly.",
        headers={"Retry-After": str(max(1, math.ceil(retry_after)))},
    )


@dataclass(frozen=True)
class _KeySet:
    keys: Mapping[str, jwt.PyJWK]
    fetched_at: float


class JwksKeys:
    """An identity provider's signing keys by ``kid``, fetched off the event loop and cached.

    - A ``kid`` in a set younger than ``cache_seconds`` is answered from memory
      (no I/O, no lock).
    - An unknown ``kid`` or an expired set means one fetch (PyJWT's
      ``PyJWKClient`` in a worker thread), shared by every request waiting for it;
      so a rotated key works without a restart, and a removed one stops working.
    - Fetches start at most once every ``refetch_seconds``, so a flood of made-up
      ``kid`` values costs the identity provider nothing: meanwhile an unknown
      ``kid`` is a 401, and after a failed fetch every request that needs the
      provider is a 503 with ``Retry-After``.
    - Only RS256/ES256 signing keys are kept; an ``oct`` (HS) key is never used.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        cache_seconds: float,
        refetch_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._client = jwt.PyJWKClient(
            url, cache_jwk_set=False, timeout=timeout, headers={"User-Agent": JWKS_USER_AGENT}
        )
        self._cache_seconds = cache_seconds
        self._refetch_seconds = refetch_seconds
        self._clock = clock
        self._key_set: _KeySet | None = None
        self._last_attempt: float | None = None
        self._last_failed = False
        self._fetching: asyncio.Task[None] | None = None

    async def key(self, kid: str) -> jwt.PyJWK:
        """The signing key named ``kid``; 401 if the provider has none, 503 if unreachable."""
        now = self._clock()
        if self._is_fresh(now):
            assert self._key_set is not None
            cached = self._key_set.keys.get(kid)
            if cached is not None:
                return cached
        fetching = self._fetch_in_progress()
        if fetching is None:
            wait = self._wait_before_fetch(now)
            if wait > 0:
                if self._last_failed or not self._is_fresh(now):
                    raise _keys_unavailable(wait)
                raise _unknown_kid()
            fetching = self._start_fetch()
        await asyncio.shield(fetching)
        if self._last_failed:
            raise _keys_unavailable(self._wait_before_fetch(self._clock()))
        assert self._key_set is not None
        found = self._key_set.keys.get(kid)
        if found is None:
            raise _unknown_kid()
        return found

    def _is_fresh(self, now: float) -> bool:
        key_set = self._key_set
        return key_set is not None and now - key_set.fetched_at < self._cache_seconds

    def _wait_before_fetch(self, now: float) -> float:
        if self._last_attempt is None:
            return 0.0
        return self._last_attempt + self._refetch_seconds - now

    def _fetch_in_progress(self) -> asyncio.Task[None] | None:
        fetching = self._fetching
        if (
            fetching is None
            or fetching.done()
            or fetching.get_loop() is not asyncio.get_running_loop()
        ):
            return None
        return fetching

    def _start_fetch(self) -> asyncio.Task[None]:
        self._last_attempt = self._clock()
        self._fetching = asyncio.get_running_loop().create_task(self._fetch())
        return self._fetching

    async def _fetch(self) -> None:
        key_set = await asyncio.to_thread(self._fetch_blocking)
        if key_set is None:
            self._last_failed = True
        else:
            self._key_set = key_set
            self._last_failed = False

    def _fetch_blocking(self) -> _KeySet | None:
        try:
            jwk_set = self._client.get_jwk_set(refresh=True)
        except Exception as exc:  # any failure to get keys is "unavailable", never a 500
            logger.warning("JWKS fetch from %s failed: %s", self._url, exc)
            return None
        keys: dict[str, jwt.PyJWK] = {}
        for jwk in jwk_set.keys:
            if not isinstance(jwk.key_id, str) or jwk.public_key_use not in (None, "sig"):
                continue
            if jwk.algorithm_name not in JWKS_ALGORITHMS:
                logger.warning(
                    "JWKS key %r ignored: %s is not one of %s",
                    jwk.key_id,
                    jwk.algorithm_name,
                    "/".join(JWKS_ALGORITHMS),
                )
                continue
            keys[jwk.key_id] = jwk
        if not keys:
            logger.warning("JWKS at %s has no RS256/ES256 signing key with a kid", self._url)
            return None
        return _KeySet(keys=keys, fetched_at=self._clock())


def _unknown_kid() -> HttpProblem:
    return _unauthenticated("The bearer token's signing key ('kid') is not known.")


class TokenVerifier:
    """Turns a bearer token into a ``Principal`` or refuses it."""

    def __init__(self, settings: Settings) -> None:
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._algorithms = list(settings.jwt_algorithms)
        self._key: Any = None
        self._jwks: JwksKeys | None = None
        self._verified: dict[str, tuple[float, Principal]] = {}
        if settings.jwks_url is not None:
            self._jwks = JwksKeys(
                settings.jwks_url,
                timeout=settings.jwks_timeout,
                cache_seconds=settings.jwks_cache_seconds,
                refetch_seconds=settings.jwks_refetch_seconds,
            )
        elif settings.jwt_public_key is not None:
            self._key = parse_public_key(settings.jwt_public_key)[0]
        else:
            self._key = settings.jwt_secret

    async def verify(self, token: str) -> Principal:
        """The token's principal; raises a 401 (or, keys unreachable, 503) ``HttpProblem``.

        With a fixed key (secret or PEM), a token verified once is remembered until its
        ``exp``: a phone polls with the same token for minutes, and neither the token nor
        the key can change. With a JWKS every token is checked against the current key set,
        so a key the provider withdraws stops working at once.
        """
        remembered = self._verified.get(token)
        if remembered is not None:
            if remembered[0] > time.time():
                return remembered[1]
            del self._verified[token]
        if self._jwks is None:
            principal, expires = self._verify_with(token, self._key, self._algorithms)
        else:
            jwk = await self._jwks.key(self._kid(token))
            principal, expires = self._verify_with(token, jwk, [jwk.algorithm_name])
            return principal
        if len(self._verified) >= VERIFIED_TOKENS_KEPT:
            self._verified.pop(next(iter(self._verified)))
        self._verified[token] = (expires, principal)
        return principal

    def _kid(self, token: str) -> str:
        """The token's ``kid``, once its header names an accepted algorithm."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _unauthenticated("The bearer token is not a valid JWT.") from None
        if header.get("alg") not in self._algorithms:
            raise _wrong_algorithm()
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _unauthenticated("The bearer token has no 'kid' naming its signing key.")
        return kid

    def _verify_with(self, token: str, key: Any, algorithms: list[str]) -> tuple[Principal, float]:
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                issuer=self._issuer,
                audience=self._audience,
                options={
                    "require": ["exp", "sub"],
                    "verify_aud": self._audience is not None,
                },
            )
        except jwt.ExpiredSignatureError:
            raise _unauthenticated("The bearer token has expired.") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _unauthenticated(f"The bearer token has no {exc.claim!r} claim.") from None
        except jwt.InvalidSignatureError:
            raise _unauthenticated("The bearer token's signature is not valid.") from None
        except (jwt.InvalidIssuerError, jwt.InvalidAudienceError):
            raise _unauthenticated("The bearer token was issued for another service.") from None
        except jwt.InvalidAlgorithmError:
            raise _wrong_algorithm() from None
        except jwt.PyJWTError:
            raise _unauthenticated("The bearer token is not a valid JWT.") from None
        return _principal(claims), float(claims["exp"])


def _wrong_algorithm() -> HttpProblem:
    return _unauthenticated(
        "The bearer token is not signed with an algorithm this service accepts."
    )


def _storable(text: str) -> bool:
    """Text a database can keep: no NUL character and no lone surrogate."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def _principal(claims: dict[str, Any]) -> Principal:
    for claim in ("sub", "name", "picture"):
        value = claims.get(claim)
        if isinstance(value, str) and not _storable(value):
            raise _unauthenticated(f"The bearer token's {claim!r} is not valid text.")
    sub = claims["sub"]
    if not isinstance(sub, str) or not sub.strip() or len(sub) > MAX_SUB_LENGTH:
        raise _unauthenticated("The bearer token's 'sub' must be 1 to 255 characters.")
    role_claim = claims.get("role", Actor.CUSTOMER.value)
    if role_claim not in (Actor.CUSTOMER.value, Actor.ADMIN.value):
        raise _unauthenticated("The bearer token's 'role' must be 'customer' or 'admin'.")
    role = Actor(role_claim)
    if role is Actor.ADMIN:
        try:
            sub = str(uuid.UUID(sub))
        except ValueError:
            raise _unauthenticated("An admin token's 'sub' must be the admin's UUID.") from None
    name = claims.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > MAX_NAME_LENGTH):
        raise _unauthenticated("The bearer token's 'name' must be a string of at most 255.")
    picture = claims.get("picture")
    if picture is not None and (
        not isinstance(picture, str)
        or len(picture) > MAX_PICTURE_LENGTH
        or not picture.startswith(("https://", "http://"))
    ):
        raise _unauthenticated("The bearer token's 'picture' must be an http(s) URL.")
    return Principal(sub=sub, role=role, name=name, picture=picture)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (the scheme in any case,
    split at the first whitespace as Connexion splits it); None for none or another."""
    parts = (authorization or "").split(maxsplit=1)
    if len(parts) != 2 or parts[0].lower() != "bearer":
        return None
    return parts[1]


def required_role(security_scheme: dict[str, Any]) -> Actor:
    """The role a security scheme of the spec admits (its ``x-role``; customer if none)."""
    return Actor(security_scheme.get("x-role", Actor.CUSTOMER.value))


async def authenticate(verifier: TokenVerifier, token: str, role: Actor) -> Principal:
    """The token's principal if it holds ``role``: 401 or 503 from the verifier, else 403."""
    principal = await verifier.verify(token)
    if principal.role is not role:
        api = "mobile" if role is Actor.CUSTOMER else "admin"
        raise HttpProblem(
            403, "forbidden", f"This {principal.role.value} token cannot use the {api} API."
        )
    return principal


def bearer_security(verifier: TokenVerifier) -> type[BearerSecurityHandler]:
    """The handler class for the spec's bearer schemes, checking each scheme's ``x-role``."""

    def check_for(security_scheme: dict[str, Any]) -> TokenCheck:
        role = required_role(security_scheme)

        async def check(scope: Scope, token: str) -> dict[str, Any]:
            principal = await authenticate(verifier, token, role)
            remember_caller(scope, principal)
            return {"sub": principal.sub, "principal": principal}

        return check

    return bearer_security_handler(token_of=bearer_token, check_for=check_for)


def caller(token_info: dict[str, Any]) -> Principal:
    """The verified principal Connexion passes to a handler as ``token_info``."""
    principal: Principal = token_info["principal"]
    return principal
