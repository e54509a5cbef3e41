"""Attachments as stored: the bytes, who may see them, attaching, removal and expiry.

The bytes of a file are kept in ``attachment_chunks`` (256 KiB each, so every server
process and every backup has them, and a range is read a few chunks at a time), or, when
the service is given a directory (``SUPPORT_ATTACHMENT_DIR``), in a file there named after
the attachment's random id, never after the client's file name.

An upload is unattached (``expires_at`` set) until ``attach_uploads`` gives it to a
message in that message's own transaction. Who sees what: a customer sees the attachments
of their own requests (not those of staff's internal notes) and their own unattached
uploads; an admin sees every attached one
and only their own unattached uploads; anything else is ``NotFound``, worded as for an id
that does not exist.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Final, cast

from sqlalchemy import (
    Select,
    Table,
    bindparam,
    delete,
    false,
    func,
    insert,
    or_,
    select,
    update,
)

from support_requests.domain.attachments import (
    MAX_ATTACHMENTS_PER_MESSAGE,
    UNATTACHED_TTL,
    clean_file_name,
)
from support_requests.domain.clock import now_ms
from support_requests.domain.errors import FieldProblem, NotFound, RuleViolation
from support_requests.domain.lifecycle import Actor
from support_requests.domain.principal import Principal
from support_requests.domain.webhooks import ATTACHMENT_REMOVED as REMOVED_EVENT
from support_requests.storage.database import Database, DbConnection
from support_requests.storage.models import (
    Attachment,
    AttachmentChunk,
    Message,
    RequestEvent,
    SupportRequest,
)
from support_requests.storage.outbox import enqueue, read_subscribers
from support_requests.webhooks import events as webhook_events

if TYPE_CHECKING:  # Pillow is imported where uploads are inspected, not by every desk read
    from support_requests.storage.attachment_content import Inspected

CHUNK_SIZE: Final = 256 * 1024
# Chunks fetched per statement when reading: a range never holds more than this in memory.
CHUNKS_PER_READ: Final = 2
ATTACHMENT_REMOVED: Final = "attachment_removed"

attachments_table = cast(Table, Attachment.__table__)
chunks_table = cast(Table, AttachmentChunk.__table__)
_requests = cast(Table, SupportRequest.__table__)
_events = cast(Table, RequestEvent.__table__)
_messages = cast(Table, Message.__table__)
_a = attachments_table.c
_c = chunks_table.c

# Every column but the thumbnail's bytes, the request's customer, whether its message is an
# internal note, and the thumbnail's size.
_COLUMNS = (
    *(column for column in attachments_table.c if column.name != "thumbnail"),
    _requests.c.customer_id,
    func.coalesce(_messages.c.internal, false()).label("internal"),
    func.length(_a.thumbnail).label("thumbnail_size"),
)
_BY_ID = (
    select(*_COLUMNS)
    .select_from(
        attachments_table.outerjoin(_requests, _requests.c.id == _a.request_id).outerjoin(
            _messages, _messages.c.id == _a.message_id
        )
    )
    .where(_a.id == bindparam("attachment_id"))
)
_LOCK_BY_ID = (
    select(*(column for column in attachments_table.c if column.name != "thumbnail"))
    .where(_a.id == bindparam("attachment_id"))
    .with_for_update()
)
_INSERT = insert(attachments_table)
_INSERT_CHUNK = insert(chunks_table)
_CHUNKS = (
    select(_c.seq, _c.data)
    .where(
        _c.attachment_id == bindparam("attachment_id"),
        _c.seq >= bindparam("first_seq"),
        _c.seq <= bindparam("last_seq"),
    )
    .order_by(_c.seq)
    # 256 KiB of bytea a row: in binary, not as 512 KiB of hex for both ends to convert.
    .execution_options(binary_results=True)
)
_THUMBNAIL = select(_a.thumbnail).where(_a.id == bindparam("attachment_id"))
_DELETE_CHUNKS = delete(chunks_table).where(_c.attachment_id == bindparam("attachment_id"))
_DELETE_UNATTACHED = delete(attachments_table).where(
    _a.id == bindparam("attachment_id"), _a.request_id.is_(None)
)
_MARK_REMOVED = (
    update(attachments_table)
    .where(_a.id == bindparam("attachment_id"))
    .values(
        thumbnail=None,
        thumbnail_content_type=None,
        storage_path=None,
        removed_at=bindparam("removed_at"),
        removed_by=bindparam("removed_by"),
    )
)
_BUMP_REQUEST = (
    update(_requests)
    .where(_requests.c.id == bindparam("changed_id"))
    .values(
        version=_requests.c.version + 1,
        customer_version=_requests.c.customer_version + 1,
        updated_at=bindparam("changed_at"),
    )
)
# An internal note's file: staff alone see it, so only their version moves.
_BUMP_REQUEST_FOR_STAFF = (
    update(_requests)
    .where(_requests.c.id == bindparam("changed_id"))
    .values(version=_requests.c.version + 1)
)
_INSERT_EVENT = insert(_events)
_COUNT_ATTACHED = (
    update(_requests)
    .where(_requests.c.id == bindparam("changed_id"))
    .values(attachment_count=_requests.c.attachment_count + bindparam("attached"))
)
_EXPIRED = (
    delete(attachments_table)
    .where(_a.request_id.is_(None), _a.expires_at <= bindparam("now"))
    .returning(_a.storage_path)
)
_ATTACH = (
    update(attachments_table)
    .where(_a.id == bindparam("attachment_id"), _a.request_id.is_(None))
    .values(
        request_id=bindparam("request_id"),
        message_id=bindparam("message_id"),
        position=bindparam("position"),
        expires_at=None,
    )
)


@dataclass(frozen=True)
class StoredAttachment:
    """An attachment as stored, without its bytes.

    ``customer_id`` is the customer who owns the request it is attached to (None while
    unattached); ``internal`` is true on a staff's internal note (the customer never sees
    it); ``removed`` is true once staff removed its bytes.
    """

    id: str
    owner_id: str
    owner_role: str
    request_id: int | None
    message_id: int | None
    customer_id: str | None
    file_name: str
    content_type: str
    size: int
    width: int | None
    height: int | None
    sha256: str
    has_thumbnail: bool
    thumbnail_content_type: str | None
    thumbnail_size: int | None
    created_at: datetime
    expires_at: datetime | None
    removed: bool
    storage_path: str | None = None
    internal: bool = False

    @classmethod
    def of(cls, row: Any) -> StoredAttachment:
        """From a row shaped as ``_BY_ID``'s."""
        return cls(
            id=row.id,
            owner_id=row.owner_id,
            owner_role=row.owner_role,
            request_id=row.request_id,
            message_id=row.message_id,
            customer_id=row.customer_id,
            file_name=row.file_name,
            content_type=row.content_type,
            size=row.size,
            width=row.width,
            height=row.height,
            sha256=row.sha256,
            has_thumbnail=row.thumbnail_content_type is not None,
            thumbnail_content_type=row.thumbnail_content_type,
            thumbnail_size=row.thumbnail_size,
            created_at=row.created_at,
            expires_at=row.expires_at,
            removed=row.removed_at is not None,
            storage_path=row.storage_path,
            internal=bool(row.internal),
        )


