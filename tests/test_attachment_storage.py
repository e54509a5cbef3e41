"""Attachments in storage, on both databases: bytes, visibility, attaching, removal, expiry.

Every file is a real one made here (Pillow images, text) and cleaned by ``inspect_upload``,
so the bytes compared are the bytes the service would store.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from PIL import Image

from support_requests.domain.attachments import UNATTACHED_TTL
from support_requests.domain.clock import now_ms
from support_requests.domain.errors import NotFound, RuleViolation
from support_requests.domain.lifecycle import Actor
from support_requests.domain.principal import Principal
from support_requests.storage import attachments as attachments_module
from support_requests.storage import schema
from support_requests.storage.attachment_content import Inspected, inspect_upload
from support_requests.storage.attachments import (
    CHUNK_SIZE,
    AttachmentStore,
    StoredAttachment,
)
from support_requests.storage.database import STATEMENT_OBSERVERS, Database
from support_requests.storage.models import Base
from support_requests.storage.support_desk import SupportDesk

T = TypeVar("T")
TABLES = Base.metadata.tables
ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{22}$")


# -- helpers --------------------------------------------------------------------------------


def _customer() -> Principal:
    return Principal(sub=f"customer-{uuid.uuid4().hex}", role=Actor.CUSTOMER, name="Alex")


def _admin() -> Principal:
    return Principal(sub=str(uuid.uuid4()), role=Actor.ADMIN, name="Agent")


class World:
    """A desk and an attachment store on one fresh database, and a folder for uploads."""

    def __init__(self, database: Database, store: AttachmentStore, work: Path) -> None:
        self.database = database
        self.store = store
        self.desk = SupportDesk(database)
        self.work = work

    def inspected(self, data: bytes) -> Inspected:
        """``data`` cleaned by ``inspect_upload``, as an upload handler would have it."""
        source = self.work / f"upload-{uuid.uuid4().hex}"
        source.write_bytes(data)
        inspected = inspect_upload(source, self.work)
        source.unlink()
        return inspected

    async def upload(
        self, uploader: Principal, data: bytes | None = None, *, now: datetime | None = None
    ) -> StoredAttachment:
        inspected = self.inspected(data if data is not None else _png(40, 30))
        return await self.store.save(uploader, "screen.png", inspected, now=now)

    async def request(self, customer: Principal, attachments: list[str] | None = None) -> Any:
        return await self.desk.create_request(
            customer,
            category="technical",
            subject="App crashes",
            message="It crashes.",
            attachments=attachments or (),
        )

    async def read_all(self, attachment: StoredAttachment, first: int, last: int) -> bytes:
        return b"".join([piece async for piece in self.store.read(attachment, first, last)])


def _run(
    database_url: str,
    tmp_path: Path,
    work: Callable[[World], Awaitable[T]],
    *,
    directory: bool = False,
) -> T:
    """Run ``work`` in a fresh world on the test's database, disposed afterwards."""
    uploads = tmp_path / "uploads"
    uploads.mkdir(exist_ok=True)

    async def run() -> T:
        database = Database(database_url)
        try:
            await database.create_schema()
            store = AttachmentStore(database, tmp_path / "files" if directory else None)
            return await work(World(database, store, uploads))
        finally:
            await database.dispose()

    return asyncio.run(run())


