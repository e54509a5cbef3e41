"""Scale-out: two server processes on one PostgreSQL database, 50 clients, every operation.

Customers (each on two "devices") and staff (each in three browser tabs) run for a
few seconds against both processes at once, every call to a randomly chosen one:
mobile create/list/detail/reply, admin queue/detail/reply/patch (status,
assignee, note, resolve, close)/admins/events. Most calls go to the newest requests,
and half the staff's and most of one customer's (on eight devices) to "the incident",
that customer's latest request, so that writes and reads of one row overlap all the
time; once it is closed, the customer opens the next one. A last burst of 30 clients
replies to and reads one fresh request through both processes at once. Creates and replies are sent
without a key, with an ``Idempotency-Key``, with the same key to both processes
at the same moment, as a retry to the other process, and with a key reused for
another body. Afterwards, from the database and the servers' logs:

- no 5xx, no transport error; every answer is one the contract allows for it;
- every accepted create and reply is stored exactly once (matched by its unique
  subject or body), idempotent retries get the first answer byte for byte, and a
  refused one is not stored at all;
- replaying each request's events through ``domain.lifecycle`` is legal at every
  step and ends in the stored row; nothing follows a close; no message is later
  than ``closedAt``; resolved exactly when there is a note and ``resolvedAt``;
- every response showed a state of that serial history (no torn reads); event
  lists are prefixes of the final history; no admin change that nobody asked for;
- mobile responses never contain a UUID; list walks show each of the customer's
  requests exactly once; filters hold;
- rate-limit counters are shared (in Redis): one caller never sees the same
  ``RateLimit-Remaining`` twice in a window, whichever process answered;
- each process served its share and logged one JSON line per request.

PostgreSQL only: SQLite is one box (``test_races`` covers its two processes).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from support_requests.domain.clock import iso_ms
from support_requests.domain.lifecycle import SET_STATUS_EVENTS, Actor, Event, Status, decide
from support_requests.storage.database import sync_url
from tests.conftest import PG_URL, REDIS_URL, reset_pg
from tests.helpers import ADMIN, MOBILE, UUID_PATTERN, admin, admin_id_of, customer
from tests.servers import Server, migrated_database, running_servers

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.skipif(not PG_URL, reason="scale-out needs PostgreSQL: set SUPPORT_TEST_PG_URL"),
]

SERVERS = 2
CUSTOMERS = 13
DEVICES_PER_CUSTOMER = 2
INCIDENT_OWNER_DEVICES = 8  # the first customer: a shop's tablets, all on one account
STAFF = 6
TABS_PER_ADMIN = 3
CLIENTS = INCIDENT_OWNER_DEVICES + (CUSTOMERS - 1) * DEVICES_PER_CUSTOMER + STAFF * TABS_PER_ADMIN
LOAD_SECONDS = 10.0
MAX_OPERATIONS_PER_CLIENT = 150
BURST_SECONDS = 3.0
BURST_WRITERS = 10
BURST_READERS = 20
# Generous enough never to refuse, so every count stays visible in RateLimit-Remaining.
RATE_LIMIT = "1000000/minute"
RATE_WINDOW_SECONDS = 60
POOL_SIZE = "6"  # per process (plus as many overflow): a shared test server has ~100 slots
WRITE_MODES = ("plain", "key", "both", "retry", "reuse")
WRITE_MODE_WEIGHTS = (35, 20, 25, 12, 8)


@dataclass(frozen=True)
class Person:
    """A customer or an admin, with the headers their token gives."""

    sub: str
    headers: dict[str, str]
    is_admin: bool


@dataclass
class Exchange:
    """One HTTP call and its answer."""

    kind: str
    who: Person
    server: int
    method: str
    path: str
    body: Any
    key: str | None
    status: int
    content: bytes
    headers: httpx.Headers
    sent: float
    received: float
    request_id: int | None = None

    def json(self) -> Any:
        return json.loads(self.content)

    @property
    def code(self) -> str | None:
        return self.json().get("code") if self.status >= 400 else None

    @property
    def in_use(self) -> bool:
        return self.status == 409 and self.code == "idempotency_key_in_use"

    def __repr__(self) -> str:
        return (
            f"<{self.kind} {self.method} {self.path} via {self.server} "
            f"{self.body!r} -> {self.status} {self.content[:300]!r}>"
        )


@dataclass
class Write:
    """One logical create or reply, however many times it was sent."""

    kind: str
    who: Person
    mode: str
    marker: str  # the unique subject (create) or body (reply)
    key: str | None
    request_id: int | None = None
    answers: list[Exchange] = field(default_factory=list)
    reuses: Write | None = None  # the write whose key this one borrowed

    @property
    def final(self) -> list[Exchange]:
        return [answer for answer in self.answers if not answer.in_use]

    @property
    def accepted(self) -> Exchange | None:
        return next((a for a in self.final if a.status == 201), None)


@dataclass
class Walk:
    """A customer's list followed to its last page."""

    who: Person
    known_before: set[int]
    pages: list[Exchange] = field(default_factory=list)