@dataclass(frozen=True)
class AttachmentSummary:
    """An attachment as a message lists it."""

    id: str
    file_name: str
    content_type: str
    size: int
    width: int | None
    height: int | None
    has_thumbnail: bool
    removed: bool


# What a detail read selects of each message's attachments, in this order.
SUMMARY_COLUMNS: Final = (
    _a.id,
    _a.file_name,
    _a.content_type,
    _a.size,
    _a.width,
    _a.height,
    _a.thumbnail_content_type,
    _a.removed_at,
)


def summary_of(values: Sequence[Any]) -> AttachmentSummary:
    """An ``AttachmentSummary`` from the values of ``SUMMARY_COLUMNS``, in order."""
    id_, file_name, content_type, size, width, height, thumbnail_type, removed_at = values
    return AttachmentSummary(
        id=id_,
        file_name=file_name,
        content_type=content_type,
        size=size,
        width=width,
        height=height,
        has_thumbnail=thumbnail_type is not None,
        removed=removed_at is not None,
    )


def new_attachment_id() -> str:
    """22 characters of base64url from 128 random bits, never starting with '-'.

    An id that starts with '-' reads as an option on a command line (`supportctl
    attachments get -c…`), so such a draw is replaced (1 in 64; about 0.02 bits lost).
    """
    while (attachment_id := secrets.token_urlsafe(16)).startswith("-"):
        pass
    return attachment_id