def _png(width: int, height: int, *, noise: bool = False) -> bytes:
    """A PNG; with ``noise`` its pixels are random, so it does not compress."""
    if noise:
        image = Image.frombytes("RGB", (width, height), _random_bytes(width * height * 3))
    else:
        image = Image.new("RGB", (width, height), (200, 30, 30))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _random_bytes(count: int) -> bytes:
    return b"".join(uuid.uuid4().bytes for _ in range(count // 16 + 1))[:count]


def _count(db: sa.Engine, table: str, **equal: Any) -> int:
    statement = sa.select(sa.func.count()).select_from(TABLES[table])
    for name, value in equal.items():
        statement = statement.where(TABLES[table].c[name] == value)
    with db.connect() as connection:
        return connection.scalar(statement) or 0


def _problems(error: RuleViolation) -> dict[str, str]:
    return {problem.field: problem.message for problem in error.problems}


@pytest.fixture(params=["database", "directory"])
def mode(request: pytest.FixtureRequest) -> str:
    """Where the bytes are kept."""
    return str(request.param)


# -- saving and reading ---------------------------------------------------------------------


def test_saved_bytes_read_whole_and_in_ranges_equal_the_cleaned_file(database_url, tmp_path, mode):
    """Whole file, chunk boundaries (first, middle, last), one byte and the last byte."""

    async def work(world: World) -> dict[tuple[int, int], tuple[bytes, bytes]]:
        inspected = world.inspected(_png(700, 700, noise=True))
        cleaned = inspected.path.read_bytes()
        assert len(cleaned) > 4 * CHUNK_SIZE
        saved = await world.store.save(_customer(), "noise.png", inspected)
        assert not inspected.path.exists()
        size = len(cleaned)
        ranges = [
            (0, size - 1),
            (0, 0),
            (size - 1, size - 1),
            (0, CHUNK_SIZE - 1),
            (CHUNK_SIZE - 1, CHUNK_SIZE),
            (CHUNK_SIZE, 2 * CHUNK_SIZE - 1),
            (CHUNK_SIZE + 5, 3 * CHUNK_SIZE + 7),
            (3 * CHUNK_SIZE, size - 1),
            (1234, 1234),
        ]
        return {
            (first, last): (await world.read_all(saved, first, last), cleaned[first : last + 1])
            for first, last in ranges
        }

    for (first, last), (read, expected) in _run(
        database_url, tmp_path, work, directory=mode == "directory"
    ).items():
        assert read == expected, (first, last)


def test_save_keeps_type_size_hash_pixels_thumbnail_and_a_24_hour_expiry(database_url, tmp_path):
    at = now_ms()

    async def work(world: World) -> tuple[StoredAttachment, bytes, bytes]:
        inspected = world.inspected(_png(640, 480))
        cleaned = inspected.path.read_bytes()
        saved = await world.store.save(_customer(), "screen.png", inspected, now=at)
        return saved, cleaned, await world.store.thumbnail(saved)

    saved, cleaned, thumbnail = _run(database_url, tmp_path, work)
    assert ID_PATTERN.match(saved.id)
    assert (saved.content_type, saved.size, saved.width, saved.height) == (
        "image/png",
        len(cleaned),
        640,
        480,
    )
    assert saved.sha256 == hashlib.sha256(cleaned).hexdigest()
    assert saved.file_name == "screen.png"
    assert (saved.created_at, saved.expires_at) == (at, at + UNATTACHED_TTL)
    assert saved.has_thumbnail and saved.thumbnail_size == len(thumbnail) > 0
    assert Image.open(io.BytesIO(thumbnail)).size == (320, 240)
    assert (saved.request_id, saved.message_id, saved.customer_id, saved.removed) == (
        None,
        None,
        None,
        False,
    )


def test_directory_mode_names_files_by_id_and_keeps_no_chunks(database_url, db, tmp_path):
    async def work(world: World) -> StoredAttachment:
        return await world.upload(_customer())

    saved = _run(database_url, tmp_path, work, directory=True)
    assert [path.name for path in (tmp_path / "files").iterdir()] == [saved.id]
    assert _count(db, "attachment_chunks") == 0


def test_a_text_file_has_no_thumbnail(database_url, tmp_path):
    async def work(world: World) -> None:
        saved = await world.upload(_customer(), b"a log line\n")
        assert (saved.has_thumbnail, saved.width, saved.height) == (False, None, None)
        with pytest.raises(NotFound):
            await world.store.thumbnail(saved)

    _run(database_url, tmp_path, work)


def test_saving_and_reading_10_mib_holds_a_few_chunks_at_most(database_url, tmp_path, mode):
    line = b"2026-12-06T04:30:00Z INFO request handled in 12 ms\n"
    data = line * (10 * 1024 * 1024 // len(line) + 1)

    async def work(world: World) -> tuple[int, int, str]:
        inspected = world.inspected(data)
        expected = hashlib.sha256(inspected.path.read_bytes()).hexdigest()
        customer = _customer()
        tracemalloc.start()
        try:
            saved = await world.store.save(customer, "app.log", inspected)
            digest = hashlib.sha256()
            async for piece in world.store.read(saved, 0, saved.size - 1):
                digest.update(piece)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert digest.hexdigest() == expected
        return saved.size, peak, expected

    size, peak, _ = _run(database_url, tmp_path, work, directory=mode == "directory")
    assert size >= 10 * 1024 * 1024
    assert peak < 5 * CHUNK_SIZE, f"peak {peak:,} bytes for a {size:,}-byte file"


# -- who sees what --------------------------------------------------------------------------


def test_an_unattached_upload_is_seen_by_its_uploader_only(database_url, tmp_path):
    async def work(world: World) -> None:
        owner, admin = _customer(), _admin()
        saved = await world.upload(owner)
        assert (await world.store.for_customer(owner, saved.id)).id == saved.id
        with pytest.raises(NotFound):
            await world.store.for_customer(_customer(), saved.id)
        with pytest.raises(NotFound):
            await world.store.for_admin(admin, saved.id)
        own = await world.upload(admin)
        assert (await world.store.for_admin(admin, own.id)).owner_role == "admin"
        with pytest.raises(NotFound):
            await world.store.for_admin(_admin(), own.id)
        with pytest.raises(NotFound):
            await world.store.for_customer(owner, own.id)

    _run(database_url, tmp_path, work)


def test_an_attachment_is_seen_by_the_requests_customer_and_every_admin(database_url, tmp_path):
    async def work(world: World) -> None:
        owner, admin = _customer(), _admin()
        request = await world.request(owner)
        staff_upload = await world.upload(admin)
        await world.desk.reply_as_admin(admin, request.row.id, "Here.", [staff_upload.id])
        for attachment_id in (staff_upload.id,):
            seen = await world.store.for_customer(owner, attachment_id)
            assert (seen.request_id, seen.customer_id) == (request.row.id, owner.sub)
            assert (await world.store.for_admin(_admin(), attachment_id)).id == attachment_id
            with pytest.raises(NotFound):
                await world.store.for_customer(_customer(), attachment_id)

    _run(database_url, tmp_path, work)


def test_an_unknown_id_is_not_found_worded_as_someone_elses(database_url, tmp_path):
    async def work(world: World) -> tuple[str, str]:
        saved = await world.upload(_customer())
        with pytest.raises(NotFound) as unknown:
            await world.store.for_customer(_customer(), "A" * 22)
        with pytest.raises(NotFound) as other:
            await world.store.for_customer(_customer(), saved.id)
        return unknown.value.detail.replace("A" * 22, "ID"), other.value.detail.replace(
            saved.id, "ID"
        )

    unknown, other = _run(database_url, tmp_path, work)
    assert unknown == other == "Attachment ID was not found."


def test_an_expired_upload_is_not_found(database_url, tmp_path):
    async def work(world: World) -> None:
        owner = _customer()
        saved = await world.upload(owner, now=now_ms() - UNATTACHED_TTL - timedelta(seconds=1))
        with pytest.raises(NotFound):
            await world.store.for_customer(owner, saved.id)

    _run(database_url, tmp_path, work)


# -- attaching ------------------------------------------------------------------------------


def test_create_and_replies_list_attachments_by_message_in_the_order_given(database_url, tmp_path):
    async def work(world: World) -> None:
        customer, admin = _customer(), _admin()
        first, second = await world.upload(customer), await world.upload(customer, b"log\n")
        created = await world.request(customer, [second.id, first.id])
        (message,) = created.messages
        assert [a.id for a in created.attachments[message.id]] == [second.id, first.id]
        assert [a.content_type for a in created.attachments[message.id]] == [
            "text/plain; charset=utf-8",
            "image/png",
        ]
        staff = await world.upload(admin)
        replied = await world.desk.reply_as_admin(admin, created.row.id, "Seen.", [staff.id])
        plain = await world.desk.reply_as_customer(customer, created.row.id, "Thanks.")
        detail = await world.desk.get_for_customer(customer, created.row.id)
        ids = [m.id for m in detail.messages]
        assert len(ids) == 3 and ids == sorted(ids)
        assert {k: [a.id for a in v] for k, v in detail.attachments.items()} == {
            ids[0]: [second.id, first.id],
            ids[1]: [staff.id],
        }
        assert replied.attachments[ids[1]][0].has_thumbnail
        assert ids[2] not in plain.attachments
        attached = await world.store.for_customer(customer, first.id)
        assert (attached.message_id, attached.expires_at) == (ids[0], None)

    _run(database_url, tmp_path, work)


def test_a_request_without_attachments_has_an_empty_map(database_url, tmp_path):
    async def work(world: World) -> None:
        customer = _customer()
        created = await world.request(customer)
        assert created.attachments == {}
        assert (await world.desk.get_for_customer(customer, created.row.id)).attachments == {}

    _run(database_url, tmp_path, work)


def test_attaching_refuses_every_bad_id_by_its_position(database_url, db, tmp_path):
    """Someone else's, already attached, expired, removed and unknown: each named."""

    async def work(world: World) -> tuple[dict[str, str], dict[str, str]]:
        customer, admin = _customer(), _admin()
        others = await world.upload(_customer())
        attached = await world.upload(customer)
        request = await world.request(customer, [attached.id])
        expired = await world.upload(customer, now=now_ms() - UNATTACHED_TTL)
        removed = await world.upload(customer)
        await world.desk.reply_as_customer(customer, request.row.id, "More.", [removed.id])
        await world.store.remove(admin, removed.id)
        bad_ids = [others.id, attached.id, expired.id, removed.id, "B" * 22]
        with pytest.raises(RuleViolation) as refused:
            await world.desk.reply_as_customer(customer, request.row.id, "Again.", bad_ids)
        six = [(await world.upload(customer)).id for _ in range(6)]
        with pytest.raises(RuleViolation) as too_many:
            await world.request(customer, six)
        return _problems(refused.value), _problems(too_many.value)

    refused, too_many = _run(database_url, tmp_path, work)
    assert list(refused) == [f"attachments[{i}]" for i in range(5)]
    assert "not one of your uploads" in refused["attachments[0]"]
    assert "already attached" in refused["attachments[1]"]
    assert "expired" in refused["attachments[2]"]
    assert "was removed" in refused["attachments[3]"]
    assert "not one of your uploads" in refused["attachments[4]"]
    assert too_many == {"attachments[5]": "A message takes at most 5 attachments."}


def test_an_admins_upload_cannot_go_on_a_customers_message(database_url, tmp_path):
    async def work(world: World) -> tuple[str, dict[str, str]]:
        customer, admin = _customer(), _admin()
        staff = await world.upload(admin)
        with pytest.raises(RuleViolation) as refused:
            await world.request(customer, [staff.id])
        return staff.id, _problems(refused.value)

    staff_id, problems = _run(database_url, tmp_path, work)
    assert problems == {"attachments[0]": f"Attachment {staff_id} is not one of your uploads."}


def test_a_refused_create_stores_no_request_and_attaches_nothing(database_url, db, tmp_path):
    async def work(world: World) -> str:
        customer = _customer()
        good = await world.upload(customer)
        with pytest.raises(RuleViolation):
            await world.request(customer, [good.id, "C" * 22])
        return good.id

    good_id = _run(database_url, tmp_path, work)
    assert _count(db, "support_requests") == _count(db, "messages") == 0
    assert _count(db, "request_events") == 0
    assert _count(db, "attachments", id=good_id, request_id=None) == 1


def test_a_refused_reply_stores_no_message_and_attaches_nothing(database_url, db, tmp_path):
    async def work(world: World) -> tuple[int, int, str]:
        customer, admin = _customer(), _admin()
        request = await world.request(customer)
        good = await world.upload(customer)
        with pytest.raises(RuleViolation):
            await world.desk.reply_as_customer(customer, request.row.id, "Hi", [good.id, "D" * 22])
        staff = await world.upload(admin)
        with pytest.raises(RuleViolation):
            await world.desk.reply_as_admin(admin, request.row.id, "Hi", [staff.id, good.id])
        after = await world.desk.get_for_admin(admin, request.row.id)
        return len(after.messages), after.row.version, good.id

    messages, version, good_id = _run(database_url, tmp_path, work)
    assert (messages, version) == (1, 1)
    assert _count(db, "messages") == 1
    assert _count(db, "attachments", request_id=None) == 2
    assert _count(db, "attachments", id=good_id, request_id=None) == 1


# -- removal --------------------------------------------------------------------------------


def test_removing_an_attachment_drops_its_bytes_and_records_who(database_url, db, tmp_path, mode):
    async def work(world: World) -> tuple[Any, StoredAttachment, StoredAttachment, Any, Any]:
        customer, admin = _customer(), _admin()
        saved = await world.upload(customer, _png(700, 700, noise=True))
        request = await world.request(customer, [saved.id])
        removed = await world.store.remove(admin, saved.id)
        again = await world.store.remove(_admin(), saved.id)
        detail = await world.desk.get_for_customer(customer, request.row.id)
        events = await world.desk.list_events(admin, request.row.id)
        seen = await world.store.for_customer(customer, saved.id)
        with pytest.raises(NotFound):
            await world.read_all(seen, 0, 0)
        with pytest.raises(NotFound):
            await world.store.thumbnail(seen)
        return detail, removed, again, events, admin

    detail, removed, again, events, admin = _run(
        database_url, tmp_path, work, directory=mode == "directory"
    )
    assert removed == again
    assert removed.removed and not removed.has_thumbnail
    assert _count(db, "attachment_chunks") == 0
    assert not any((tmp_path / "files").glob("*"))
    assert detail.row.version == 2
    ((summary,),) = detail.attachments.values()
    assert (summary.id, summary.removed, summary.has_thumbnail) == (removed.id, True, False)
    assert [e.type for e in events] == ["created", "attachment_removed"]
    assert (events[1].actor_id, events[1].changes) == (
        admin.sub,
        {"attachmentId": {"from": removed.id, "to": None}},
    )
    with db.connect() as connection:
        row = connection.execute(
            sa.select(TABLES["attachments"]).where(TABLES["attachments"].c.id == removed.id)
        ).one()
    assert (row.removed_by, row.thumbnail, row.storage_path) == (admin.sub, None, None)


def test_removing_an_unattached_upload_deletes_it(database_url, db, tmp_path, mode):
    async def work(world: World) -> None:
        admin = _admin()
        own = await world.upload(admin)
        customers = await world.upload(_customer())
        removed = await world.store.remove(admin, own.id)
        assert removed.id == own.id
        with pytest.raises(NotFound):
            await world.store.remove(admin, own.id)
        with pytest.raises(NotFound):
            await world.store.remove(admin, customers.id)
        with pytest.raises(NotFound):
            await world.store.remove(admin, "E" * 22)

    _run(database_url, tmp_path, work, directory=mode == "directory")
    assert _count(db, "attachments") == 1
    if mode == "directory":
        assert len(list((tmp_path / "files").iterdir())) == 1
    else:
        assert _count(db, "attachment_chunks") == 1


# -- expiry ---------------------------------------------------------------------------------


def test_delete_expired_removes_only_expired_unattached_uploads(database_url, db, tmp_path, mode):
    now = now_ms()

    async def work(world: World) -> tuple[int, set[str]]:
        customer = _customer()
        old = now - UNATTACHED_TTL - timedelta(minutes=1)
        expired = [await world.upload(customer, now=old) for _ in range(2)]
        fresh = await world.upload(customer, now=now)
        attached_old = await world.upload(customer, now=old + timedelta(minutes=2))
        await world.request(customer, [attached_old.id])
        deleted = await world.store.delete_expired(now=now + timedelta(minutes=1, seconds=30))
        assert {a.id for a in expired}.isdisjoint({fresh.id, attached_old.id})
        return deleted, {fresh.id, attached_old.id}

    deleted, kept = _run(database_url, tmp_path, work, directory=mode == "directory")
    assert deleted == 2
    with db.connect() as connection:
        assert set(connection.scalars(sa.select(TABLES["attachments"].c.id))) == kept
        kept_chunks = set(
            connection.scalars(sa.select(TABLES["attachment_chunks"].c.attachment_id))
        )
    if mode == "directory":
        assert {path.name for path in (tmp_path / "files").iterdir()} == kept
    else:
        assert kept_chunks == kept


# -- migration ------------------------------------------------------------------------------


def test_migration_0002_adds_and_drops_the_attachment_tables(database_url, db):
    Base.metadata.drop_all(db)
    with db.begin() as connection:
        connection.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
    schema.upgrade(database_url, "0001")
    with db.begin() as connection:
        connection.execute(
            TABLES["support_requests"].insert(),
            {
                "customer_id": "c-1",
                "category": "technical",
                "subject": "Before attachments",
                "status": "open",
                "created_at": now_ms(),
                "updated_at": now_ms(),
                "version": 1,
            },
        )
    schema.upgrade(database_url, "0002")
    names = set(sa.inspect(db).get_table_names())
    assert {"attachments", "attachment_chunks"} <= names
    assert _count(db, "support_requests") == 1
    schema.downgrade(database_url, "0001")
    names = set(sa.inspect(db).get_table_names())
    assert not {"attachments", "attachment_chunks"} & names
    assert _count(db, "support_requests") == 1
    schema.upgrade(database_url, "0002")
    assert schema.current(database_url) == "0002"


# -- detail reads ---------------------------------------------------------------------------


class _Observed:
    """The SQL statements run while listening (transaction control aside)."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def __call__(self, sql: str, parameters: Any) -> None:
        if not sql.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK")):
            self.statements.append(sql)


def test_a_detail_reads_attachments_only_for_a_request_that_has_some(database_url, tmp_path):
    async def work(world: World) -> tuple[int, int]:
        customer = _customer()
        plain = await world.request(customer)
        upload = await world.upload(customer)
        with_file = await world.request(customer, [upload.id])
        counts = []
        for request in (plain, with_file):
            observed = _Observed()
            STATEMENT_OBSERVERS.append(observed)
            try:
                await world.desk.get_for_customer(customer, request.row.id)
            finally:
                STATEMENT_OBSERVERS.remove(observed)
            counts.append(len(observed.statements))
        return counts[0], counts[1]

    assert _run(database_url, tmp_path, work) == (1, 2)


def test_the_request_counts_the_attachments_its_messages_took(database_url, tmp_path):
    async def work(world: World) -> int:
        customer = _customer()
        first = [(await world.upload(customer)).id for _ in range(2)]
        request = await world.request(customer, first)
        third = await world.upload(customer)
        replied = await world.desk.reply_as_customer(
            customer, request.row.id, "One more", [third.id]
        )
        return int(replied.row.attachment_count)

    assert _run(database_url, tmp_path, work) == 3


class _RemovingBetweenReads:
    """A connection that runs ``removal`` right after the first detail statement."""

    def __init__(self, connection: Any, removal: Callable[[], Awaitable[Any]]) -> None:
        self._connection = connection
        self._removal: Callable[[], Awaitable[Any]] | None = removal

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        result = await self._connection.execute(statement, parameters)
        if self._removal is not None:
            removal, self._removal = self._removal, None
            await removal()
        return result


def test_a_detail_never_shows_attachments_newer_than_its_thread(database_url, tmp_path):
    """A removal between the thread's read and the attachments' read: read again, so the
    version and the attachments shown belong together."""

    async def work(world: World) -> Any:
        customer, admin = _customer(), _admin()
        upload = await world.upload(customer)
        request = await world.request(customer, [upload.id])
        async with world.database.reading() as connection:
            racing = _RemovingBetweenReads(connection, lambda: world.store.remove(admin, upload.id))
            return await world.desk._read_detail(racing, request.row.id)  # type: ignore[arg-type]

    record = _run(database_url, tmp_path, work)
    ((summary,),) = record.attachments.values()
    assert (record.row.version, summary.removed) == (2, True)


def test_save_keeps_only_the_files_own_name(database_url, tmp_path):
    async def work(world: World) -> str:
        inspected = world.inspected(b"log\n")
        saved = await world.store.save(_customer(), "C:\\Users\\me\\app.log", inspected)
        return saved.file_name

    assert _run(database_url, tmp_path, work) == "app.log"


def test_an_attachment_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """`supportctl attachments get -c…` would read the id as an option."""
    draws = iter(["-" + "a" * 21, "-" + "b" * 21, "c" * 22])
    with monkeypatch.context() as patched:
        patched.setattr(attachments_module.secrets, "token_urlsafe", lambda _n: next(draws))
        assert attachments_module.new_attachment_id() == "c" * 22
    real = {attachments_module.new_attachment_id() for _ in range(2000)}
    assert len(real) == 2000
    assert all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}", value) for value in real)
