"""The workers' statements on the outbox: claim due deliveries, record how each went.

A worker *claims* deliveries by setting ``claimed_until`` (its lease) on them; while the
lease lives no other worker takes them. On PostgreSQL the claim is one statement whose
inner ``SELECT … FOR UPDATE SKIP LOCKED`` lets any number of workers claim at once without
waiting on each other or taking the same row; on SQLite (one writer at a time) a few
in-process statements in a write transaction do the same without row locks. Each endpoint
gives at most as many deliveries as it has free slots, its earliest first, and the claim
takes the earliest of those: an endpoint at its limit takes no place from the others,
however long its queue. A delivery is claimable when it is pending and due, its lease (if any) ran
out, its endpoint is enabled, no earlier delivery of the same request to the same
endpoint is still pending (per-request order), and its endpoint has fewer than
``per_endpoint`` deliveries under a live lease (counting the ones this claim takes).

Every completion is fenced by the lease it was claimed with (``claimed_until = :lease``):
a worker whose lease ran out (and whose delivery another worker took meanwhile) changes
nothing. A 410 fails the delivery and disables the endpoint in one transaction.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    ARRAY,
    BigInteger,
    DateTime,
    Integer,
    String,
    and_,
    bindparam,
    column,
    exists,
    func,
    literal_column,
    or_,
    select,
    text,
    true,
    tuple_,
    update,
)
from sqlalchemy.types import TypeEngine

from support_requests.storage.database import Database, DbConnection
from support_requests.storage.outbox import (
    FAILED,
    PENDING,
    SUCCEEDED,
    deliveries_table,
    endpoints_table,
    events_table,
)

DISABLED_GONE = "gone"
MAX_ERROR_LENGTH = 500

_d = deliveries_table
_e = events_table
_ep = endpoints_table
_earlier = _d.alias("earlier")
_leased = _d.alias("leased")
# ``status = 'pending'`` written into the SQL, not bound: the claim runs on a plan made once
# for any values of its parameters (a generic plan, see ``WORKER_SESSION``), and such a plan
# can use the partial indexes (``WHERE status = 'pending'``) only if the statement itself
# proves their predicate; compared with a parameter, it walked the whole table instead.
_PENDING = literal_column(f"'{PENDING}'", String())


def _pending(table: Any) -> Any:
    return table.c.status == _PENDING


def _claimable_due(endpoint_id: Any) -> Any:
    """Of endpoint ``endpoint_id``: pending, due, lease gone, nothing earlier of its request
    waiting."""
    return and_(
        _d.c.endpoint_id == endpoint_id,
        _pending(_d),
        # Due, written as a bound of ix_webhook_deliveries_endpoint_due's (endpoint_id,
        # next_attempt_at): a condition that index alone can take, so that no plan made
        # before the table has statistics walks ix_webhook_deliveries_due instead and
        # filters the other endpoints' deliveries out of it.
        tuple_(_d.c.endpoint_id, _d.c.next_attempt_at)
        <= tuple_(endpoint_id, bindparam("now", type_=DateTime())),
        or_(_d.c.claimed_until.is_(None), _d.c.claimed_until < bindparam("now")),
        ~_waits_for_an_earlier_one(),
    )


def _waits_for_an_earlier_one() -> Any:
    # The first pending delivery of its request to its endpoint, as a scalar subquery: one
    # index probe per row (``ix_webhook_deliveries_order``) whatever the planner estimates;
    # an anti-join planned on a fresh table's statistics walked the whole index per row.
    first_of_its_request = (
        select(func.min(_earlier.c.id))
        .where(
            _earlier.c.endpoint_id == _d.c.endpoint_id,
            _earlier.c.order_key == _d.c.order_key,
            _pending(_earlier),
        )
        .correlate(_d)
        .scalar_subquery()
    )
    return and_(_d.c.order_key.is_not(None), first_of_its_request != _d.c.id)


# Each endpoint's deliveries under a live lease, counted once per claim.
_LIVE = (
    select(_leased.c.endpoint_id, func.count().label("leases"))
    .where(
        _pending(_leased),
        _leased.c.claimed_until.is_not(None),  # ix_webhook_deliveries_leased
        _leased.c.claimed_until >= bindparam("now"),
    )
    .group_by(_leased.c.endpoint_id)
    .cte("live")
    # Once per claim, not once per endpoint (a nested loop on a fresh table's statistics).
    .prefix_with("MATERIALIZED")
)
_claiming = _ep.alias("claiming")
# How many more deliveries each enabled endpoint may have in flight, over all workers.
_FREE = bindparam("per_endpoint", type_=Integer()) - func.coalesce(_LIVE.c.leases, 0)
_ENDPOINTS_WITH_SLOTS = (
    select(_claiming.c.id, _FREE.label("free"))
    .select_from(_claiming.outerjoin(_LIVE, _LIVE.c.endpoint_id == _claiming.c.id))
    .where(_claiming.c.enabled, _FREE > 0)
)


def _due_of_endpoint(endpoint_id: Any, free: Any) -> Any:
    """An endpoint's claimable deliveries, the earliest first, at most ``free`` of them: a
    walk of ``ix_webhook_deliveries_endpoint_due`` that stops there. Per endpoint, so an
    endpoint at its limit, however deep its queue, takes no place from the others."""
    return (
        select(_d.c.id, _d.c.next_attempt_at)
        .where(_claimable_due(endpoint_id))
        # The index's own order (the endpoint is one): no plan walks ix_webhook_deliveries_due
        # instead, filtering out the other endpoints' deliveries.
        .order_by(_d.c.endpoint_id, _d.c.next_attempt_at, _d.c.id)
        .limit(free)
    )


def _claim_pg() -> Any:
    """PostgreSQL: one statement. Each enabled endpoint with free slots gives its earliest
    claimable deliveries (a ``LATERAL`` walk each), the earliest ``limit`` of them all are
    taken: read, not locked, then only those locked (skipping rows another worker holds)
    with the lease checked again on the row as it is now, since one that another worker
    claimed and committed after this statement's snapshot fails the check and is left to
    it. (Locking every row looked at, to take a few, wrote a row lock on each.)"""
    slots = _ENDPOINTS_WITH_SLOTS.subquery("slots")
    due = _due_of_endpoint(slots.c.id, slots.c.free).lateral("due")
    chosen = (
        select(due.c.id)
        .select_from(slots.join(due, true()))
        .order_by(due.c.next_attempt_at, due.c.id)
        .limit(bindparam("limit", type_=Integer()))
    )
    locked = (
        select(_d.c.id)
        .where(
            _d.c.id.in_(chosen),
            _pending(_d),
            or_(_d.c.claimed_until.is_(None), _d.c.claimed_until < bindparam("now")),
        )
        .with_for_update(skip_locked=True)
    )
    return update(_d).values(claimed_until=bindparam("lease_until")).where(_d.c.id.in_(locked))


_CLAIMED_COLUMNS = (
    _d.c.id,
    _d.c.attempts,
    _d.c.claimed_until,
    _d.c.endpoint_id,
    _e.c.public_id,
    _e.c.type,
    _e.c.body,
    _e.c.created_at,
    _ep.c.url,
    _ep.c.secret,
)
# PostgreSQL: one statement claims and returns what the sender needs.
_CLAIM_PG = (
    _claim_pg()
    .where(_e.c.id == _d.c.event_id, _ep.c.id == _d.c.endpoint_id)
    .returning(*_CLAIMED_COLUMNS)
)
# SQLite (one writer, in-process statements): the endpoints with free slots, then each
# one's earliest claimable deliveries, the earliest ``limit`` of them leased one by one,
# and what they need read, in one write transaction.
_DUE_OF_ENDPOINT_SQLITE = _due_of_endpoint(
    bindparam("endpoint_id"), bindparam("free", type_=Integer())
)
_LEASE_SQLITE = (
    update(_d)
    .where(_d.c.id == bindparam("delivery_id"))
    .values(claimed_until=bindparam("lease_until"))
)
_CLAIMED_SQLITE = (
    select(*_CLAIMED_COLUMNS)
    .join(_e, _e.c.id == _d.c.event_id)
    .join(_ep, _ep.c.id == _d.c.endpoint_id)
    .where(_d.c.id == bindparam("delivery_id"))
)

_fenced = and_(
    _d.c.id == bindparam("delivery_id"),
    _d.c.claimed_until == bindparam("lease", type_=DateTime()),
)


def _succeeded(source: Any) -> Any:
    """Mark delivered the deliveries ``source`` names (``_SUCCESS_VALUES`` by name), each
    fenced by its lease."""
    return (
        update(_d)
        .where(_d.c.id == source["delivery_id"], _d.c.claimed_until == source["lease"])
        .values(
            status=SUCCEEDED,
            attempts=_d.c.attempts + 1,
            last_attempt_at=source["attempted_at"],
            last_response_status=source["response_status"],
            last_error=None,
            completed_at=source["attempted_at"],
            claimed_until=None,
        )
    )


# A success's values, as the driver sees them: ``unnest``'s columns, or bound values.
_SUCCESS_VALUES: dict[str, TypeEngine[Any]] = {
    "delivery_id": BigInteger(),
    "lease": DateTime(),
    "attempted_at": DateTime(),
    "response_status": Integer(),
}

# SQLite: one statement per delivery, run many in one transaction.
_SUCCEEDED = _succeeded({name: bindparam(name, type_=t) for name, t in _SUCCESS_VALUES.items()})
# PostgreSQL: one statement for the whole batch, its values as arrays (``unnest``), atomic
# by itself, so no BEGIN and COMMIT around it: a batch is one round trip.
_SUCCEEDED_ALL = _succeeded(
    func.unnest(*(bindparam(f"{name}s", type_=ARRAY(t)) for name, t in _SUCCESS_VALUES.items()))
    .table_valued(*(column(name, t) for name, t in _SUCCESS_VALUES.items()))
    .render_derived("done")
    .c
)

_RETRY = (
    update(_d)
    .where(_fenced)
    .values(
        attempts=_d.c.attempts + 1,
        last_attempt_at=bindparam("attempted_at"),
        last_response_status=bindparam("response_status"),
        last_error=bindparam("error"),
        next_attempt_at=bindparam("next_attempt_at"),
        claimed_until=None,
    )
)
_FAILED = (
    update(_d)
    .where(_fenced)
    .values(
        status=FAILED,
        attempts=_d.c.attempts + 1,
        last_attempt_at=bindparam("attempted_at"),
        last_response_status=bindparam("response_status"),
        last_error=bindparam("error"),
        completed_at=bindparam("attempted_at"),
        claimed_until=None,
    )
)
_DISABLE_ENDPOINT = (
    update(_ep)
    .where(_ep.c.id == bindparam("endpoint"), _ep.c.enabled)
    .values(enabled=False, disabled_reason=DISABLED_GONE, updated_at=bindparam("at"))
)
_RELEASE = update(_d).where(_fenced).values(claimed_until=None)
# After a claim that took fewer than it could: is anything due and unclaimed that this
# claim could not take because deliveries are in flight (its endpoint's slots taken, or an
# earlier one of its request under a lease), and when does the next retry fall due?
# Only an endpoint with a live lease can hold such a delivery: one with none holds back
# only what waits behind an earlier delivery's retry, which ``next_retry`` covers (counted
# as waiting, a worker looked again every 50 ms for as long as that retry waited, hours
# for an endpoint that is down). The endpoints under a lease (ix_webhook_deliveries_leased),
# each probed for a due unleased delivery (ix_webhook_deliveries_endpoint_due); the next
# retry one walk of ``ix_webhook_deliveries_due`` that stops at its first row.
_under_lease = _ep.alias("under_lease")
_NEXT_DUE = select(
    exists(
        # The endpoints with a live lease (``_LIVE``, read once), each probed for a due
        # delivery without one: a scalar subquery that stops at its first row (as an
        # EXISTS, a plan merged the endpoints with a walk of every endpoint's due rows).
        select(_LIVE.c.endpoint_id)
        .join(_under_lease, _under_lease.c.id == _LIVE.c.endpoint_id)
        .where(
            _under_lease.c.enabled,
            select(_d.c.id)
            .where(
                _d.c.endpoint_id == _LIVE.c.endpoint_id,
                _pending(_d),
                tuple_(_d.c.endpoint_id, _d.c.next_attempt_at)
                <= tuple_(_LIVE.c.endpoint_id, bindparam("now", type_=DateTime())),
                or_(_d.c.claimed_until.is_(None), _d.c.claimed_until < bindparam("now")),
            )
            .limit(1)
            .scalar_subquery()
            .is_not(None),
        )
    ).label("waiting"),
    select(_d.c.next_attempt_at)
    .where(_pending(_d), _d.c.next_attempt_at > bindparam("now"))
    .order_by(_d.c.next_attempt_at, _d.c.id)
    .limit(1)
    .scalar_subquery()
    .label("next_retry"),
)


class NextDue(NamedTuple):
    """What a worker that claimed fewer than it could waits for: ``waiting``, deliveries
    due but held back by deliveries in flight (their endpoint's, or an earlier one of
    their request); ``next_retry``, when the next retry falls due (None: none)."""

    waiting: bool
    next_retry: datetime | None


# The settings every connection of a worker starts with (``Database(session=...)``; the
# ``supportctl worker`` command opens its database so). Settings of the session, not of
# each claim's transaction: a claim is then one statement with no BEGIN, planner settings
# and COMMIT around it (those round trips and the commit's wait below were a quarter of
# the worker's PostgreSQL CPU per delivery: bench/README.md).
#
# - The claim walks each endpoint's due deliveries in order (ix_webhook_deliveries_endpoint_due)
#   and stops at as many as the endpoint has free slots. Planned on the statistics of a
#   table that grew from a few rows to thousands since autovacuum last looked (a backlog
#   piling up in seconds), PostgreSQL chose instead to read every due row, check each one's
#   request order, and sort: 60-100 ms a claim at 15,000 pending, against 1-3 ms for the
#   walk. So the plans that read the whole table are off (every statement of the worker
#   finds its rows by an index).
# - Planning the claim anew each time cost more than running it (1.3 ms against 0.5-1.1 at
#   15,000 pending: the planner reads the index's ends to estimate ``next_attempt_at <=
#   :now``), so the worker asks for generic plans: once psycopg has prepared a statement on
#   a connection (after a few runs), PostgreSQL plans it once there, for any values, and
#   reuses that plan (0.02 ms); with the scans above off and ``_PENDING`` in the SQL, that
#   plan is the same index walk.
# - The worker's commits do not wait for the WAL to reach the disk. A crash of PostgreSQL
#   can lose the last fraction of a second of its records (``wal_writer_delay`` x 3 at
#   most): a delivery whose success or lease is lost is sent again, with the same
#   ``webhook-id``, which at-least-once delivery allows and receivers deduplicate by. The
#   API's own transactions (the events themselves) keep waiting for the disk.
# - ``application_name``: the worker's connections are told apart in ``pg_stat_activity``.
WORKER_SESSION = {
    "enable_seqscan": "off",
    "enable_bitmapscan": "off",
    "plan_cache_mode": "force_generic_plan",
    "synchronous_commit": "off",
    "application_name": "support-requests-worker",
}


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery this worker holds until ``lease``: what to send, where, signed with what."""

    id: int
    attempts: int
    lease: datetime
    endpoint_id: str
    webhook_id: str
    type: str
    body: str
    created_at: datetime
    url: str
    stored_secret: str


