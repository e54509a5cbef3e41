"""Connexion's bearer security handler, calling a check bound at start instead of a
function named in the spec.

Replaces, from connexion 3.3.0's ``connexion.security.BearerSecurityHandler``:

- ``_resolve_func``: upstream imports the function ``x-bearerInfoFunc`` names (or the
  ``BEARERINFO_FUNC`` variable names), a module-level function; ours is bound to the
  app's token verifier and the scheme's required role, both known only at start.
- ``_get_verify_func`` and ``_generic_check``: upstream splits ``Authorization`` with
  ``get_auth_header_value`` and inspects the function's signature on every request;
  ours takes the token from the app's ``token_of`` (the one parser the detail poll's
  fast path uses too) and calls the check with the request's scope and the token.

As upstream: no bearer token is "no credentials" (``NO_VALUE``, so Connexion answers
401), and what the check returns becomes the security context (``user`` is its
``sub``). Guarded by ``tests/test_framework_security.py``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from connexion.lifecycle import ConnexionRequest
from connexion.security import NO_VALUE, BearerSecurityHandler
from starlette.types import Scope

TokenCheck = Callable[[Scope, str], Awaitable[dict[str, Any]]]
"""Verifies a token for a request (raising to refuse it); returns the token info."""


def bearer_security_handler(
    *,
    token_of: Callable[[str | None], str | None],
    check_for: Callable[[dict[str, Any]], TokenCheck],
) -> type[BearerSecurityHandler]:
    """A handler class for Connexion's ``security_map``: ``token_of`` finds the token in
    the ``Authorization`` header, ``check_for(scheme)`` checks it for that scheme."""

    class BoundBearerHandler(BearerSecurityHandler):  # type: ignore[misc]
        def _resolve_func(self, security_scheme: dict[str, Any]) -> TokenCheck:
            return check_for(security_scheme)

        def _get_verify_func(
            self, check: TokenCheck
        ) -> Callable[[ConnexionRequest], Awaitable[Any]]:
            async def verify(request: ConnexionRequest) -> Any:
                token = token_of(request.headers.get("Authorization"))
                if token is None:
                    return NO_VALUE
                return await check(request.scope, token)

            return verify

    return BoundBearerHandler