class Load:
    """The clients' shared view: what was sent, what came back, what exists so far."""

    def __init__(
        self, clients: list[httpx.AsyncClient], staff_ids: list[str], incident_owner: str
    ) -> None:
        self.clients = clients
        self.staff_ids = staff_ids
        # The incident: the owner's latest request, until someone closes it.
        self.incident_owner = incident_owner
        self.incident: int | None = None
        self.closed: set[int] = set()
        self.exchanges: list[Exchange] = []
        self.writes: list[Write] = []
        self.walks: list[Walk] = []
        self.final_walks: list[Walk] = []
        self.created: list[int] = []
        self.owned: dict[str, list[int]] = defaultdict(list)

    async def send(
        self,
        kind: str,
        who: Person,
        server: int,
        method: str,
        path: str,
        *,
        body: Any = None,
        key: str | None = None,
        params: dict[str, Any] | None = None,
        request_id: int | None = None,
    ) -> Exchange:
        headers = dict(who.headers)
        if key is not None:
            headers["Idempotency-Key"] = key
        sent = time.time()
        response = await self.clients[server].request(
            method, path, json=body, params=params, headers=headers
        )
        exchange = Exchange(
            kind,
            who,
            server,
            method,
            str(response.request.url.raw_path.decode()),
            body,
            key,
            response.status_code,
            response.content,
            response.headers,
            sent,
            time.time(),
            request_id,
        )
        self.exchanges.append(exchange)
        if request_id is not None and _shows_closed(exchange):
            self.closed.add(request_id)
        return exchange

    async def write(
        self,
        rng: random.Random,
        kind: str,
        who: Person,
        path: str,
        body: dict[str, Any],
        marker: str,
        variant: tuple[dict[str, Any], str],
        request_id: int | None = None,
    ) -> list[Write]:
        """Send one create or reply in a random retry pattern; settle 409 in-use answers.

        The written call, and in ``reuse`` mode the other call sent with its key."""
        mode = rng.choices(WRITE_MODES, WRITE_MODE_WEIGHTS)[0]
        key = None if mode == "plain" else f"key-{uuid.uuid4()}"
        write = Write(kind, who, mode, marker, key, request_id)
        self.writes.append(write)
        server = rng.randrange(SERVERS)
        other = (server + 1) % SERVERS

        def send(to: int, payload: dict[str, Any] = body) -> Any:
            return self.send(
                kind, who, to, "POST", path, body=payload, key=key, request_id=request_id
            )

        if mode == "both":
            write.answers += await asyncio.gather(*(send(to) for to in range(SERVERS)))
        else:
            write.answers.append(await send(server))
        if mode == "retry":  # the answer was "lost": the same call again, via the other process
            write.answers.append(await send(other))
        if mode == "reuse":  # a client bug: the same key for another call
            other_body, other_marker = variant
            reused = Write(kind, who, "reused", other_marker, key, request_id, reuses=write)
            self.writes.append(reused)
            reused.answers.append(await send(other, other_body))
            return [write, reused]
        return [write]

    def target(self, rng: random.Random, ids: list[int], *, recent: int, incident: float) -> int:
        """The incident with probability ``incident``; else mostly one of the newest
        ``recent`` ids (where the contention is), sometimes any."""
        if self.incident is not None and rng.random() < incident:
            return self.incident
        return rng.choice(ids[-recent:]) if rng.random() < 0.75 else rng.choice(ids)

    async def reply(self, rng: random.Random, who: Person, request_id: int) -> None:
        """A customer's or a staff reply (in a random retry pattern)."""
        side, base = ("staff", ADMIN) if who.is_admin else ("customer", MOBILE)
        text = f"{side} says {uuid.uuid4().hex}"
        other = f"{side} also says {uuid.uuid4().hex}"
        await self.write(
            rng,
            "admin-reply" if who.is_admin else "mobile-reply",
            who,
            f"{base}/{request_id}/messages",
            {"body": text},
            text,
            ({"body": other}, other),
            request_id,
        )

    async def detail(self, rng: random.Random, who: Person, request_id: int) -> None:
        kind, base = ("admin-detail", ADMIN) if who.is_admin else ("mobile-detail", MOBILE)
        path = f"{base}/{request_id}"
        await self.send(kind, who, rng.randrange(SERVERS), "GET", path, request_id=request_id)

    async def burst(self, owner: Person, staff: list[Person], seconds: float) -> None:
        """One fresh request, replied to by both sides and read by both, all at once: every
        read must show the request and its thread as of one moment."""
        rng = random.Random(31)
        await self.create(rng, owner)
        request_id = self.owned[owner.sub][-1]
        deadline = time.monotonic() + seconds

        async def participant(index: int, who: Person, act: Any) -> None:
            rng = random.Random(3100 + index)
            while time.monotonic() < deadline:
                await act(rng, who, request_id)

        await asyncio.gather(
            *(
                participant(i, owner if i % 2 else staff[i % len(staff)], act)
                for i, act in enumerate(
                    [self.reply] * BURST_WRITERS + [self.detail] * BURST_READERS
                )
            )
        )

    # -- customers -------------------------------------------------------------

    async def customer_step(self, rng: random.Random, who: Person) -> None:
        mine = self.owned[who.sub]
        owner = who.sub == self.incident_owner
        incident = 0.8 if owner else 0.0
        roll = rng.random()
        if not mine or (roll < 0.12 and not owner) or (owner and self.incident in self.closed):
            await self.create(rng, who)
        elif roll < 0.5:
            await self.reply(rng, who, self.target(rng, mine, recent=2, incident=incident))
        elif roll < 0.8:
            await self.detail(rng, who, self.target(rng, mine, recent=2, incident=incident))
        elif roll < 0.94:
            await self.walk(rng, who)
        else:
            status = rng.choice([s.value for s in Status])
            params = {"status": status, "limit": rng.choice([5, 20])}
            await self.send(
                "mobile-list", who, rng.randrange(SERVERS), "GET", MOBILE, params=params
            )

    async def create(self, rng: random.Random, who: Person) -> None:
        subject = f"Scale {uuid.uuid4().hex[:16]}"
        other = f"Scale {uuid.uuid4().hex[:16]}"
        category = rng.choice(["account", "payment", "technical", "other"])

        def body(text: str) -> dict[str, Any]:
            return {"category": category, "subject": text, "message": f"About {text}."}

        writes = await self.write(
            rng, "mobile-create", who, MOBILE, body(subject), subject, (body(other), other)
        )
        for done in writes:
            if done.accepted is not None:
                request_id = int(done.accepted.json()["data"]["id"])
                done.request_id = request_id
                self.owned[who.sub].append(request_id)
                self.created.append(request_id)
                if who.sub == self.incident_owner:
                    self.incident = request_id

    async def walk(self, rng: random.Random, who: Person, *, final: bool = False) -> None:
        """Follow the customer's list to its end, each page from a random process."""
        walk = Walk(who, set(self.owned[who.sub]))
        (self.final_walks if final else self.walks).append(walk)
        params: dict[str, Any] = {"limit": rng.choice([1, 2, 3] if final else [2, 5, 10])}
        while True:
            page = await self.send(
                "final-walk" if final else "mobile-list",
                who,
                len(walk.pages) % SERVERS if final else rng.randrange(SERVERS),
                "GET",
                MOBILE,
                params=params,
            )
            walk.pages.append(page)
            cursor = page.json()["meta"]["nextCursor"] if page.status == 200 else None
            if cursor is None:
                return
            params = {**params, "cursor": cursor}

    # -- staff -----------------------------------------------------------------

    async def admin_step(self, rng: random.Random, who: Person) -> None:
        server = rng.randrange(SERVERS)
        roll = rng.random()
        if not self.created or roll < 0.03:
            await self.send("admins", who, server, "GET", "/api/admin/admins")
            return
        request_id = self.target(rng, self.created, recent=4, incident=0.5)
        if roll < 0.07:
            await self.queue(rng, who)
        elif roll < 0.34:
            await self.detail(rng, who, request_id)
        elif roll < 0.6:
            await self.reply(rng, who, request_id)
        elif roll < 0.9:
            body = _patch_body(rng, self.staff_ids)
            await self.send(
                "admin-patch",
                who,
                server,
                "PATCH",
                f"{ADMIN}/{request_id}",
                body=body,
                request_id=request_id,
            )
        else:
            await self.send(
                "events",
                who,
                server,
                "GET",
                f"{ADMIN}/{request_id}/events",
                request_id=request_id,
            )

    async def queue(self, rng: random.Random, who: Person) -> None:
        params: dict[str, Any] = {
            "limit": rng.choice([5, 20, 50]),
            "sort": rng.choice(["createdAt", "-createdAt", "-updatedAt"]),
        }
        filters: dict[str, Any] = {
            "status": rng.choice([s.value for s in Status]),
            "category": rng.choice(["account", "payment", "technical", "other"]),
            "assigned": rng.choice(["true", "false"]),
            "assigneeId": rng.choice(self.staff_ids),
        }
        for name in rng.sample(sorted(filters), rng.randrange(3)):
            params[name] = filters[name]
        for _ in range(3):
            page = await self.send(
                "admin-queue", who, rng.randrange(SERVERS), "GET", ADMIN, params=params
            )
            cursor = page.json()["meta"]["nextCursor"] if page.status == 200 else None
            if cursor is None:
                return
            params = {**params, "cursor": cursor}