class Claim(NamedTuple):
    """What a claim took (by id), and ``next_due`` when it took fewer than it could
    (None: every slot it was asked to fill is taken)."""

    deliveries: list[ClaimedDelivery]
    next_due: NextDue | None


def _claimed(row: Any) -> ClaimedDelivery:
    return ClaimedDelivery(
        id=row.id,
        attempts=row.attempts,
        lease=row.claimed_until,
        endpoint_id=row.endpoint_id,
        webhook_id=row.public_id,
        type=row.type,
        body=row.body,
        created_at=row.created_at,
        url=row.url,
        stored_secret=row.secret,
    )


def _error(text: str | None) -> str | None:
    return None if text is None else text[:MAX_ERROR_LENGTH]


# PostgreSQL: whether the outbox changed by more rows since its last ANALYZE than its
# statistics say it holds (or by over 1,000, never analyzed). A worker's claim runs on a
# generic plan made on those statistics and kept until the next ANALYZE; made on an empty or
# small outbox, it walks every pending delivery once the outbox has grown (25-32 ms a claim
# at 8,000 pending, against 0.14 ms on current statistics: bench/README.md). Autovacuum
# analyzes after a tenth of the table changed, but looks only once a minute.
_OUTBOX_STATISTICS_STALE = text(
    "SELECT s.n_mod_since_analyze > greatest(1000, c.reltuples)"
    " FROM pg_stat_user_tables AS s JOIN pg_class AS c ON c.oid = s.relid"
    " WHERE s.relid = 'webhook_deliveries'::regclass"
)
_ANALYZE_OUTBOX = text("ANALYZE webhook_deliveries")
# A worker looks at most this often, and only after a claim that took all it asked for.
STATISTICS_CHECK_SECONDS = 5.0


