"""A real webhook receiver on 127.0.0.1 for tests, and a lookup that never leaves the machine.

``receiving(secret)`` serves HTTP in a thread of this process until the block ends. Each
delivery is verified with ``standardwebhooks.Webhook(secret).verify`` (a delivery that does
not verify is recorded with ``verified=False`` and answered 401) and recorded: webhook-id,
type, body, ``Host``, when it arrived. What it answers is scripted: ``respond`` gets the
delivery and how many times this webhook-id arrived before, and returns a ``Reply``.

``lookup_table({"hooks.example.test": ["127.0.0.1"]})``: an ``addresses.Lookup`` that answers
from the table and raises ``OSError`` for any other name, so no DNS query leaves the machine.
"""

from __future__ import annotations

import dataclasses
import json
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from standardwebhooks import Webhook, WebhookVerificationError

from support_requests.domain.clock import now_ms
from support_requests.domain.webhooks import CREATED, EVENT_TYPES
from support_requests.storage import outbox
from support_requests.storage.database import Database
from support_requests.storage.outbox import Event, deliveries_table, endpoints_table, events_table
from support_requests.webhooks.addresses import Lookup
from support_requests.webhooks.secrets import SecretBox


@dataclass(frozen=True)
class Reply:
    """What the receiver answers: a status after ``delay`` seconds, with ``headers``."""

    status: int = 200
    delay: float = 0.0
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Received:
    """One delivery as it arrived."""

    webhook_id: str
    type: str | None
    body: bytes
    host: str | None
    headers: dict[str, str]
    verified: bool
    attempt: int  # 1 for the first time this webhook-id arrived
    at: float  # time.monotonic()
    status: int  # what the receiver answered


Respond = Callable[[Received], Reply]


def always(status: int, delay: float = 0.0) -> Respond:
    """Answer every delivery with ``status`` (after ``delay``)."""
    return lambda _received: Reply(status, delay)


def by_attempt(statuses: Sequence[int], delay: float = 0.0) -> Respond:
    """The n-th arrival of each webhook-id gets ``statuses[n-1]`` (the last one after that)."""
    return lambda received: Reply(statuses[min(received.attempt, len(statuses)) - 1], delay)


class Receiver:
    """The receiving server's state; its URL is ``url`` (``http://127.0.0.1:PORT``)."""

    def __init__(self, secret: str, respond: Respond) -> None:
        self.secret = secret
        self.respond = respond
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._arrivals: dict[str, int] = {}
        self.url = ""

    def record(self, headers: dict[str, str], body: bytes) -> tuple[Received, Reply]:
        try:
            Webhook(self.secret).verify(body, headers)
            verified = True
        except WebhookVerificationError:
            verified = False
        webhook_id = headers.get("webhook-id", "")
        try:
            event_type = json.loads(body).get("type")
        except ValueError:
            event_type = None
        with self._lock:
            attempt = self._arrivals[webhook_id] = self._arrivals.get(webhook_id, 0) + 1
        arrived = Received(
            webhook_id,
            event_type,
            body,
            headers.get("host"),
            headers,
            verified,
            attempt,
            time.monotonic(),
            0,
        )
        reply = self.respond(arrived) if verified else Reply(401)
        with self._lock:
            self.received.append(dataclasses.replace(arrived, status=reply.status))
        return arrived, reply

    def ids(self) -> list[str]:
        """The webhook-ids received, in arrival order (repeats included)."""
        with self._lock:
            return [received.webhook_id for received in self.received]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Every delivery once at least ``count`` arrived (AssertionError after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.01)
        raise AssertionError(f"{len(self.received)} deliveries arrived, expected {count}")


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            headers = {name.lower(): value for name, value in self.headers.items()}
            _, reply = receiver.record(headers, body)
            if reply.delay:
                time.sleep(reply.delay)
            answer = b'{"ok":true}'
            try:
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            except OSError:
                pass  # the sender gave up (a timeout) and closed the connection

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A sender that went away (killed, timed out) is not the test's failure."""