def _shows_closed(exchange: Exchange) -> bool:
    if exchange.status in (400, 409):
        return exchange.code in ("request_closed", "invalid_transition")
    data = exchange.json()["data"] if 200 <= exchange.status < 300 else None
    return isinstance(data, dict) and data.get("status") == "closed"


def _patch_body(rng: random.Random, staff_ids: list[str]) -> dict[str, Any]:
    note = f"Fixed by {uuid.uuid4().hex[:12]}."
    choices: list[tuple[dict[str, Any], int]] = [
        ({"status": "in_progress"}, 20),
        ({"status": "open"}, 10),
        ({"status": "resolved", "resolutionNote": note}, 20),
        ({"status": "closed"}, 10),
        ({"assignedAdminId": rng.choice(staff_ids)}, 20),
        ({"assignedAdminId": None}, 5),
        ({"resolutionNote": note}, 10),
        (
            {
                "status": "resolved",
                "resolutionNote": note,
                "assignedAdminId": rng.choice(staff_ids),
            },
            8,
        ),
        ({"status": "in_progress", "assignedAdminId": rng.choice(staff_ids)}, 8),
    ]
    bodies, weights = zip(*choices, strict=True)
    return dict(rng.choices(bodies, weights)[0])


async def _run_load(servers: list[Server], people: list[Person], staff: list[Person]) -> Load:
    # Idle connections are dropped before the server's 5 s keep-alive ends, as a load
    # balancer must: otherwise a request can race the server's close (a transport error).
    limits = httpx.Limits(
        max_connections=2 * CLIENTS, max_keepalive_connections=2 * CLIENTS, keepalive_expiry=2.0
    )
    clients = [
        httpx.AsyncClient(base_url=server.url, timeout=60.0, limits=limits) for server in servers
    ]
    load = Load(clients, [person.sub for person in staff], people[0].sub)
    try:
        for index, person in enumerate(staff):  # each admin is seen by the service once
            answer = await load.send("admins", person, index % SERVERS, "GET", "/api/admin/admins")
            assert answer.status == 200, answer
        gate = asyncio.Event()
        deadline = time.monotonic() + LOAD_SECONDS

        async def client(index: int, person: Person) -> int:
            rng = random.Random(9000 + index)
            await gate.wait()
            steps = 0
            while steps < MAX_OPERATIONS_PER_CLIENT and time.monotonic() < deadline:
                step = load.admin_step if person.is_admin else load.customer_step
                await step(rng, person)
                steps += 1
            return steps

        tasks = [asyncio.create_task(client(i, p)) for i, p in enumerate(people)]
        await asyncio.sleep(0.05)
        gate.set()
        steps = await asyncio.gather(*tasks)
        assert len(steps) == CLIENTS and min(steps) > 0, steps
        await load.burst(people[0], staff, BURST_SECONDS)
        rng = random.Random(77)
        for person in {p.sub: p for p in people if not p.is_admin}.values():
            await load.walk(rng, person, final=True)
    finally:
        for http in clients:
            await http.aclose()
    return load