def _not_found(attachment_id: str) -> NotFound:
    return NotFound(f"Attachment {attachment_id} was not found.")


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while piece := source.read(CHUNK_SIZE):
            digest.update(piece)
    return digest.hexdigest()


class AttachmentStore:
    """Saving, finding, reading, removing and expiring attachments.

    ``directory`` (``SUPPORT_ATTACHMENT_DIR``) keeps the bytes as files there; without it
    they are chunks in the database.
    """

    def __init__(self, database: Database, directory: Path | None = None) -> None:
        self.database = database
        self.directory = directory

    async def save(
        self,
        uploader: Principal,
        file_name: str,
        inspected: Inspected,
        *,
        now: datetime | None = None,
    ) -> StoredAttachment:
        """Store a cleaned upload as the uploader's, unattached until ``now`` +
        ``UNATTACHED_TTL``.

        The cleaned file is read 256 KiB at a time; in directory mode it is moved there
        instead (the caller's ``inspected.path`` is gone either way once this returns).
        """
        at = now or now_ms()
        file_name = clean_file_name(file_name)
        attachment_id = new_attachment_id()
        sha256 = await asyncio.to_thread(_sha256_of, inspected.path)
        row = {
            "id": attachment_id,
            "owner_id": uploader.sub,
            "owner_role": uploader.role.value,
            "request_id": None,
            "message_id": None,
            "position": None,
            "file_name": file_name,
            "content_type": inspected.content_type,
            "size": inspected.size,
            "width": inspected.width,
            "height": inspected.height,
            "sha256": sha256,
            "thumbnail": inspected.thumbnail,
            "thumbnail_content_type": inspected.thumbnail_content_type,
            "storage_path": None,
            "created_at": at,
            "expires_at": at + UNATTACHED_TTL,
            "removed_at": None,
            "removed_by": None,
        }
        if self.directory is not None:
            target = self._file_of(attachment_id)
            await asyncio.to_thread(_move, inspected.path, target)
            row["storage_path"] = target.name
            try:
                async with self.database.writing() as connection:
                    await connection.execute(_INSERT, row)
            except BaseException:
                target.unlink(missing_ok=True)
                raise
        else:
            async with self.database.writing() as connection:
                await connection.execute(_INSERT, row)
                with inspected.path.open("rb") as source:
                    seq = 0
                    while piece := source.read(CHUNK_SIZE):
                        await connection.execute(
                            _INSERT_CHUNK,
                            {"attachment_id": attachment_id, "seq": seq, "data": piece},
                        )
                        seq += 1
            inspected.path.unlink(missing_ok=True)
        thumbnail = inspected.thumbnail
        return StoredAttachment.of(
            SimpleNamespace(
                **row,
                customer_id=None,
                internal=False,
                thumbnail_size=None if thumbnail is None else len(thumbnail),
            )
        )

    async def for_customer(self, customer: Principal, attachment_id: str) -> StoredAttachment:
        """An attachment of one of the customer's requests, or one of their own unattached
        (unexpired) uploads; removed ones too (``removed``). ``NotFound`` otherwise."""
        found = await self._get(attachment_id)
        if found.request_id is not None:
            visible = (
                customer.role is Actor.CUSTOMER
                and found.customer_id == customer.sub
                and not found.internal
            )
        else:
            visible = self._own_upload(customer, found)
        if not visible:
            raise _not_found(attachment_id)
        return found

    async def for_admin(self, admin: Principal, attachment_id: str) -> StoredAttachment:
        """Any attached attachment, or one of the admin's own unattached (unexpired)
        uploads. ``NotFound`` otherwise."""
        found = await self._get(attachment_id)
        if found.request_id is None and not self._own_upload(admin, found):
            raise _not_found(attachment_id)
        return found

    async def read(
        self, attachment: StoredAttachment, first: int, last: int
    ) -> AsyncIterator[bytes]:
        """Bytes ``first`` to ``last`` (inclusive), a chunk at a time.

        From the database, each statement fetches at most ``CHUNKS_PER_READ`` chunks on a
        connection held only for that statement, so a slow client holds no connection. The
        bytes removed while they are being read end the stream with ``NotFound``.
        """
        if not 0 <= first <= last < attachment.size:
            raise ValueError(f"range {first}-{last} is outside 0-{attachment.size - 1}")
        if attachment.removed:
            raise _not_found(attachment.id)
        if attachment.storage_path is not None:
            async for piece in self._read_file(attachment, first, last):
                yield piece
            return
        last_seq = last // CHUNK_SIZE
        seq = first // CHUNK_SIZE
        while seq <= last_seq:
            upto = min(seq + CHUNKS_PER_READ - 1, last_seq)
            async with self.database.reading() as connection:
                result = await connection.execute(
                    _CHUNKS, {"attachment_id": attachment.id, "first_seq": seq, "last_seq": upto}
                )
            # Taken out of the batch one by one, so a chunk sent is not kept while the next
            # batch is fetched: at most a batch and a chunk in memory.
            batch = [(row.seq, row.data) for row in result]
            del result
            if [number for number, _ in batch] != list(range(seq, upto + 1)):
                raise _not_found(attachment.id)
            batch.reverse()
            while batch:
                number, data = batch.pop()
                start = number * CHUNK_SIZE
                low, high = max(first - start, 0), min(last - start + 1, len(data))
                yield data if (low, high) == (0, len(data)) else data[low:high]
                del data
            seq = upto + 1

    async def thumbnail(self, attachment: StoredAttachment) -> bytes:
        """The thumbnail's bytes; ``NotFound`` for a file without one or a removed one."""
        if not attachment.has_thumbnail or attachment.removed:
            raise _not_found(attachment.id)
        async with self.database.reading() as connection:
            data = await connection.scalar(_THUMBNAIL, {"attachment_id": attachment.id})
        if data is None:
            raise _not_found(attachment.id)
        return bytes(data)

    async def remove(self, admin: Principal, attachment_id: str) -> StoredAttachment:
        """Remove an attachment's bytes, as staff do when a customer posted a secret.

        Attached: the bytes and the thumbnail go, the row stays with ``removed_at`` and
        ``removed_by``; the request's version and ``updated_at`` move (only the staff version,
        for a file on an internal note) and its history gets ``attachment_removed`` by the
        admin. Removing it again changes nothing and answers
        the same. Unattached (only the admin's own uploads are found): deleted outright.
        """
        at = now_ms()
        files: list[str] = []
        async with self.database.writing() as connection:
            row = (await connection.execute(_LOCK_BY_ID, {"attachment_id": attachment_id})).first()
            if row is None:
                raise _not_found(attachment_id)
            if row.request_id is None:
                if row.owner_role != admin.role.value or row.owner_id != admin.sub:
                    raise _not_found(attachment_id)
                # Gone with its row: answered as removed, with no urls to follow.
                answer = replace(await self._get(attachment_id, connection), removed=True)
                await connection.execute(_DELETE_UNATTACHED, {"attachment_id": attachment_id})
            elif row.removed_at is None:
                await connection.execute(_DELETE_CHUNKS, {"attachment_id": attachment_id})
                await connection.execute(
                    _MARK_REMOVED,
                    {"attachment_id": attachment_id, "removed_at": at, "removed_by": admin.sub},
                )
                answer = await self._get(attachment_id, connection)
                if answer.internal:
                    await connection.execute(
                        _BUMP_REQUEST_FOR_STAFF, {"changed_id": row.request_id}
                    )
                else:
                    await connection.execute(
                        _BUMP_REQUEST, {"changed_id": row.request_id, "changed_at": at}
                    )
                await connection.execute(
                    _INSERT_EVENT,
                    {
                        "request_id": row.request_id,
                        "type": ATTACHMENT_REMOVED,
                        "actor_type": admin.role.value,
                        "actor_id": admin.sub,
                        "at": at,
                        "changes": {"attachmentId": {"from": attachment_id, "to": None}},
                    },
                )
                if not answer.internal:
                    assert answer.customer_id is not None  # attached: its request's customer
                    await self._publish_removal(connection, admin, row, answer.customer_id, at)
            else:
                answer = await self._get(attachment_id, connection)
            if row.storage_path is not None:
                files.append(row.storage_path)
        await self._delete_files(files)
        return answer

    async def _publish_removal(
        self, connection: DbConnection, admin: Principal, row: Any, customer_id: str, at: datetime
    ) -> None:
        """Put ``support_request.attachment_removed`` in the outbox, in the removal's
        transaction, when an endpoint takes it. A file on an internal note yields none:
        receivers never hear of internal notes."""
        subscribers = await read_subscribers(connection)
        if not subscribers.take(REMOVED_EVENT):
            return
        event = webhook_events.attachment_removed(
            request_id=row.request_id,
            customer_id=customer_id,
            message_id=row.message_id,
            attachment_id=row.id,
            removed_by=admin.sub,
        )
        await enqueue(
            connection,
            [event],
            at,
            subscribers=subscribers,
            postgresql=not self.database.is_sqlite,
        )

    async def delete_expired(self, now: datetime | None = None) -> int:
        """Delete every unattached upload past its ``expires_at``: rows, chunks and files.
        Returns how many went."""
        async with self.database.writing() as connection:
            result = await connection.execute(_EXPIRED, {"now": now or now_ms()})
        paths = [row.storage_path for row in result if row.storage_path is not None]
        await self._delete_files(paths)
        return len(result.all())

    async def delete_files(self, names: list[str]) -> None:
        """Delete stored files (``storage_path`` names) whose rows no longer point to them,
        after the transaction that let go of them committed (customer erasure)."""
        await self._delete_files(names)

    # -- internals -------------------------------------------------------------

    async def _get(
        self, attachment_id: str, connection: DbConnection | None = None
    ) -> StoredAttachment:
        parameters = {"attachment_id": attachment_id}
        if connection is None:
            async with self.database.reading() as reader:
                row = (await reader.execute(_BY_ID, parameters)).first()
        else:
            row = (await connection.execute(_BY_ID, parameters)).first()
        if row is None:
            raise _not_found(attachment_id)
        return StoredAttachment.of(row)

    @staticmethod
    def _own_upload(caller: Principal, found: StoredAttachment) -> bool:
        """Whether an unattached upload is the caller's own and has not expired."""
        return (
            found.owner_role == caller.role.value
            and found.owner_id == caller.sub
            and found.expires_at is not None
            and found.expires_at > now_ms()
        )

    def _file_of(self, attachment_id: str) -> Path:
        assert self.directory is not None
        return self.directory / attachment_id

    async def _read_file(
        self, attachment: StoredAttachment, first: int, last: int
    ) -> AsyncIterator[bytes]:
        assert attachment.storage_path is not None and self.directory is not None
        try:
            source = (self.directory / attachment.storage_path).open("rb")
        except FileNotFoundError:
            raise _not_found(attachment.id) from None
        with source:
            source.seek(first)
            left = last - first + 1
            while left > 0:
                piece = await asyncio.to_thread(source.read, min(CHUNK_SIZE, left))
                if not piece:
                    raise _not_found(attachment.id)
                left -= len(piece)
                yield piece

    async def _delete_files(self, names: list[str]) -> None:
        if self.directory is None or not names:
            return
        directory = self.directory

        def unlink_all() -> None:
            for name in names:
                (directory / name).unlink(missing_ok=True)

        await asyncio.to_thread(unlink_all)


