"""Time as the API shows it: UTC, millisecond precision."""

from __future__ import annotations

from datetime import UTC, datetime


def now_ms() -> datetime:
    """The current UTC time, naive, truncated to whole milliseconds."""
    now = datetime.now(UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond - now.microsecond % 1000)


def iso_ms(moment: datetime | None) -> str | None:
    """``YYYY-MM-DDTHH:MM:SS.sssZ`` for a naive UTC time, or None."""
    if moment is None:
        return None
    return moment.isoformat(timespec="milliseconds") + "Z"