def _people() -> tuple[list[Person], list[Person]]:
    customers = [
        Person(admin_id_of(headers), headers, False)
        for headers in (customer(name=f"Customer {n}") for n in range(CUSTOMERS))
    ]
    staff = [
        Person(admin_id_of(headers), headers, True)
        for headers in (admin(name=f"Agent {n}") for n in range(STAFF))
    ]
    clients = [customers[0]] * INCIDENT_OWNER_DEVICES
    clients += [c for c in customers[1:] for _ in range(DEVICES_PER_CUSTOMER)]
    clients += [a for a in staff for _ in range(TABS_PER_ADMIN)]
    return clients, staff


def test_two_processes_on_one_database_keep_every_rule_under_mixed_load(tmp_path: Path) -> None:
    assert PG_URL is not None
    reset_pg(PG_URL)  # creates the database when missing
    migrated_database(PG_URL)  # as `supportctl db upgrade` leaves it
    people, staff = _people()
    started = time.monotonic()
    with running_servers(
        PG_URL,
        tmp_path / "servers",
        count=SERVERS,
        SUPPORT_RATE_LIMIT_READS=RATE_LIMIT,
        SUPPORT_RATE_LIMIT_WRITES=RATE_LIMIT,
        SUPPORT_DB_POOL_SIZE=POOL_SIZE,
        SUPPORT_REDIS_URL=REDIS_URL,  # one budget for both processes
    ) as servers:
        load = asyncio.run(_run_load(servers, people, staff))
    elapsed = time.monotonic() - started
    stored = _read_everything(PG_URL)

    _check_answers(load)
    _check_writes_stored_exactly_once(load, stored)
    histories = {rid: _replay(stored, rid) for rid in stored.requests}
    _check_patches_asked_for(load, histories)
    _check_snapshots(load, stored, histories)
    _check_mobile_never_shows_a_uuid(load, staff)
    _check_walks(load, stored)
    _check_final_walks(load, stored)
    _check_rate_limits_are_shared(load)
    _check_servers_shared_the_load_and_logged_it(servers, load)

    # The harness itself: the load was real, mixed, and contended.
    kinds = Counter(exchange.kind for exchange in load.exchanges)
    assert len(stored.requests) >= 30 and len(load.exchanges) >= 400, (kinds, elapsed)
    reached = Counter(state[0] for history in histories.values() for state in history.states)
    assert set(reached) == {s.value for s in Status}, reached
    assert {w.mode for w in load.writes} == {*WRITE_MODES, "reused"}
    collided = [
        w
        for w in load.writes
        if w.mode == "both" and any(a.headers.get("idempotent-replayed") for a in w.answers)
    ]
    assert collided, "no same-key collision"
    refused = Counter((e.kind, e.status) for e in load.exchanges if e.status >= 400)
    assert ("mobile-reply", 400) in refused and ("admin-patch", 409) in refused, refused
    print(
        f"\n{len(load.exchanges)} calls in {elapsed:.1f} s; {dict(kinds)}; refused {dict(refused)}"
    )


