"""Per-caller rate limits on reads and writes, after authentication.

Every answered request of an authenticated caller carries ``RateLimit-Limit``,
``RateLimit-Remaining`` and ``RateLimit-Reset``; over budget it is 429 with
``Retry-After``.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from support_requests import metrics
from support_requests.handlers.observability import caller_of
from support_requests.handlers.problems import HttpProblem
from support_requests.storage.rate_limits import Limit, RateLimiter

READ_METHODS = frozenset({"GET", "HEAD"})


class RateLimit:
    """Counts each authenticated request against its caller's read or write budget."""

    def __init__(
        self, app: ASGIApp, *, limiter: RateLimiter, reads: Limit | None, writes: Limit | None
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.reads = reads
        self.writes = writes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        caller = caller_of(scope)
        if scope["type"] != "http" or caller is None:
            await self.app(scope, receive, send)
            return
        kind = "reads" if scope["method"] in READ_METHODS else "writes"
        limit = self.reads if kind == "reads" else self.writes
        if limit is None:
            await self.app(scope, receive, send)
            return
        verdict = await self.limiter.hit(f"{kind}:{caller.sub}", limit)
        headers = {
            "RateLimit-Limit": str(verdict.limit),
            "RateLimit-Remaining": str(verdict.remaining),
            "RateLimit-Reset": str(verdict.reset_seconds),
        }
        if not verdict.allowed:
            metrics.rate_limited_total.labels(kind).inc()
            raise HttpProblem(
                429,
                "rate_limited",
                f"Too many {kind}: at most {limit}. Try again in {verdict.reset_seconds} s.",
                headers={**headers, "Retry-After": str(verdict.reset_seconds)},
            )

        async def send_with_budget(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = MutableHeaders(scope=message)
                for name, value in headers.items():
                    response_headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_budget)
