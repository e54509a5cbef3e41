"""Bearer JWT verification with PyJWT, plugged into Connexion's security handling.

Algorithms come from configuration, never from the token. ``sub`` and ``exp``
are required; ``iss``/``aud`` are checked when configured. Every failure is a
401 problem with the Bearer challenge; a token of the wrong role for the
operation's security scheme (``x-role`` in the spec) is 403.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import jwt
from connexion.security import BearerSecurityHandler

from domain.lifecycle import Actor
from domain.principal import Principal
from handlers.problems import HttpProblem
from handlers.settings import Settings

MAX_SUB_LENGTH = 255
MAX_NAME_LENGTH = 255
MAX_PICTURE_LENGTH = 2048
ALGORITHMS = ["HS256"]


def _unauthenticated(detail: str) -> HttpProblem:
    return HttpProblem(401, "unauthenticated", detail)


class TokenVerifier:
    """Turns a bearer token into a ``Principal`` or refuses it."""

    def __init__(self, settings: Settings) -> None:
        self._key = settings.jwt_secret
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience

    def verify(self, token: str) -> Principal:
        """The token's principal; raises a 401 ``HttpProblem`` for any defect."""
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=ALGORITHMS,
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
        except jwt.PyJWTError:
            raise _unauthenticated("The bearer token is not a valid JWT.") from None
        return _principal(claims)


def _principal(claims: dict[str, Any]) -> Principal:
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


def bearer_security_handler(verifier: TokenVerifier) -> type[BearerSecurityHandler]:
    """A Connexion bearer handler bound to ``verifier``, enforcing each scheme's ``x-role``."""

    class RoleBearerHandler(BearerSecurityHandler):  # type: ignore[misc]
        def _resolve_func(self, security_scheme: dict[str, Any]) -> Callable[[str], Any]:
            required = Actor(security_scheme.get("x-role", Actor.CUSTOMER.value))

            def check(token: str) -> dict[str, Any]:
                principal = verifier.verify(token)
                if principal.role is not required:
                    api = "mobile" if required is Actor.CUSTOMER else "admin"
                    raise HttpProblem(
                        403,
                        "forbidden",
                        f"This {principal.role.value} token cannot use the {api} API.",
                    )
                return {"sub": principal.sub, "principal": principal}

            return check

    return RoleBearerHandler


def caller(token_info: dict[str, Any]) -> Principal:
    """The verified principal Connexion passes to a handler as ``token_info``."""
    principal: Principal = token_info["principal"]
    return principal