# -- what the database holds -----------------------------------------------------


@dataclass
class Stored:
    requests: dict[int, dict[str, Any]]
    messages: dict[int, list[dict[str, Any]]]
    events: dict[int, list[dict[str, Any]]]


def _read_everything(url: str) -> Stored:
    engine = sa.create_engine(sync_url(url))
    try:
        with engine.connect() as connection:

            def rows(sql: str) -> list[dict[str, Any]]:
                return [dict(row._mapping) for row in connection.execute(sa.text(sql))]

            requests = {row["id"]: row for row in rows("SELECT * FROM support_requests")}
            messages: dict[int, list[dict[str, Any]]] = defaultdict(list)
            for row in rows("SELECT * FROM messages ORDER BY id"):
                messages[row["request_id"]].append(row)
            events: dict[int, list[dict[str, Any]]] = defaultdict(list)
            for row in rows("SELECT * FROM request_events ORDER BY id"):
                if isinstance(row["changes"], str):
                    row["changes"] = json.loads(row["changes"])
                events[row["request_id"]].append(row)
    finally:
        engine.dispose()
    return Stored(requests, dict(messages), dict(events))


# -- checks ------------------------------------------------------------------------

ALLOWED = {
    # Never 409: a key's answer is stored with its change, so a retry replays or runs.
    "mobile-create": {(201, None)},
    "mobile-reply": {(201, None), (400, "request_closed")},
    "admin-reply": {(201, None), (400, "request_closed")},
    "admin-patch": {(200, None), (409, "invalid_transition"), (422, "validation_failed")},
}


def _check_answers(load: Load) -> None:
    """No 5xx; each answer one the contract allows for that call; problems are problems."""
    assert [e for e in load.exchanges if e.status >= 500] == []
    for exchange in load.exchanges:
        allowed = ALLOWED.get(exchange.kind, {(200, None)})
        if exchange.kind.endswith(("create", "reply")) and exchange.key is not None:
            allowed = allowed | {(422, "idempotency_key_reused")}
        assert (exchange.status, exchange.code) in allowed, exchange
        if exchange.status >= 400:
            assert exchange.headers["content-type"] == "application/problem+json", exchange
        if exchange.status == 422 and exchange.kind == "admin-patch":
            # Only a bare note on a request that is not resolved is refused.
            assert set(exchange.body) == {"resolutionNote"}, exchange


