"""Race-freedom with real server processes on one database.

Many clients hit the same request at the same moment through two uvicorn
processes: customer replies, admin replies, status and assignee changes and a
close. Whatever the interleaving, the stored result must be one a serial order
of the accepted calls produces:

- no 5xx; every reply is 201 or 400 ``request_closed``; nothing else is refused
  unless the lifecycle says so;
- the stored messages are exactly the 201 replies, none later than ``closedAt``;
- replaying the events through the lifecycle table, oldest first, is legal at
  every step and ends in the stored row; each 2xx response shows a state of that
  serial history.

PostgreSQL takes the full load (48 clients, several rounds); SQLite a lighter one.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from support_requests.domain.clock import iso_ms
from support_requests.domain.lifecycle import SET_STATUS_EVENTS, Actor, Event, Status, decide
from tests.helpers import ADMIN, MOBILE, admin, admin_id_of, customer, stored_request, stored_rows
from tests.servers import Server, migrated_database, running_servers

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Scale:
    servers: int
    clients: int
    rounds: int


SCALES = {
    "postgresql": Scale(servers=2, clients=48, rounds=5),
    "sqlite": Scale(servers=2, clients=16, rounds=3),
}


@dataclass
class Call:
    """One HTTP call of a race, and what came back."""

    kind: str
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None = None
    status: int = 0
    answer: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str | None:
        return self.body.get("body") if self.body else None


@pytest.fixture
def servers(database_url: str, tmp_path: Path) -> Iterator[list[Server]]:
    backend = make_url(database_url).get_backend_name()
    migrated_database(database_url)
    with running_servers(
        database_url, tmp_path / "servers", count=SCALES[backend].servers
    ) as running:
        yield running


def _scale(database_url: str) -> Scale:
    return SCALES[make_url(database_url).get_backend_name()]


async def _fire(servers: list[Server], calls: list[Call]) -> None:
    """Send every call at once, spread over the servers, and record each answer."""
    gate = asyncio.Event()
    limits = httpx.Limits(max_connections=len(calls), max_keepalive_connections=len(calls))
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=server.url, timeout=60.0, limits=limits)
            )
            for server in servers
        ]

        async def send(index: int, call: Call) -> None:
            client = clients[index % len(clients)]
            await gate.wait()
            response = await client.request(
                call.method, call.path, json=call.body, headers=call.headers
            )
            call.status = response.status_code
            call.answer = response.json()

        tasks = [asyncio.create_task(send(index, call)) for index, call in enumerate(calls)]
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(*tasks)


def _sync(servers: list[Server], method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(method, f"{servers[0].url}{path}", timeout=30.0, **kwargs)
    assert response.status_code < 300, response.text
    return response.json()


def _known_admins(servers: list[Server], count: int) -> list[dict[str, str]]:
    """Admins the service has seen (each called the admins list once)."""
    staff = [admin(name=f"Agent {n}") for n in range(count)]
    for headers in staff:
        _sync(servers, "GET", "/api/admin/admins", headers=headers)
    return staff


def _replay(events: list[dict[str, Any]], customer_id: str) -> list[tuple[str, str | None, int]]:
    """Walk the events through the lifecycle table; the states (status, assignee, messages)
    of the serial history they describe, first to last. Fails on any illegal step."""
    assert events[0]["type"] == "created"
    assert events[0]["actor"] == {"type": "customer", "id": customer_id}
    status, assignee, messages = Status.OPEN, None, 1
    states = [(status.value, assignee, messages)]
    expected_next: list[tuple[str, Any, Any]] = []
    ats = [event["at"] for event in events]
    assert ats == sorted(ats), "events are not in time order"
    for event in events[1:]:
        kind, actor, changes = event["type"], event["actor"], event["changes"]
        if expected_next:
            want_kind, want_from, want_to = expected_next.pop(0)
            field_name = "status" if want_kind == "status_changed" else "assignedAdminId"
            assert kind == want_kind, (event, want_kind)
            assert changes[field_name] == {"from": want_from, "to": want_to}, event
        if kind in ("customer_replied", "admin_replied"):
            who = Actor(actor["type"])
            reply = Event.CUSTOMER_REPLY if who is Actor.CUSTOMER else Event.ADMIN_REPLY
            outcome = decide(who, reply, status)
            assert outcome.allowed, f"{kind} accepted on {status}"
            assert outcome.to is not None
            messages += 1
            if outcome.to is not status:
                expected_next.append(("status_changed", status.value, outcome.to.value))
            if outcome.assigns_replier and assignee is None:
                expected_next.append(("assignment_changed", None, actor["id"]))
        elif kind == "status_changed":
            assert changes["status"]["from"] == status.value, event
            target = Status(changes["status"]["to"])
            if actor["type"] == "admin":
                assert decide(Actor.ADMIN, SET_STATUS_EVENTS[target], status).allowed
            status = target
        elif kind == "assignment_changed":
            assert actor["type"] == "admin"
            assert decide(Actor.ADMIN, Event.ASSIGN, status).allowed
            assert changes["assignedAdminId"]["from"] == assignee, event
            assignee = changes["assignedAdminId"]["to"]
        elif kind == "resolution_note_set":
            assert decide(Actor.ADMIN, Event.SET_NOTE, status).allowed
            assert status is Status.RESOLVED
        else:
            raise AssertionError(f"unexpected event {event}")
        states.append((status.value, assignee, messages))
    assert expected_next == [], "a reply's status or assignment change is missing"
    return states


def _check_consistent(
    db: Any, servers: list[Server], request_id: int, owner: dict[str, str], calls: list[Call]
) -> dict[str, Any]:
    """The checks every race shares; returns the stored row."""
    assert [c for c in calls if c.status >= 500 or c.status == 0] == []
    stored = stored_request(db, request_id)
    messages = stored_rows(db, "messages", request_id)
    events = _sync(servers, "GET", f"{ADMIN}/{request_id}/events", headers=admin())["data"]
    assert len(events) == len(stored_rows(db, "request_events", request_id))

    replies = [c for c in calls if c.kind.endswith("reply")]
    for call in replies:
        if call.status != 201:
            assert (call.status, call.answer["code"]) == (400, "request_closed"), call
    accepted = [c.text for c in replies if c.status == 201]
    assert sorted(m["body"] for m in messages[1:]) == sorted(accepted)
    for call in replies:
        if call.status == 201:
            [mine] = [m for m in call.answer["data"]["messages"] if m["body"] == call.text]
            [row] = [m for m in messages if m["body"] == call.text]
            assert mine["id"] == row["id"]
            assert mine["authorType"] == call.kind.split("-")[0]
    for side in ("customer", "admin"):
        times = [m["created_at"] for m in messages if m["author_type"] == side]
        assert stored[f"last_{side}_message_at"] == (max(times) if times else None)

    customer_id = admin_id_of(owner)  # the token's sub
    states = _replay(events, customer_id)
    assert states[-1] == (stored["status"], stored["assigned_admin_id"], len(messages))
    assert iso_ms(stored["updated_at"]) == events[-1]["at"]
    reply_ids = [
        e["changes"]["messageId"]["to"]
        for e in events
        if e["type"] in ("customer_replied", "admin_replied")
    ]
    assert reply_ids == [m["id"] for m in messages[1:]]
    for call in calls:
        if 200 <= call.status < 300:
            data = call.answer["data"]
            seen = (data["status"], data.get("assignedAdminId"), len(data["messages"]))
            if call.kind.startswith("customer"):
                candidates = {(s, m) for s, _, m in states}
                assert (seen[0], seen[2]) in candidates, call
            else:
                assert seen in states, call
    status = Status(stored["status"])
    assert (stored["resolved_at"] is not None) is (status is Status.RESOLVED)
    assert (stored["resolution_note"] is not None) is (status is Status.RESOLVED)
    assert (stored["closed_at"] is not None) is (status is Status.CLOSED)
    if status is Status.CLOSED:
        assert all(m["created_at"] <= stored["closed_at"] for m in messages)
        assert events[-1]["type"] == "status_changed"
        assert events[-1]["changes"]["status"]["to"] == "closed"
        assert events[-1]["at"] == iso_ms(stored["closed_at"])
    return stored


def _reply(kind: str, request_id: int, headers: dict[str, str], text: str) -> Call:
    base = MOBILE if kind == "customer-reply" else ADMIN
    return Call(kind, "POST", f"{base}/{request_id}/messages", headers, {"body": text})


def _patch(kind: str, request_id: int, headers: dict[str, str], body: dict[str, Any]) -> Call:
    return Call(kind, "PATCH", f"{ADMIN}/{request_id}", headers, body)


def _open_request(servers: list[Server], owner: dict[str, str], round_no: int) -> int:
    body = {"category": "technical", "subject": f"Race {round_no}", "message": "It crashes."}
    return int(_sync(servers, "POST", MOBILE, json=body, headers=owner)["data"]["id"])


def test_reply_and_close_racing_never_store_a_message_after_the_close(
    servers: list[Server], database_url: str, db: Any
) -> None:
    scale = _scale(database_url)
    rng = random.Random(20260317)
    staff = _known_admins(servers, 3)
    outcomes: list[int] = []
    for round_no in range(scale.rounds):
        owner = customer(name="Racing Customer")
        request_id = _open_request(servers, owner, round_no)
        calls = []
        for n in range(scale.clients - 1):
            token = uuid.uuid4().hex[:8]
            if n % 2:
                calls.append(_reply("customer-reply", request_id, owner, f"c{n} {token}"))
            else:
                calls.append(_reply("admin-reply", request_id, rng.choice(staff), f"a{n} {token}"))
        close = _patch("close", request_id, rng.choice(staff), {"status": "closed"})
        calls.insert(rng.randrange(len(calls) // 4, 3 * len(calls) // 4), close)

        asyncio.run(_fire(servers, calls))

        assert close.status == 200, close.answer
        stored = _check_consistent(db, servers, request_id, owner, calls)
        assert stored["status"] == "closed"
        assert close.answer["data"]["closedAt"] == iso_ms(stored["closed_at"])
        late = [c for c in calls if c.status == 400]
        kept = [c for c in calls if c.status == 201]
        assert len(late) + len(kept) == scale.clients - 1
        for call in kept:
            assert call.answer["data"]["status"] != "closed"
            assert call.answer["data"]["closedAt"] is None
        outcomes += [c.status for c in calls]
    # The harness itself: the close really landed among the replies, not before or after all.
    assert 201 in outcomes and 400 in outcomes, outcomes


def test_concurrent_changes_end_in_a_state_some_serial_order_reaches(
    servers: list[Server], database_url: str, db: Any
) -> None:
    scale = _scale(database_url)
    rng = random.Random(4242)
    staff = _known_admins(servers, 3)
    staff_ids = [admin_id_of(headers) for headers in staff]
    for round_no in range(scale.rounds):
        owner = customer(name="Busy Customer")
        request_id = _open_request(servers, owner, round_no)
        calls: list[Call] = []
        for n in range(scale.clients):
            headers = rng.choice(staff)
            choice = n % 8
            if choice == 0:
                calls.append(_reply("customer-reply", request_id, owner, f"c{n} {uuid.uuid4()}"))
            elif choice == 1:
                calls.append(_reply("admin-reply", request_id, headers, f"a{n} {uuid.uuid4()}"))
            elif choice == 2:
                body = {"status": "resolved", "resolutionNote": f"Fixed by change {n}."}
                calls.append(_patch("resolve", request_id, headers, body))
            elif choice == 3:
                calls.append(_patch("note", request_id, headers, {"resolutionNote": f"Note {n}"}))
            elif choice == 4:
                body = {"assignedAdminId": rng.choice([*staff_ids, None])}
                calls.append(_patch("assign", request_id, headers, body))
            else:
                target = rng.choice(["open", "in_progress"])
                calls.append(_patch(f"status-{target}", request_id, headers, {"status": target}))
        if round_no % 2:
            calls.insert(
                rng.randrange(len(calls)),
                _patch("close", request_id, staff[0], {"status": "closed"}),
            )

        asyncio.run(_fire(servers, calls))

        stored = _check_consistent(db, servers, request_id, owner, calls)
        closed = stored["status"] == "closed"
        for call in calls:
            if call.kind == "note":
                # Legal only while resolved (422 otherwise) and before a close (409).
                assert call.status in (200, 409, 422), call
                if call.status == 200:
                    assert call.answer["data"]["resolutionNote"] == call.body["resolutionNote"]
            elif call.kind.endswith("reply"):
                assert call.status in (201, 400), call
            else:
                assert call.status in (200, 409), call
            if call.status in (400, 409):
                assert closed, call
        for call in calls:
            if call.kind.startswith("status-") and call.status == 200:
                assert call.answer["data"]["status"] == call.body["status"]
            if call.kind == "assign" and call.status == 200:
                assert call.answer["data"]["assignedAdminId"] == call.body["assignedAdminId"]