def _move(source: Path, target: Path) -> None:
    """Move a file into the attachment directory (a copy when it is another file system)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(source, target)
    except OSError:
        with source.open("rb") as reading, target.open("xb") as writing:
            while piece := reading.read(CHUNK_SIZE):
                writing.write(piece)
        source.unlink()


@functools.cache
def _uploads_statement(count: int) -> Select[Any]:
    """The rows of ``count`` uploads by id (``id_0`` ...), locked until the transaction ends."""
    return (
        select(_a.id, _a.owner_id, _a.owner_role, _a.request_id, _a.expires_at, _a.removed_at)
        .where(or_(*(_a.id == bindparam(f"id_{index}") for index in range(count))))
        .with_for_update()
    )


async def attach_uploads(
    connection: DbConnection,
    uploader: Principal,
    ids: Sequence[str],
    request_id: int,
    message_id: int,
    now: datetime,
) -> None:
    """Give the uploader's uploads ``ids`` to a message, in the caller's write transaction.

    Each must be the uploader's own (same ``sub`` and role), not attached, not expired and
    not removed, and at most ``MAX_ATTACHMENTS_PER_MESSAGE`` listed once each; otherwise
    ``RuleViolation`` names every bad one as ``attachments[i]`` and nothing is attached
    (the caller's transaction rolls back). The request's ``attachment_count`` grows, so
    its detail reads look for them; the caller's write moves its version.
    """
    if not ids:
        return
    parameters = {f"id_{index}": attachment_id for index, attachment_id in enumerate(ids)}
    result = await connection.execute(_uploads_statement(len(ids)), parameters)
    found = {row.id: row for row in result}
    problems: list[FieldProblem] = []
    seen: set[str] = set()
    for index, attachment_id in enumerate(ids):
        problem = _refusal(uploader, found.get(attachment_id), attachment_id, now)
        if index >= MAX_ATTACHMENTS_PER_MESSAGE:
            problem = f"A message takes at most {MAX_ATTACHMENTS_PER_MESSAGE} attachments."
        elif attachment_id in seen:
            problem = f"Attachment {attachment_id} is listed more than once."
        seen.add(attachment_id)
        if problem is not None:
            problems.append(FieldProblem(f"attachments[{index}]", problem))
    if problems:
        raise RuleViolation(problems)
    await connection.execute(
        _ATTACH,
        [
            {
                "attachment_id": attachment_id,
                "request_id": request_id,
                "message_id": message_id,
                "position": index,
            }
            for index, attachment_id in enumerate(ids)
        ],
    )
    await connection.execute(_COUNT_ATTACHED, {"changed_id": request_id, "attached": len(ids)})


def _refusal(uploader: Principal, row: Any, attachment_id: str, now: datetime) -> str | None:
    """Why an upload cannot be attached by ``uploader``, or None when it can."""
    if row is None or row.owner_id != uploader.sub or row.owner_role != uploader.role.value:
        # Someone else's upload reads as one that does not exist.
        return f"Attachment {attachment_id} is not one of your uploads."
    if row.removed_at is not None:
        return f"Attachment {attachment_id} was removed."
    if row.request_id is not None:
        return f"Attachment {attachment_id} is already attached to a message."
    if row.expires_at is not None and row.expires_at <= now:
        return f"Attachment {attachment_id} has expired; upload the file again."
    return None