class DeliveryStore:
    """The outbox as the workers see it."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._statistics_checked = -STATISTICS_CHECK_SECONDS

    async def claim(
        self, now: datetime, lease_until: datetime, *, limit: int, per_endpoint: int
    ) -> Claim:
        """Take up to ``limit`` due deliveries until ``lease_until``, the earliest first;
        when it took fewer, what is held back and when the next retry falls due, read on
        the same connection (on PostgreSQL one statement each, the claim atomic by itself;
        on SQLite in the claim's write transaction)."""
        parameters = {
            "now": now,
            "lease_until": lease_until,
            "limit": limit,
            "per_endpoint": per_endpoint,
        }
        async with self._database.autocommit() as connection:
            if self._database.is_sqlite:
                rows = await self._claim_sqlite(connection, parameters)
            else:
                rows = (await connection.execute(_CLAIM_PG, parameters)).all()
            next_due = None
            if len(rows) < limit:
                row = (await connection.execute(_NEXT_DUE, {"now": now})).first()
                next_due = NextDue(bool(row.waiting), row.next_retry)
            elif not self._database.is_sqlite:
                await self._analyze_if_stale(connection)
        return Claim(sorted((_claimed(row) for row in rows), key=lambda d: d.id), next_due)

    async def _analyze_if_stale(self, connection: DbConnection) -> None:
        """PostgreSQL, after a claim that took all it could (a backlog): ANALYZE the outbox
        when its statistics are stale (``_OUTBOX_STATISTICS_STALE``), which makes every
        connection plan the claim again on the new ones. At most once per
        ``STATISTICS_CHECK_SECONDS`` per worker."""
        checked = time.monotonic()
        if checked - self._statistics_checked < STATISTICS_CHECK_SECONDS:
            return
        self._statistics_checked = checked
        if await connection.scalar(_OUTBOX_STATISTICS_STALE):
            await connection.execute(_ANALYZE_OUTBOX)

    @staticmethod
    async def _claim_sqlite(connection: DbConnection, parameters: dict[str, Any]) -> list[Any]:
        due = []
        for endpoint in (await connection.execute(_ENDPOINTS_WITH_SLOTS, parameters)).all():
            each = {**parameters, "endpoint_id": endpoint.id, "free": endpoint.free}
            due += (await connection.execute(_DUE_OF_ENDPOINT_SQLITE, each)).all()
        chosen = sorted(due, key=lambda row: (row.next_attempt_at, row.id))[: parameters["limit"]]
        rows = []
        for row in chosen:
            lease = {"delivery_id": row.id, "lease_until": parameters["lease_until"]}
            await connection.execute(_LEASE_SQLITE, lease)
            rows.append((await connection.execute(_CLAIMED_SQLITE, lease)).first())
        return rows

    async def succeed_all(self, successes: Sequence[tuple[ClaimedDelivery, datetime, int]]) -> int:
        """Mark deliveries (each with when it was sent and the answer's status) delivered in
        one transaction: workers record their successes together, a commit per delivery
        would cap the rate. How many were still this worker's (a lease that ran out, and
        was taken by another worker, is left alone)."""
        if not successes:
            return 0
        rows = [
            {
                "delivery_id": delivery.id,
                "lease": delivery.lease,
                "attempted_at": at,
                "response_status": status,
            }
            for delivery, at, status in successes
        ]
        if not self._database.is_sqlite:
            # The same values as arrays, one per name (``_SUCCEEDED_ALL``'s ``unnest``).
            arrays = {f"{name}s": [row[name] for row in rows] for name in _SUCCESS_VALUES}
            async with self._database.autocommit() as connection:
                changed = await connection.execute(_SUCCEEDED_ALL, arrays)
        else:
            async with self._database.writing() as connection:
                changed = await connection.execute(_SUCCEEDED, rows)
        return int(changed.rowcount)

    async def retry(
        self,
        delivery: ClaimedDelivery,
        at: datetime,
        next_attempt_at: datetime,
        *,
        response_status: int | None,
        error: str | None,
    ) -> bool:
        """Record a failed attempt and when to try again."""
        return await self._fenced(
            _RETRY,
            delivery,
            attempted_at=at,
            next_attempt_at=next_attempt_at,
            response_status=response_status,
            error=_error(error),
        )

    async def fail(
        self,
        delivery: ClaimedDelivery,
        at: datetime,
        *,
        response_status: int | None,
        error: str | None,
    ) -> bool:
        """Record the last attempt and give up on it (``failed``)."""
        return await self._fenced(
            _FAILED, delivery, attempted_at=at, response_status=response_status, error=_error(error)
        )

    async def gone(self, delivery: ClaimedDelivery, at: datetime, response_status: int) -> bool:
        """The receiver answered 410: the delivery fails and its endpoint is disabled
        (``disabled_reason`` ``gone``), in one transaction."""
        async with self._database.writing() as connection:
            changed = await connection.execute(
                _FAILED,
                {
                    "delivery_id": delivery.id,
                    "lease": delivery.lease,
                    "attempted_at": at,
                    "response_status": response_status,
                    "error": "the endpoint answered 410 Gone: it is disabled",
                },
            )
            if changed.rowcount != 1:
                return False
            await connection.execute(
                _DISABLE_ENDPOINT, {"endpoint": delivery.endpoint_id, "at": at}
            )
        return True

    async def release(self, deliveries: Sequence[ClaimedDelivery]) -> None:
        """Give deliveries back unattempted (a worker shutting down): due again at once."""
        if not deliveries:
            return
        async with self._database.writing() as connection:
            await connection.execute(
                _RELEASE,
                [{"delivery_id": delivery.id, "lease": delivery.lease} for delivery in deliveries],
            )

    async def _fenced(self, statement: Any, delivery: ClaimedDelivery, **values: Any) -> bool:
        async with self._database.autocommit() as connection:
            changed = await connection.execute(
                statement, {"delivery_id": delivery.id, "lease": delivery.lease, **values}
            )
        return bool(changed.rowcount == 1)