def _check_writes_stored_exactly_once(load: Load, stored: Stored) -> None:
    subjects = Counter(r["subject"] for r in stored.requests.values())
    bodies = Counter(m["body"] for thread in stored.messages.values() for m in thread)
    message_by_body = {m["body"]: m for thread in stored.messages.values() for m in thread}
    expected_subjects: set[str] = set()
    expected_bodies: set[str] = set()
    for write in load.writes:
        final = write.final
        assert final, write.answers
        # Never "in use": calls sent at the same moment both run, the second rolls back.
        assert not any(a.in_use for a in write.answers), write.answers
        # Every settled answer to one key is the same answer.
        assert len({a.status for a in final}) == 1, final
        accepted = [a for a in final if a.status == 201]
        if accepted:
            assert len({(a.content, a.headers.get("location")) for a in accepted}) == 1, accepted
            ran = [a for a in accepted if a.headers.get("idempotent-replayed") != "true"]
            assert len(ran) == 1, ("one call ran, the others were replayed", accepted)
        if write.reuses is not None:
            if write.reuses.accepted is not None:
                assert [(a.status, a.code) for a in final] == [(422, "idempotency_key_reused")]
        elif write.mode == "retry" and write.accepted is not None:
            assert final[-1].headers.get("idempotent-replayed") == "true", final
        data = accepted[0].json()["data"] if accepted else None
        if write.kind == "mobile-create":
            if data is None:
                assert subjects[write.marker] == 0, write
                continue
            expected_subjects.add(write.marker)
            assert subjects[write.marker] == 1, write
            row = stored.requests[data["id"]]
            assert row["subject"] == write.marker and row["customer_id"] == write.who.sub
            assert accepted[0].headers["location"] == f"{MOBILE}/{data['id']}"
            first = stored.messages[data["id"]][0]
            expected_bodies.add(first["body"])
            assert bodies[first["body"]] == 1 and first["body"] == f"About {write.marker}."
        else:
            if data is None:
                assert bodies[write.marker] == 0, write
                continue
            expected_bodies.add(write.marker)
            assert bodies[write.marker] == 1, write
            message = message_by_body[write.marker]
            assert message["request_id"] == write.request_id == data["id"]
            assert message["author_id"] == write.who.sub
            assert message["author_type"] == ("admin" if write.who.is_admin else "customer")
            [shown] = [m for m in data["messages"] if m["body"] == write.marker]
            assert shown["id"] == message["id"]
    # Nothing else was stored.
    assert set(subjects) == expected_subjects
    assert set(bodies) == expected_bodies


@dataclass
class History:
    """One request's serial history, from its events."""

    states: set[tuple[Any, ...]]  # (status, assignee, note, updatedAt, message ids)
    event_ids: list[int]
    message_ids: list[int]
    asked: Counter[tuple[str, str, Any]]  # admin changes not implied by a reply

    def shown(self, *, admin_view: bool, thread: bool) -> set[tuple[Any, ...]]:
        """The states as a response shows them (mobile: only whether someone is assigned)."""
        return {
            (s, a if admin_view else a is not None, n, u, *([m] if thread else []))
            for s, a, n, u, m in self.states
        }


ANY = object()