@contextmanager
def receiving(
    secret: str, respond: Respond | None = None, *, tls: ssl.SSLContext | None = None
) -> Iterator[Receiver]:
    """A receiver on a free loopback port until the block ends (https with ``tls``)."""
    receiver = Receiver(secret, respond or always(200))
    server = _Server(("127.0.0.1", 0), _handler(receiver))
    scheme = "http"
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    receiver.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def lookup_table(table: Mapping[str, list[str]], asked: list[str] | None = None) -> Lookup:
    """A lookup answering from ``table`` (names it lacks do not resolve); each name asked
    is appended to ``asked``."""

    async def lookup(host: str, port: int) -> list[str]:
        if asked is not None:
            asked.append(host)
        if host not in table:
            raise OSError(f"{host} is not in the test's table")
        return list(table[host])

    return lookup


# -- the outbox's rows, written and read as the tests need them --------------------------


def add_endpoint(
    db: sa.Engine,
    url: str,
    secret: str,
    *,
    events: Sequence[str] = EVENT_TYPES,
    key: bytes | None = None,
    enabled: bool = True,
) -> str:
    """An endpoint row written directly (no API, no URL check), its secret sealed with
    ``key`` when given; its id."""
    endpoint_id = "we_" + uuid.uuid4().hex[:20]
    now = now_ms()
    with db.begin() as connection:
        connection.execute(
            sa.insert(endpoints_table).values(
                id=endpoint_id,
                url=url,
                description=None,
                events=list(events),
                secret=SecretBox(key).seal(secret),
                enabled=enabled,
                disabled_reason=None,
                created_by="test",
                created_at=now,
                updated_at=now,
            )
        )
    return endpoint_id


async def enqueue(
    database: Database, events: Sequence[Event], at: datetime | None = None, **options: Any
) -> int:
    """``events`` through the outbox (``options`` as ``outbox.enqueue`` takes them), in one
    transaction; the deliveries written."""
    async with database.writing() as connection:
        return await outbox.enqueue(connection, events, at or now_ms(), **options)


def request_event(request_id: int, event_type: str = CREATED, **data: Any) -> Event:
    """An event of request ``request_id`` (its deliveries keep the request's order)."""
    customer = f"customer-{request_id}"
    payload = {"requestId": request_id, "customerId": customer, **data}
    return Event(event_type, payload, request_id=request_id, customer_id=customer)


def stored_deliveries(db: sa.Engine) -> list[dict[str, Any]]:
    """Every delivery row with its event's webhook-id (``public_id``), in id order."""
    query = (
        sa.select(deliveries_table, events_table.c.public_id, events_table.c.body)
        .join(events_table, events_table.c.id == deliveries_table.c.event_id)
        .order_by(deliveries_table.c.id)
    )
    with db.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def stored_endpoint(db: sa.Engine, endpoint_id: str) -> dict[str, Any]:
    """The endpoint's row."""
    with db.connect() as connection:
        row = connection.execute(
            sa.select(endpoints_table).where(endpoints_table.c.id == endpoint_id)
        ).one()
    return dict(row._mapping)


# -- TLS: a certificate authority of the test's own ------------------------------------


@dataclass(frozen=True)
class Certificates:
    """A CA the client trusts (``client``) and a server context whose certificate names
    ``names`` (``server``)."""

    client: ssl.SSLContext
    server: ssl.SSLContext


def certificates(tmp_path: Path, *names: str) -> Certificates:
    """A fresh CA and a certificate it signed for ``names``, as SSL contexts."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("test CA"))
        .issuer_name(name("test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name(names[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    chain = tmp_path / "server.pem"
    chain.write_bytes(
        leaf.public_bytes(pem)
        + key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(chain)
    client = ssl.create_default_context(cadata=ca.public_bytes(pem).decode())
    return Certificates(client, server)
