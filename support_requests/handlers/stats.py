"""Statistics (tag ``admin``): what the desk did in a window, and its backlog now."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.responses import Response

from support_requests.domain.clock import iso_ms, now_ms
from support_requests.domain.errors import FieldProblem, RuleViolation
from support_requests.handlers.auth import caller
from support_requests.handlers.render import envelope
from support_requests.storage.stats import SupportStatistics, SupportStats, window
from support_requests.storage.support_desk import SupportDesk


async def get_stats(
    stats: SupportStatistics,
    desk: SupportDesk,
    token_info: dict[str, Any],
    from_: str | None = None,
    to: str | None = None,
) -> Response:
    """The window's counts, response and resolution times and ratings; the backlog now."""
    await desk.remember_admin(caller(token_info))  # as every admin operation does
    asked = window(_instant("from", from_), _instant("to", to), now=now_ms())
    return envelope("Support statistics fetched successfully", _rendered(await stats.read(asked)))


def _instant(field: str, value: str | None) -> datetime | None:
    """A date-time the spec's pattern let through, as naive UTC to the millisecond; one
    that names no moment (``2026-02-30``, an offset of 24 hours or more, a moment before
    year 1 or after 9999 in UTC) breaks the rule on ``field``."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.upper()).astimezone(UTC)
    except (ValueError, OverflowError):
        raise RuleViolation([FieldProblem(field, "is not a date-time that exists")]) from None
    moment = moment.replace(tzinfo=None)
    return moment.replace(microsecond=moment.microsecond - moment.microsecond % 1000)


def _rendered(stats: SupportStats) -> dict[str, object]:
    return {
        "from": iso_ms(stats.window.start),
        "to": iso_ms(stats.window.end),
        "opened": stats.opened,
        "resolved": stats.resolved,
        "closed": stats.closed,
        "firstResponseSeconds": {
            "median": stats.first_response.median,
            "p90": stats.first_response.p90,
        },
        "resolutionSeconds": {"median": stats.resolution.median, "p90": stats.resolution.p90},
        "ratings": {
            "count": stats.ratings_count,
            "average": stats.ratings_average,
            "distribution": {str(score): n for score, n in stats.ratings_distribution.items()},
        },
        "backlog": dict(stats.backlog),
    }
