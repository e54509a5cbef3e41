"""A several-hosts rehearsal: two `supportctl serve` processes on different ports and two
`supportctl worker` processes, one PostgreSQL, one Redis, 50 clients spread over both
servers running the lifecycle with attachments, devices and webhooks.

No lost or duplicated message or delivery; deliveries signed and in order per request; the
rate-limit budget shared by both servers; and each process's `/metrics` adds up to the
traffic sent (servers) and the deliveries made (workers).
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
from collections import Counter, defaultdict
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from support_requests.storage.database import sync_url
from tests.conftest import PG_URL, REDIS_URL, reset_pg
from tests.helpers import ADMIN, MOBILE, admin, customer
from tests.servers import (
    free_port,
    migrated_database,
    server_environment,
    supportctl_server,
    worker_processes,
)
from tests.webhook_receiver import receiving

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.skipif(not PG_URL, reason="several hosts share PostgreSQL: SUPPORT_TEST_PG_URL"),
]

CLIENTS = 50
TOKEN = "several-hosts-metrics-token"
READS_PER_HOUR = 120
EVENTS = [
    "support_request.created",
    "support_request.message_created",
    "support_request.status_changed",
    "support_request.assigned",
    "notification.push",
]


def _png() -> bytes:
    image = io.BytesIO()
    Image.new("RGB", (48, 32), (250, 120, 20)).save(image, format="PNG")
    return image.getvalue()


class Traffic:
    """Every call the clients made: its operation id and status."""

    def __init__(self, servers: list[str]) -> None:
        self.clients = [httpx.AsyncClient(base_url=url, timeout=60) for url in servers]
        self.sent: Counter[tuple[str, int]] = Counter()

    async def call(self, server: int, operation: str, method: str, path: str, **kw: Any) -> Any:
        response = await self.clients[server % len(self.clients)].request(method, path, **kw)
        self.sent[operation, response.status_code] += 1
        assert response.status_code < 500, (operation, response.text)
        return response

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()


async def _lifecycle(traffic: Traffic, index: int, staff: dict[str, str], png: bytes) -> int:
    """One customer's whole story, its calls spread over both servers; the request's id."""
    alice = customer(name=f"Customer {index}")
    s = index  # the server of the first call; every next call goes to the other one
    upload = await traffic.call(
        s, "uploadAttachment", "POST", "/api/mobile/attachments",
        files={"file": (f"shot-{index}.png", png)}, headers=alice,
    )  # fmt: skip
    assert upload.status_code == 201
    device = await traffic.call(
        s + 1, "registerDevice", "POST", "/api/mobile/devices",
        json={"platform": "android", "token": f"fcm-{uuid.uuid4().hex}"}, headers=alice,
    )  # fmt: skip
    assert device.status_code == 201
    created = await traffic.call(
        s, "createSupportRequest", "POST", MOBILE,
        json={"category": "technical", "subject": f"Rehearsal {index}", "message": f"m {index}/0",
              "attachments": [upload.json()["data"]["id"]]},
        headers={**alice, "Idempotency-Key": f"create-{index}"},
    )  # fmt: skip
    assert created.status_code == 201, created.text
    request_id = int(created.json()["data"]["id"])
    thread = f"{MOBILE}/{request_id}"
    staff_reply = await traffic.call(
        s + 1, "adminReplyToSupportRequest", "POST", f"{ADMIN}/{request_id}/messages",
        json={"body": f"s {index}/1"}, headers={**staff, "Idempotency-Key": f"staff-{index}"},
    )  # fmt: skip
    assert staff_reply.status_code == 201
    for n in (2, 3):
        reply = await traffic.call(
            s + n, "replyToSupportRequest", "POST", f"{thread}/messages",
            json={"body": f"m {index}/{n}"}, headers={**alice, "Idempotency-Key": f"r-{index}-{n}"},
        )  # fmt: skip
        assert reply.status_code == 201
    detail = await traffic.call(s + 1, "getSupportRequest", "GET", thread, headers=alice)
    assert detail.status_code == 200
    file = detail.json()["data"]["messages"][0]["attachments"][0]["url"]
    download = await traffic.call(s, "downloadAttachment", "GET", file, headers=alice)
    assert download.status_code == 200 and download.content.startswith(b"\x89PNG")
    read = await traffic.call(s + 1, "markSupportRequestRead", "POST", f"{thread}/read",
                              json={}, headers=alice)  # fmt: skip
    assert read.status_code == 200
    return request_id


async def _greedy(traffic: Traffic) -> list[int]:
    """One caller's reads, alternating servers, past the hourly budget (in one window)."""
    while True:
        greedy = customer(name="Greedy")
        started = time.time()
        statuses = [
            (
                await traffic.call(i, "listSupportRequests", "GET", MOBILE, headers=greedy)
            ).status_code
            for i in range(READS_PER_HOUR + 30)
        ]
        if int(started // 3600) == int(time.time() // 3600):
            return statuses


def _scrape(url: str, headers: dict[str, str] | None = None) -> dict[tuple[str, tuple], float]:
    text = httpx.get(f"{url}/metrics", headers=headers, timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_two_servers_and_two_workers_on_one_postgresql_and_redis(tmp_path: Path) -> None:
    assert PG_URL is not None
    reset_pg(PG_URL)
    migrated_database(PG_URL)
    key = "several-hosts-key-" + "k" * 20
    env = server_environment(
        PG_URL,
        tmp_path,
        SUPPORT_REDIS_URL=REDIS_URL,
        SUPPORT_METRICS_TOKEN=TOKEN,
        SUPPORT_SECRET_KEY=key,
        SUPPORT_WEBHOOK_ALLOW_PRIVATE="1",
        SUPPORT_WEBHOOK_ALLOW_HTTP="1",
        SUPPORT_WEBHOOK_WORKER="0",
        SUPPORT_RATE_LIMIT_READS=f"{READS_PER_HOUR}/hour",
        SUPPORT_RATE_LIMIT_WRITES="3000/minute",
    )
    worker_ports = [free_port(), free_port()]
    staff = admin(name="Rehearsal Agent")
    png = _png()
    with ExitStack() as stack:
        receiver = stack.enter_context(receiving("whsec_" + "A" * 32))
        servers = []
        for index in range(2):
            workdir = tmp_path / f"server-{index}"
            workdir.mkdir()
            servers.append(stack.enter_context(supportctl_server(env, workdir)))
        stack.enter_context(
            worker_processes(
                env, tmp_path, [["--metrics-port", str(port)] for port in worker_ports]
            )
        )
        added = httpx.post(
            f"{servers[1].url}/api/admin/webhooks",
            json={"url": f"{receiver.url}/hooks", "events": EVENTS},
            headers=staff,
            timeout=30,
        )
        assert added.status_code == 201, added.text
        receiver.secret = added.json()["data"]["secret"]

        async def run() -> tuple[Traffic, list[int], list[int]]:
            traffic = Traffic([server.url for server in servers])
            try:
                ids = await asyncio.gather(
                    *(_lifecycle(traffic, i, staff, png) for i in range(CLIENTS))
                )
                greedy = await _greedy(traffic)
            finally:
                await traffic.close()
            return traffic, list(ids), greedy

        traffic, request_ids, greedy = asyncio.run(run())
        engine = sa.create_engine(sync_url(PG_URL), poolclass=sa.NullPool)
        stack.callback(engine.dispose)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with engine.connect() as connection:
                pending = connection.execute(
                    sa.text("SELECT count(*) FROM webhook_deliveries WHERE status <> 'succeeded'")
                ).scalar_one()
            if pending == 0:
                break
            time.sleep(0.2)
        assert pending == 0
        server_metrics = [_scrape(s.url, {"Authorization": f"Bearer {TOKEN}"}) for s in servers]
        worker_metrics = [_scrape(f"http://127.0.0.1:{port}") for port in worker_ports]
        with engine.connect() as connection:
            bodies = Counter(connection.execute(sa.text("SELECT body FROM messages")).scalars())
            events = dict(
                connection.execute(sa.text("SELECT public_id, id FROM webhook_events")).all()
            )
        received = list(receiver.received)

    # Every message once.
    expected = {f"m {i}/{n}" for i in range(CLIENTS) for n in (0, 2, 3)} | {
        f"s {i}/1" for i in range(CLIENTS)
    }
    assert set(bodies) == expected and set(bodies.values()) == {1}
    # Every delivery once, signed, and in order per request.
    assert all(arrived.verified for arrived in received)
    ids = [arrived.webhook_id for arrived in received]
    assert len(ids) == len(set(ids)) == len(events)
    per_type = Counter(json.loads(arrived.body)["type"] for arrived in received)
    assert per_type == Counter(
        {
            "support_request.created": CLIENTS,
            "support_request.message_created": 3 * CLIENTS,
            "support_request.status_changed": CLIENTS,
            "support_request.assigned": CLIENTS,
            "notification.push": CLIENTS,
        }
    )
    order: dict[int, list[int]] = defaultdict(list)
    for arrived in received:
        order[json.loads(arrived.body)["data"]["requestId"]].append(events[arrived.webhook_id])
    assert set(order) == set(request_ids)
    assert all(seen == sorted(seen) for seen in order.values())
    # One read budget for both servers.
    assert Counter(greedy) == Counter({200: READS_PER_HOUR, 429: 30})
    # The servers' /metrics add up to what the clients were answered.
    answered: Counter[tuple[str, str]] = Counter()
    for (operation, status), count in traffic.sent.items():
        answered[operation, f"{status // 100}xx"] += count
    for (operation, status_class), count in answered.items():
        labels = (("operation", operation), ("status_class", status_class))
        counted = sum(m.get(("support_http_requests_total", labels), 0) for m in server_metrics)
        assert counted == count, (operation, status_class, counted, count)
    assert all(
        m.get(("support_http_requests_total", (("operation", "createSupportRequest"),
                                                ("status_class", "2xx"))), 0) > 0
        for m in server_metrics
    )  # fmt: skip
    succeeded = (("outcome", "succeeded"),)
    delivered = [m.get(("support_webhook_deliveries_total", succeeded), 0) for m in worker_metrics]
    assert sum(delivered) == len(received)
    print(f"\n{sum(traffic.sent.values())} calls; deliveries by worker: {delivered}")