def _replay(stored: Stored, request_id: int) -> History:
    """Walk the events through the lifecycle table; fails on any illegal or missing step."""
    row = stored.requests[request_id]
    events = stored.events[request_id]
    messages = stored.messages[request_id]
    created = events[0]
    assert created["type"] == "created", events
    assert (created["actor_type"], created["actor_id"]) == ("customer", row["customer_id"])
    assert created["at"] == row["created_at"] == messages[0]["created_at"]
    status, assignee, note = Status.OPEN, None, None
    resolved_at: datetime | None = None
    closed_at: datetime | None = None
    last: dict[str, datetime | None] = {"customer": created["at"], "admin": None}
    message_ids = [messages[0]["id"]]
    message_at = {m["id"]: m for m in messages}
    follow: list[tuple[str, str, Any, Any]] = []
    asked: Counter[tuple[str, str, Any]] = Counter()
    history = History(set(), [e["id"] for e in events], [m["id"] for m in messages], asked)

    def remember(at: datetime) -> None:
        history.states.add((status.value, assignee, note, iso_ms(at), tuple(message_ids)))

    remember(created["at"])
    previous = created
    for event in events[1:]:
        assert closed_at is None, f"{event} after the close of {request_id}"
        assert event["at"] >= previous["at"], (previous, event)
        kind, actor, changes = event["type"], event["actor_type"], event["changes"]
        implied = bool(follow)
        if follow:
            want_kind, name, before, after = follow.pop(0)
            assert kind == want_kind, (event, want_kind)
            assert changes[name]["from"] == before, event
            assert after is ANY or changes[name]["to"] == after, event
            assert (event["actor_id"], event["at"]) == (previous["actor_id"], previous["at"])
        if kind in ("customer_replied", "admin_replied"):
            side = "customer" if kind == "customer_replied" else "admin"
            assert actor == side
            if side == "customer":
                assert event["actor_id"] == row["customer_id"]
            reply = Event.CUSTOMER_REPLY if side == "customer" else Event.ADMIN_REPLY
            outcome = decide(Actor(side), reply, status)
            assert outcome.allowed and outcome.to is not None, (event, status)
            message = message_at[changes["messageId"]["to"]]
            assert (message["author_type"], message["author_id"]) == (side, event["actor_id"])
            assert message["created_at"] == event["at"]
            field_name = f"last{side.capitalize()}MessageAt"
            assert changes[field_name] == {"from": iso_ms(last[side]), "to": iso_ms(event["at"])}
            last[side] = event["at"]
            message_ids.append(message["id"])
            if outcome.to is not status:
                follow.append(("status_changed", "status", status.value, outcome.to.value))
            if outcome.assigns_replier and assignee is None:
                follow.append(("assignment_changed", "assignedAdminId", None, event["actor_id"]))
        elif kind == "status_changed":
            assert changes["status"]["from"] == status.value, event
            target = Status(changes["status"]["to"])
            if not implied:
                assert actor == "admin", event
                assert decide(Actor.ADMIN, SET_STATUS_EVENTS[target], status).allowed
                asked[event["actor_id"], "status", target.value] += 1
                if target is Status.RESOLVED:  # resolving always writes its note with it
                    follow.append(("resolution_note_set", "resolutionNote", None, ANY))
            if status is Status.RESOLVED:
                assert changes["resolvedAt"] == {"from": iso_ms(resolved_at), "to": None}
                assert changes["resolutionNote"] == {"from": note, "to": None}
                resolved_at, note = None, None
            else:
                assert "resolutionNote" not in changes
            if target is Status.RESOLVED:
                assert changes["resolvedAt"] == {"from": None, "to": iso_ms(event["at"])}
                resolved_at = event["at"]
            if target is Status.CLOSED:
                assert changes["closedAt"] == {"from": None, "to": iso_ms(event["at"])}
                closed_at = event["at"]
            status = target
        elif kind == "assignment_changed":
            assert actor == "admin" and decide(Actor.ADMIN, Event.ASSIGN, status).allowed
            assert changes["assignedAdminId"]["from"] == assignee, event
            assignee = changes["assignedAdminId"]["to"]
            if not implied:
                asked[event["actor_id"], "assignedAdminId", assignee] += 1
        elif kind == "resolution_note_set":
            assert actor == "admin" and decide(Actor.ADMIN, Event.SET_NOTE, status).allowed
            assert status is Status.RESOLVED, event
            assert changes["resolutionNote"]["from"] == note, event
            note = changes["resolutionNote"]["to"]
            assert note, event
            asked[event["actor_id"], "resolutionNote", note] += 1
        else:
            raise AssertionError(f"unexpected event {event}")
        if not follow:
            remember(event["at"])
        previous = event
    assert follow == [], f"request {request_id}: a reply's or resolve's change is missing"

    # The history ends in the stored row, and the row keeps every rule.
    assert (row["status"], row["assigned_admin_id"], row["resolution_note"]) == (
        status.value,
        assignee,
        note,
    )
    assert (row["resolved_at"], row["closed_at"]) == (resolved_at, closed_at)
    assert row["last_customer_message_at"] == last["customer"]
    assert row["last_admin_message_at"] == last["admin"]
    assert row["updated_at"] == events[-1]["at"]
    assert message_ids == history.message_ids, "a message without its event"
    assert (row["resolution_note"] is not None) is (row["status"] == "resolved")
    assert (row["resolved_at"] is not None) is (row["status"] == "resolved")
    assert (row["closed_at"] is not None) is (row["status"] == "closed")
    if closed_at is not None:
        assert all(m["created_at"] <= closed_at for m in messages), request_id
        assert events[-1]["type"] == "status_changed"
    return history


def _check_patches_asked_for(load: Load, histories: dict[int, History]) -> None:
    """Every admin change in the history is one some accepted PATCH asked for, once."""
    asked: dict[int, Counter[tuple[str, str, Any]]] = defaultdict(Counter)
    for exchange in load.exchanges:
        if exchange.kind != "admin-patch":
            continue
        assert exchange.request_id is not None
        if exchange.status == 200:
            data = exchange.json()["data"]
            for name, value in exchange.body.items():
                assert data[name] == value, exchange
                asked[exchange.request_id][exchange.who.sub, name, value] += 1
    for request_id, history in histories.items():
        surplus = history.asked - asked[request_id]
        assert not surplus, f"request {request_id}: changes nobody asked for: {surplus}"


def _check_snapshots(load: Load, stored: Stored, histories: dict[int, History]) -> None:
    """Each response showed one state of the request's serial history, whole (no torn read)."""
    for exchange in load.exchanges:
        if not 200 <= exchange.status < 300:
            if exchange.code in ("request_closed", "invalid_transition"):
                assert exchange.request_id is not None
                assert stored.requests[exchange.request_id]["status"] == "closed", exchange
            continue
        data = exchange.json()["data"]
        if exchange.kind == "events":
            seen = [e["id"] for e in data]
            assert seen == histories[exchange.request_id].event_ids[: len(seen)], exchange
            continue
        if exchange.kind == "admins":
            assert exchange.who.sub in {a["id"] for a in data}
            assert {a["id"] for a in data} <= set(load.staff_ids)
            continue
        for item in data if isinstance(data, list) else [data]:
            admin_view = "assignedAdminId" in item
            assert admin_view is exchange.kind.startswith("admin"), exchange
            assert (item["status"] == "resolved") is (item["resolutionNote"] is not None)
            assert (item["status"] == "resolved") is (item["resolvedAt"] is not None)
            assert (item["status"] == "closed") is (item["closedAt"] is not None)
            assigned = item["assignedAdminId"] if admin_view else item["isAssigned"]
            if admin_view:
                assert item["isAssigned"] is (assigned is not None)
            shown: tuple[Any, ...] = (
                item["status"],
                assigned,
                item["resolutionNote"],
                item["updatedAt"],
            )
            thread = "messages" in item
            if thread:
                shown += (tuple(m["id"] for m in item["messages"]),)
            history = histories[item["id"]]
            assert shown in history.shown(admin_view=admin_view, thread=thread), (
                "a state no serial order reaches",
                exchange,
                item,
            )


