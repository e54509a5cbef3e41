"""Read state in storage: the statements behind a customer's read marker and badge.

A request's marker and unread count live on its row (``support_requests``), written in the
transaction that locks the row; the badge is ``customer_inboxes``, one row per customer,
moved by deltas in the same transaction (an upsert, so the first unread message makes the
row). Reading the badge is one primary-key probe, whatever the number of requests.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, case, func, select
from sqlalchemy.dialects import postgresql, sqlite

from support_requests.domain.read_state import BadgeDelta
from support_requests.storage.database import DbConnection
from support_requests.storage.models import CustomerInbox, Message

inboxes_table = cast(Table, CustomerInbox.__table__)
_messages = cast(Table, Message.__table__)

# The customer's thread (public messages) as a marker sees it: its latest message, whether
# message ``after`` is one of it, and the staff messages after ``after``. By ix_messages_request.
THREAD_AFTER = select(
    func.max(_messages.c.id).label("latest"),
    func.count(case((_messages.c.id == bindparam("after"), 1))).label("found"),
    func.count(
        case((and_(_messages.c.author_type == "admin", _messages.c.id > bindparam("after")), 1))
    ).label("unread"),
).where(
    _messages.c.request_id == bindparam("request_id"),
    _messages.c.internal.is_(False),
)

BADGE = select(inboxes_table.c.unread_count, inboxes_table.c.requests_with_unread).where(
    inboxes_table.c.customer_id == bindparam("customer_id")
)


def _badge_upsert(dialect: Any) -> Any:
    statement = dialect.insert(inboxes_table)
    return statement.on_conflict_do_update(
        index_elements=[inboxes_table.c.customer_id],
        set_={
            "unread_count": inboxes_table.c.unread_count + statement.excluded.unread_count,
            "requests_with_unread": inboxes_table.c.requests_with_unread
            + statement.excluded.requests_with_unread,
        },
    )


# By engine (is_sqlite): both dialects upsert with ON CONFLICT DO UPDATE.
_ADD_TO_BADGE = {True: _badge_upsert(sqlite), False: _badge_upsert(postgresql)}


_BADGE_VALUES = ("customer_id", "unread_count", "requests_with_unread")


def badge_parameters(customer_id: str, delta: BadgeDelta, prefix: str = "") -> dict[str, Any]:
    """The badge upsert's values (``_BADGE_VALUES``): ``delta`` added to the customer's
    badge."""
    values = (customer_id, delta.unread_count, delta.requests_with_unread)
    return {f"{prefix}{name}": value for name, value in zip(_BADGE_VALUES, values, strict=True)}


def badge_cte() -> Any:
    """PostgreSQL: the badge upsert as a CTE of a larger write, its values named
    ``badge_*`` (``badge_parameters(..., prefix="badge_")``)."""
    return (
        _badge_upsert(postgresql)
        .values({name: bindparam(f"badge_{name}") for name in _BADGE_VALUES})
        .cte("badge")
    )


async def add_to_badge(
    connection: DbConnection, *, is_sqlite: bool, customer_id: str, delta: BadgeDelta
) -> None:
    """Add ``delta`` to the customer's badge, in the caller's transaction; nothing when it
    changes nothing."""
    if not delta:
        return
    await connection.execute(_ADD_TO_BADGE[is_sqlite], badge_parameters(customer_id, delta))
