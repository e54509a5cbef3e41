"""Push devices as stored: one row per token, owned by whoever registered it last.

A token is looked up by its SHA-256 (``token_sha256`` is unique; a token may be 4 KiB,
too long for an index entry). Registering a known token moves it to the caller, so a
phone that changed hands stops receiving the previous customer's pushes. A customer
keeps at most ``MAX_DEVICES_PER_CUSTOMER``: the registration that makes one more drops
the one registered longest ago, in its own transaction. On PostgreSQL a registration
first takes a transaction lock named after the customer, so that registrations of one
customer at once (even of their first devices) cannot each keep one too many; SQLite runs
one write transaction at a time.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, cast

from sqlalchemy import Table, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from support_requests.domain.clock import iso_ms, now_ms
from support_requests.domain.errors import NotFound
from support_requests.domain.principal import Principal
from support_requests.storage.database import Database, DbConnection
from support_requests.storage.models import Device

MAX_DEVICES_PER_CUSTOMER: Final = 20

devices_table = cast(Table, Device.__table__)
_d = devices_table.c

_BY_TOKEN = select(_d.id).where(_d.token_sha256 == bindparam("token_sha256")).with_for_update()
_LOCK_CUSTOMER = select(
    func.pg_advisory_xact_lock(func.hashtextextended(bindparam("customer_id"), 0))
)
_INSERT = insert(devices_table)
_MOVE = (
    update(devices_table)
    .where(_d.id == bindparam("device_id"))
    .values(
        customer_id=bindparam("customer_id"),
        platform=bindparam("platform"),
        app_id=bindparam("app_id"),
        registered_at=bindparam("registered_at"),
    )
)
_NEWEST_FIRST = (_d.registered_at.desc(), _d.id.desc())
_OF_CUSTOMER = select(*devices_table.c).where(_d.customer_id == bindparam("customer_id"))
_LIST = _OF_CUSTOMER.order_by(*_NEWEST_FIRST)
_BY_ID = select(*devices_table.c).where(_d.id == bindparam("device_id"))
_DELETE_OWN = delete(devices_table).where(
    _d.id == bindparam("device_id"), _d.customer_id == bindparam("customer_id")
)
_DELETE = delete(devices_table).where(_d.id == bindparam("device_id"))


def token_digest(token: str) -> str:
    """What a token is looked up by."""
    return hashlib.sha256(token.encode()).hexdigest()


def shown(device: Any) -> dict[str, Any]:
    """A device as its customer sees it (the API, and their data export)."""
    return {
        "id": device.id,
        "platform": device.platform,
        "token": device.token,
        "appId": device.app_id,
        "createdAt": iso_ms(device.created_at),
        "registeredAt": iso_ms(device.registered_at),
    }


def new_device_id() -> str:
    """An opaque device id: ``dev_`` and 128 random bits."""
    return "dev_" + secrets.token_urlsafe(16)


@dataclass(frozen=True)
class Registration:
    """A registered device, and whether the token was new to the service."""

    device: Any
    created: bool


class DeviceRegistry:
    """Customers' push devices: register (or move) a token, list, remove."""

    def __init__(self, database: Database, clock: Callable[[], datetime] = now_ms) -> None:
        self.database = database
        self.clock = clock

    async def register(
        self, customer: Principal, *, platform: str, token: str, app_id: str | None
    ) -> Registration:
        """Register ``token`` for ``customer``: new (``created``), or moved to them from
        whoever had it, with its platform and app updated; past the cap, the customer's
        device registered longest ago is dropped."""
        now = self.clock()
        digest = token_digest(token)
        values = {
            "customer_id": customer.sub,
            "platform": platform,
            "app_id": app_id,
            "registered_at": now,
        }
        async with self.database.writing() as connection:
            if not self.database.is_sqlite:
                await connection.execute(_LOCK_CUSTOMER, {"customer_id": customer.sub})
            device_id = await connection.scalar(_BY_TOKEN, {"token_sha256": digest})
            created = device_id is None
            if device_id is None:
                device_id = new_device_id()
                try:
                    async with connection.begin_nested():
                        await connection.execute(
                            _INSERT,
                            {
                                **values,
                                "id": device_id,
                                "token": token,
                                "token_sha256": digest,
                                "created_at": now,
                            },
                        )
                except IntegrityError:  # registered at this moment by another request
                    created = False
                    device_id = await connection.scalar(_BY_TOKEN, {"token_sha256": digest})
            if not created:
                await connection.execute(_MOVE, {**values, "device_id": device_id})
            await self._keep_newest(connection, customer)
            device = (await connection.execute(_BY_ID, {"device_id": device_id})).first()
        return Registration(device, created)

    async def _keep_newest(self, connection: DbConnection, customer: Principal) -> None:
        rows = (await connection.execute(_LIST, {"customer_id": customer.sub})).all()
        dropped = rows[MAX_DEVICES_PER_CUSTOMER:]
        if dropped:
            await connection.execute(_DELETE, [{"device_id": row.id} for row in dropped])

    async def list_for(self, customer: Principal) -> list[Any]:
        """The customer's devices, the most recently registered first."""
        async with self.database.reading() as connection:
            return (await connection.execute(_LIST, {"customer_id": customer.sub})).all()

    async def remove(self, customer: Principal, device_id: str) -> None:
        """Remove one of the customer's devices; anyone else's, or none, is ``NotFound``."""
        async with self.database.autocommit() as connection:
            removed = await connection.execute(
                _DELETE_OWN, {"device_id": device_id, "customer_id": customer.sub}
            )
        if removed.rowcount != 1:
            raise NotFound(f"Device {device_id} was not found.")