def _check_mobile_never_shows_a_uuid(load: Load, staff: list[Person]) -> None:
    uuid_pattern = re.compile(UUID_PATTERN.encode())
    for exchange in load.exchanges:
        if exchange.path.startswith("/api/mobile/"):
            assert not uuid_pattern.search(exchange.content), exchange
            for person in staff:
                assert person.sub.replace("-", "").encode() not in exchange.content


def _check_walks(load: Load, stored: Stored) -> None:
    """Lists: own requests only, filters kept; a walk shows each earlier request once."""
    for exchange in load.exchanges:
        if exchange.kind not in ("mobile-list", "final-walk", "admin-queue"):
            continue
        query = dict(httpx.URL(exchange.path).params)
        items = exchange.json()["data"]
        for item in items:
            row = stored.requests[item["id"]]
            if exchange.kind != "admin-queue":
                assert row["customer_id"] == exchange.who.sub, exchange
            if "status" in query:
                assert item["status"] == query["status"], exchange
            if "category" in query:
                assert item["category"] == query["category"], exchange
            if "assigned" in query:
                assert item["isAssigned"] is (query["assigned"] == "true"), exchange
            if "assigneeId" in query:
                assert item["assignedAdminId"] == query["assigneeId"], exchange
        assert len(items) <= int(query["limit"])
    assert load.walks
    for walk in load.walks:
        seen = [item["id"] for page in walk.pages for item in page.json()["data"]]
        assert len(seen) == len(set(seen)), ("a request shown twice", walk.pages)
        assert walk.known_before <= set(seen), ("a request missing", walk.pages)
        created = [stored.requests[i]["created_at"] for i in seen]
        assert created == sorted(created, reverse=True)


def _check_final_walks(load: Load, stored: Stored) -> None:
    """Once quiet, each customer's list, page by page across both processes, is exact."""
    assert len(load.final_walks) == CUSTOMERS
    for walk in load.final_walks:
        mine = sorted(
            (r for r in stored.requests.values() if r["customer_id"] == walk.who.sub),
            key=lambda r: (r["created_at"], r["id"]),
            reverse=True,
        )
        assert {r["id"] for r in mine} == set(load.owned[walk.who.sub])
        seen = [item["id"] for page in walk.pages for item in page.json()["data"]]
        assert seen == [r["id"] for r in mine], walk.who
        assert {page.server for page in walk.pages} == set(range(SERVERS)) or len(walk.pages) == 1


def _check_rate_limits_are_shared(load: Load) -> None:
    """One budget per caller across processes: no remaining count is handed out twice."""
    given: dict[tuple[str, str, int], list[int]] = defaultdict(list)
    for exchange in load.exchanges:
        remaining = exchange.headers.get("ratelimit-remaining")
        if remaining is None:
            continue
        window = int(exchange.sent // RATE_WINDOW_SECONDS)
        if window != int(exchange.received // RATE_WINDOW_SECONDS):
            continue  # the count may fall into either window
        kind = "reads" if exchange.method == "GET" else "writes"
        given[exchange.who.sub, kind, window].append(int(remaining))
    assert sum(map(len, given.values())) > len(load.exchanges) // 2
    for caller, counts in given.items():
        repeated = [n for n, times in Counter(counts).items() if times > 1]
        assert not repeated, f"{caller}: the same budget counted twice: {repeated}"


def _check_servers_shared_the_load_and_logged_it(servers: list[Server], load: Load) -> None:
    calls = Counter(e.server for e in load.exchanges)
    for index, server in enumerate(servers):
        assert calls[index] > len(load.exchanges) / (2 * SERVERS), calls
        lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        assert not [line for line in lines if line["level"] in ("error", "critical")]
        requests = [line for line in lines if line["message"] == "request"]
        api = [line for line in requests if line["route"].startswith("/api/")]
        assert len(api) == calls[index], (len(api), calls[index])
        assert all(line["status"] < 500 for line in requests)
        assert {"requestId", "method", "route", "status", "durationMs", "sub"} <= set(api[0])
