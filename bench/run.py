#!/usr/bin/env python3
"""Load-test a support-requests deployment with wrk; print a table and write JSON.

Point it at a running deployment, with the deployment's HS256 secret (or ready tokens):

    SUPPORT_JWT_SECRET=... python bench/run.py --url https://support.staging.example.com
    python bench/run.py --url http://127.0.0.1:8080 --customer-token T --admin-token A

or let it start ``supportctl serve`` itself on a free loopback port, on a fresh SQLite
file (or a fresh PostgreSQL database next to ``--pg``), and stop it afterwards:

    python bench/run.py --start
    python bench/run.py --start --pg postgresql://postgres@127.0.0.1:5432/postgres

It seeds through the API only (customers x requests each, plus one "hot" request with a
longer thread), then runs each scenario under wrk (``bench/lua/requests.lua`` replays a
list of requests, each with its own customer's token). ``--preload N`` first writes N
other requests straight into the database (``bench/preload.py``) for the scale case.
See bench/README.md ("The benchmark: run.py"). Run it with the project's Python environment.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt

HERE = Path(__file__).resolve().parent
LUA_SCRIPT = HERE / "lua" / "requests.lua"
MOBILE = "/api/mobile/support-requests"
ADMIN_QUEUE = "/api/admin/support-requests"
ATTACHMENTS = "/api/mobile/attachments"
UNREAD = "/api/mobile/unread"
# Staff replies to customer 0's seeded requests before the `unread` scenario, so that the
# badge it reads counts something.
UNREAD_SEEDED = 10
SCENARIOS = (
    "detail",
    "unread",
    "revalidate",
    "list",
    "queue",
    "create",
    "reply",
    "upload",
    "download",
    "download-304",
    "queue-platform",
    "queue-app-version",
    "queue-tag",
    "queue-rated",
    "queue-max-score",
    "create-keyed",
    "reply-keyed",
)
# Distinct keys written per keyed scenario: more than wrk sends in a run, so none repeats.
KEYED_CALLS = 60_000
# The attachment scenarios move a MiB per request: run them when asked for.
DEFAULT_SCENARIOS = SCENARIOS[:7]
# The queue filtered as staff filter it, each by its own index: values the preloaded rows
# (bench/preload.py) hold; run them with --preload, when asked for.
QUEUE_FILTERS = {
    "queue-platform": "platform=android",
    "queue-app-version": "appVersion=4.7.2",
    "queue-tag": "tag=bug-ios",
    "queue-rated": "rated=true",
    "queue-max-score": "maxScore=2",
}
ATTACHMENT_SCENARIOS = ("upload", "download", "download-304")
UPLOAD_PNG_SIDE = 512  # RGBA noise: a 1 MiB PNG
CATEGORIES = ("account", "payment", "technical", "other")
LIST_LIMIT = 20
REPLY = "One more detail from the customer side."
SECRET_OPTIONS = ("--secret", "--customer-token", "--admin-token")


class BenchError(Exception):
    """The benchmark cannot go on; the message says why."""


def log(message: str) -> None:
    """Progress goes to stderr; the table goes to stdout."""
    print(message, file=sys.stderr, flush=True)


# -- tokens ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Minter:
    """HS256 tokens the deployment accepts: its secret, and its iss/aud when it checks them."""

    secret: str
    issuer: str | None = None
    audience: str | None = None
    ttl_seconds: int = 6 * 3600

    def token(self, sub: str, name: str, *, admin: bool = False) -> str:
        """A token for ``sub`` with ``name`` (and ``role: admin`` for staff)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": sub,
            "name": name,
            "iat": now,
            "exp": now + self.ttl_seconds,
        }
        if admin:
            claims["role"] = "admin"
        if self.issuer:
            claims["iss"] = self.issuer
        if self.audience:
            claims["aud"] = self.audience
        return jwt.encode(claims, self.secret, algorithm="HS256")


@dataclass(frozen=True)
class Callers:
    """The customers' tokens (index 0 owns the hot request) and the admin's, if any."""

    customers: list[str]
    admin: str | None


def callers(args: argparse.Namespace, secret: str | None, run_id: str) -> Callers:
    """Per-customer tokens minted with the secret, or the single tokens given."""
    if args.customer_token:
        return Callers([args.customer_token], args.admin_token)
    if not secret:
        raise BenchError(
            "no way to make tokens: set SUPPORT_JWT_SECRET (or --secret) to the deployment's "
            "HS256 secret, or give --customer-token (and --admin-token)"
        )
    minter = Minter(secret, args.issuer, args.audience)
    customers = [
        minter.token(f"bench-{run_id}-{n:04d}", f"Bench Customer {n}")
        for n in range(args.customers)
    ]
    admin = args.admin_token or minter.token(str(uuid.uuid4()), "Bench Agent", admin=True)
    return Callers(customers, admin)


# -- the deployment under test ---------------------------------------------------------


def supportctl() -> str:
    """The ``supportctl`` next to this Python, else the one on PATH."""
    beside = Path(sys.executable).with_name("supportctl")
    found = str(beside) if beside.exists() else shutil.which("supportctl")
    if not found:
        raise BenchError("supportctl is not installed here: pip install -e . in the project")
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def fresh_postgres(server_url: str) -> Iterator[str]:
    """A new database ``bench_<random>`` on the server of ``server_url``, dropped afterwards."""
    import sqlalchemy as sa

    from support_requests.storage.database import sync_url

    admin_url = sync_url(server_url)
    if not admin_url.database:
        admin_url = admin_url.set(database="postgres")
    name = f"bench_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        log(f"database: created {name}")
        try:
            yield admin_url.set(database=name).render_as_string(hide_password=False)
        finally:
            with engine.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            log(f"database: dropped {name}")
    finally:
        engine.dispose()


@dataclass
class StartedServer:
    """``supportctl serve`` in its own process group, logging to ``log_path``."""

    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, size: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-size:]


def server_environment(database_url: str, data_dir: Path, secret: str) -> dict[str, str]:
    """This environment without ``SUPPORT_*``, plus the server's configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORT_")}
    env.update(
        SUPPORT_DATABASE_URL=database_url,
        SUPPORT_DATA_DIR=str(data_dir),
        SUPPORT_JWT_SECRET=secret,
        # A benchmark is one caller far over any honest budget.
        SUPPORT_RATE_LIMIT_READS="off",
        SUPPORT_RATE_LIMIT_WRITES="off",
        PYTHONUNBUFFERED="1",
    )
    return env


def runnable_calls(scenarios: list[Scenario], name: str) -> list[Call]:
    """The calls of the scenario ``name`` among ``scenarios`` (none if it is not there)."""
    return next((list(s.calls) for s in scenarios if s.name == name), [])


def server_variables(assignments: list[str]) -> dict[str, str]:
    """``--server-env NAME=VALUE`` options as a mapping."""
    variables = {}
    for assignment in assignments:
        name, equals, value = assignment.partition("=")
        if not equals or not name:
            raise BenchError(f"--server-env {assignment!r}: write NAME=VALUE")
        variables[name] = value
    return variables


def initialise_database(env: dict[str, str]) -> None:
    """``supportctl db init``: the schema at the newest revision (safe to repeat)."""
    done = subprocess.run(
        [supportctl(), "db", "init"], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"supportctl db init failed:\n{done.stdout}{done.stderr}")


@contextmanager
def started_server(env: dict[str, str], workdir: Path, workers: int) -> Iterator[StartedServer]:
    """Start ``supportctl serve``, wait until /readyz answers 200, stop it on exit."""
    port = free_port()
    command = [supportctl(), "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", str(workers), "--log-level", "warning"]
    log_path = workdir / "server.log"
    with open(log_path, "wb") as output:
        process = subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = StartedServer(f"http://127.0.0.1:{port}", process, log_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise BenchError(f"supportctl serve exited early:\n{server.log_tail()}")
            try:
                if httpx.get(f"{server.base_url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"supportctl serve not ready within 60 s:\n{server.log_tail()}")
            time.sleep(0.1)
        log(f"server: {shlex.join(command)} (pid {process.pid}, {workers} worker(s))")
        yield server
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# -- seeding through the API -----------------------------------------------------------


@dataclass
class Seeded:
    """What the seeding created: request ids per customer (oldest first) and the hot one."""

    request_ids: list[list[int]]
    hot_id: int
    hot_messages: int
    etag: str | None
    rate_limited: bool
    seconds: float = 0.0


class Api:
    """The deployment's HTTP API, as the seeding and the pre-flight checks use it."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        parts = urlsplit(base_url)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.prefix = parts.path.rstrip("/")
        self.client = httpx.Client(
            base_url=self.origin, timeout=timeout, limits=httpx.Limits(max_connections=16)
        )

    def call(
        self,
        method: str,
        path: str,
        token: str,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        """``body`` is sent as JSON, ``content`` as it is (with its type in ``headers``)."""
        all_headers = {"Authorization": f"Bearer {token}", **(headers or {})}
        return self.client.request(
            method, self.prefix + path, json=body, content=content, headers=all_headers
        )

    def expect(self, response: httpx.Response, status: int, what: str) -> httpx.Response:
        if response.status_code != status:
            raise BenchError(
                f"{what}: {response.request.method} {response.request.url.path} answered "
                f"{response.status_code}, expected {status}: {response.text[:400]}"
            )
        return response


def seed(api: Api, who: Callers, per_customer: int, hot_messages: int, workers: int) -> Seeded:
    """Each customer's requests, round by round as real traffic interleaves them, then the
    hot request of customer 0 with ``hot_messages`` messages; checks what was made."""
    started = time.monotonic()
    ids: list[list[int]] = [[] for _ in who.customers]
    rate_limited = False

    def create(customer: int, round_no: int) -> int:
        nonlocal rate_limited
        body = {
            "category": CATEGORIES[(customer + round_no) % len(CATEGORIES)],
            "subject": f"Bench request {round_no} of customer {customer}",
            "message": "The app shows an error when I open my orders. Steps to reproduce follow.",
        }
        response = api.expect(
            api.call("POST", MOBILE, who.customers[customer], body), 201, "seeding a request"
        )
        rate_limited = rate_limited or "RateLimit-Limit" in response.headers
        return int(response.json()["data"]["id"])

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for round_no in range(per_customer):
            customers = range(len(who.customers))
            made = list(pool.map(create, customers, [round_no] * len(who.customers)))
            for customer, request_id in zip(customers, made, strict=True):
                ids[customer].append(request_id)

    hot = who.customers[0]
    body = {"category": "technical", "subject": "Hot request", "message": "First message."}
    created = api.expect(api.call("POST", MOBILE, hot, body), 201, "seeding the hot request")
    hot_id = int(created.json()["data"]["id"])
    for n in range(1, hot_messages):
        reply = {"body": f"Follow-up {n}: more detail about the problem."}
        api.expect(api.call("POST", f"{MOBILE}/{hot_id}/messages", hot, reply), 201, "seeding")

    detail = api.expect(api.call("GET", f"{MOBILE}/{hot_id}", hot), 200, "reading the hot one")
    if len(detail.json()["data"]["messages"]) != hot_messages:
        raise BenchError(f"the hot request does not have its {hot_messages} messages")
    lister = list_customer(who)
    page = api.expect(
        api.call("GET", f"{MOBILE}?limit={LIST_LIMIT}", who.customers[lister]), 200, "list"
    )
    # Newest first; a customer given by token may have older requests after these.
    expected = (([hot_id] if lister == 0 else []) + ids[lister][::-1])[:LIST_LIMIT]
    if [item["id"] for item in page.json()["data"]][: len(expected)] != expected:
        raise BenchError("the list is not the customer's own requests, newest first")
    etag = detail.headers.get("ETag")
    return Seeded(ids, hot_id, hot_messages, etag, rate_limited, time.monotonic() - started)


def list_customer(who: Callers) -> int:
    """The customer whose list is read: not the hot one when there are several."""
    return 1 if len(who.customers) > 1 else 0


@dataclass(frozen=True)
class SeededAttachment:
    """A noisy PNG that customer 0 uploaded and attached to a new request of theirs, and the
    multipart body (with its ``Content-Type``) that uploads it again."""

    id: str
    size: int
    etag: str | None
    upload_body: Path
    upload_type: str


def noisy_png(path: Path, width: int, height: int) -> None:
    """A PNG of random RGBA pixels: it does not compress, the file is 4 bytes a pixel."""
    from PIL import Image

    pixels = Image.frombytes("RGBA", (width, height), os.urandom(width * height * 4))
    pixels.save(path, format="PNG", compress_level=1)


def multipart_body(source: Path, target: Path, content_type: str) -> str:
    """Write to ``target`` a ``multipart/form-data`` body whose one part ``file`` holds
    ``source``; the body's ``Content-Type`` (with its boundary)."""
    boundary = f"bench-{secrets.token_hex(12)}"
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{source.name}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    )
    with target.open("wb") as out, source.open("rb") as part:
        out.write(head.encode())
        shutil.copyfileobj(part, out)
        out.write(f"\r\n--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}"


def seed_attachment(api: Api, who: Callers, workdir: Path) -> SeededAttachment:
    """Upload a 1 MiB noisy PNG through the API as customer 0, attach it to a new request of
    theirs (so they may download it), download it once; what the attachment scenarios need."""
    png = workdir / "bench-1mib.png"
    noisy_png(png, UPLOAD_PNG_SIDE, UPLOAD_PNG_SIDE)
    upload_body = workdir / "upload.multipart"
    upload_type = multipart_body(png, upload_body, "image/png")
    token = who.customers[0]
    uploaded = api.call(
        "POST",
        ATTACHMENTS,
        token,
        headers={"Content-Type": upload_type},
        content=upload_body.read_bytes(),
    )
    attachment_id = str(api.expect(uploaded, 201, "seeding an attachment").json()["data"]["id"])
    body = {
        "category": "technical",
        "subject": "Screenshot of the problem",
        "message": "The screen as I see it.",
        "attachments": [attachment_id],
    }
    api.expect(api.call("POST", MOBILE, token, body), 201, "attaching the seeded attachment")
    download = api.expect(
        api.call("GET", f"{ATTACHMENTS}/{attachment_id}", token), 200, "downloading it"
    )
    size = len(download.content)
    log(f"attachment: a {png.stat().st_size:,}-byte PNG uploaded, downloads as {size:,} bytes")
    return SeededAttachment(
        attachment_id, size, download.headers.get("ETag"), upload_body, upload_type
    )


def seed_unread(api: Api, who: Callers, seeded: Seeded) -> dict[str, Any]:
    """Staff replies to up to ``UNREAD_SEEDED`` of customer 0's seeded requests (with an admin
    token), so that the badge the ``unread`` scenario reads is not zero; the badge."""
    if who.admin:
        for request_id in seeded.request_ids[0][-UNREAD_SEEDED:]:
            body = {"body": "Thanks, we are on it."}
            path = f"{ADMIN_QUEUE}/{request_id}/messages"
            api.expect(api.call("POST", path, who.admin, body), 201, "a staff reply")
    badge = api.expect(api.call("GET", UNREAD, who.customers[0]), 200, "reading the badge")
    data: dict[str, Any] = badge.json()["data"]
    log(f"badge of customer 0: {data['unreadCount']} unread in {data['requestsWithUnread']}")
    return data


# -- scenarios -------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One request of a scenario, as wrk sends it."""

    method: str
    path: str
    token: str
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body_file: Path | None = None  # a body sent as it is, e.g. multipart (type in headers)

    def line(self, prefix: str) -> str:
        """The request as a line of the file ``bench/lua/requests.lua`` reads."""
        headers = {"Authorization": f"Bearer {self.token}", **self.headers}
        body = ""
        if self.body is not None:
            body = json.dumps(self.body, separators=(",", ":"))
            headers["Content-Type"] = "application/json"
        elif self.body_file is not None:
            body = f"@{self.body_file}"
        fields = [self.method, prefix + self.path, body] + [f"{k}: {v}" for k, v in headers.items()]
        if any("\t" in f or "\n" in f for f in fields):
            raise BenchError(f"cannot write a tab or line break into the request file: {fields}")
        return "\t".join(fields)


@dataclass(frozen=True)
class Scenario:
    """What one wrk run sends, and the status every answer should have."""

    name: str
    description: str
    expected_status: int
    calls: list[Call]


def scenarios(
    who: Callers, seeded: Seeded, attachment: SeededAttachment | None = None
) -> tuple[list[Scenario], dict[str, str]]:
    """The scenarios that can run against this deployment, and why others cannot; the
    attachment scenarios only with an ``attachment`` seeded."""
    hot_token = who.customers[0]
    detail = f"{MOBILE}/{seeded.hot_id}"
    runnable = [
        Scenario(
            "detail",
            f"GET {MOBILE}/{{id}} ({seeded.hot_messages} messages)",
            200,
            [Call("GET", detail, hot_token)],
        )
    ]
    runnable.append(
        Scenario(
            "unread",
            f"GET {UNREAD} (customer 0's badge, over {len(seeded.request_ids[0]) + 1} requests)",
            200,
            [Call("GET", UNREAD, hot_token)],
        )
    )
    skipped: dict[str, str] = {}
    if seeded.etag:
        runnable.append(
            Scenario(
                "revalidate",
                f"GET {MOBILE}/{{id}}, If-None-Match: its ETag",
                304,
                [Call("GET", detail, hot_token, headers={"If-None-Match": seeded.etag})],
            )
        )
    else:
        skipped["revalidate"] = "the server sends no ETag on the detail"
    lister = list_customer(who)
    runnable.append(
        Scenario(
            "list",
            f"GET {MOBILE}?limit={LIST_LIMIT}",
            200,
            [Call("GET", f"{MOBILE}?limit={LIST_LIMIT}", who.customers[lister])],
        )
    )
    if who.admin:
        queue = f"{ADMIN_QUEUE}?status=open&limit={LIST_LIMIT}"
        runnable.append(Scenario("queue", f"GET {queue}", 200, [Call("GET", queue, who.admin)]))
        for name, query in QUEUE_FILTERS.items():
            filtered = f"{ADMIN_QUEUE}?{query}&limit={LIST_LIMIT}"
            runnable.append(
                Scenario(name, f"GET {filtered}", 200, [Call("GET", filtered, who.admin)])
            )
    else:
        skipped["queue"] = "no admin token (give --admin-token, or the secret)"
        for name in QUEUE_FILTERS:
            skipped[name] = skipped["queue"]
    runnable.append(
        Scenario(
            "create",
            f"POST {MOBILE}, rotating over {len(who.customers)} customer(s)",
            201,
            [
                Call(
                    "POST",
                    MOBILE,
                    token,
                    {
                        "category": CATEGORIES[n % len(CATEGORIES)],
                        "subject": f"Load test request of customer {n}",
                        "message": "Created by the benchmark; please ignore.",
                    },
                )
                for n, token in enumerate(who.customers)
            ],
        )
    )
    replies = [
        Call("POST", f"{MOBILE}/{request_id}/messages", who.customers[customer], {"body": REPLY})
        for round_no in range(len(seeded.request_ids[0]))
        for customer, ids in enumerate(seeded.request_ids)
        for request_id in ids[round_no : round_no + 1]
    ]
    if replies:
        runnable.append(
            Scenario(
                "reply",
                f"POST {MOBILE}/{{id}}/messages, over {len(replies)} requests, by their owners",
                201,
                replies,
            )
        )
    else:
        skipped["reply"] = "no seeded requests to reply to (--requests 0)"
    # The same writes with an Idempotency-Key each, never repeated within a run: what keys
    # cost a first request (a retry's replay is another, cheaper path).
    run_keys = uuid.uuid4().hex[:12]
    for name, calls in (
        ("create-keyed", runnable_calls(runnable, "create")),
        ("reply-keyed", replies),
    ):
        if not calls:
            continue
        keyed = [
            dataclasses.replace(
                calls[n % len(calls)],
                headers={
                    **calls[n % len(calls)].headers,
                    "Idempotency-Key": f"{name}-{run_keys}-{n}",
                },
            )
            for n in range(KEYED_CALLS)
        ]
        runnable.append(
            Scenario(
                name, f"{name.removesuffix('-keyed')} with a new Idempotency-Key each", 201, keyed
            )
        )
    if attachment:
        runnable += attachment_scenarios(who, attachment, skipped)
    return runnable, skipped


def attachment_scenarios(
    who: Callers, attachment: SeededAttachment, skipped: dict[str, str]
) -> list[Scenario]:
    """``upload``, ``download`` and ``download-304`` (skipped, in ``skipped``, without an
    ETag), all as customer 0."""
    token = who.customers[0]
    upload_size = attachment.upload_body.stat().st_size
    upload = Call(
        "POST",
        ATTACHMENTS,
        token,
        headers={"Content-Type": attachment.upload_type},
        body_file=attachment.upload_body,
    )
    path = f"{ATTACHMENTS}/{attachment.id}"
    runnable = [
        Scenario(
            "upload", f"POST {ATTACHMENTS}, a {upload_size:,}-byte multipart PNG", 201, [upload]
        ),
        Scenario(
            "download",
            f"GET {ATTACHMENTS}/{{id}}, a {attachment.size:,}-byte PNG",
            200,
            [Call("GET", path, token)],
        ),
    ]
    if attachment.etag:
        runnable.append(
            Scenario(
                "download-304",
                f"GET {ATTACHMENTS}/{{id}}, If-None-Match: its ETag",
                304,
                [Call("GET", path, token, headers={"If-None-Match": attachment.etag})],
            )
        )
    else:
        skipped["download-304"] = "the server sends no ETag on the download"
    return runnable


# -- wrk -------------------------------------------------------------------------------


def ensure_wrk() -> str:
    """The wrk binary; as root on Debian/Ubuntu, installs the distribution's package first."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("wrk is missing: installing Debian's package (apt-get install -y wrk)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "wrk"]
        if subprocess.run(install, env=env, stdout=sys.stderr, check=False).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, stdout=sys.stderr, check=False)
            subprocess.run(install, env=env, stdout=sys.stderr, check=False)
        found = shutil.which("wrk")
        if found:
            return found
    raise BenchError(
        "wrk is not installed. On Debian or Ubuntu: sudo apt-get install wrk "
        "(this script installs it itself when run as root); elsewhere see "
        "https://github.com/wg/wrk"
    )


def wrk_version(wrk: str) -> str:
    done = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    return (done.stdout + done.stderr).splitlines()[0].strip() if done.stdout + done.stderr else ""


def load(
    wrk: str, origin: str, requests_file: Path, seconds: int, args: argparse.Namespace
) -> dict[str, Any]:
    """One wrk run over the requests file; wrk's numbers as the Lua script reports them."""
    command = [
        wrk,
        f"-t{min(args.threads, args.connections)}",
        f"-c{args.connections}",
        f"-d{seconds}s",
        "--timeout",
        f"{args.timeout}s",
        "-s",
        str(LUA_SCRIPT),
        origin,
        "--",
        str(requests_file),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 120, check=False
    )
    found = re.search(r"^wrk-json (\{.*\})$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or found is None:
        raise BenchError(
            f"wrk failed ({done.returncode}): {done.stdout[-800:]}{done.stderr[-800:]}"
        )
    return dict(json.loads(found.group(1)))


def check_scenario(api: Api, scenario: Scenario) -> None:
    """Send the scenario's first request by hand: its status must be the expected one."""
    first = scenario.calls[0]
    content = first.body_file.read_bytes() if first.body_file else None
    api.expect(
        api.call(first.method, first.path, first.token, first.body, first.headers, content),
        scenario.expected_status,
        f"scenario {scenario.name}",
    )


def measure(
    wrk: str, api: Api, scenario: Scenario, workdir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Check one request of the scenario answers as expected, warm up, then measure."""
    check_scenario(api, scenario)
    requests_file = workdir / f"{scenario.name}.tsv"
    requests_file.write_text("".join(call.line(api.prefix) + "\n" for call in scenario.calls))
    if args.warmup > 0:
        load(wrk, api.origin, requests_file, args.warmup, args)
    raw = load(wrk, api.origin, requests_file, args.duration, args)
    seconds = raw["duration_us"] / 1e6
    socket_errors = sum(
        raw[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
    )
    return {
        "name": scenario.name,
        "request": scenario.description,
        "expected_status": scenario.expected_status,
        "requests": raw["requests"],
        "duration_s": round(seconds, 3),
        "rps": round(raw["requests"] / seconds, 1) if seconds else 0.0,
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "mean_ms": raw["mean_us"] / 1000,
        "http_errors": raw["status_errors"],
        "socket_errors": socket_errors,
        "connect_errors": raw["connect_errors"],
        "read_errors": raw["read_errors"],
        "write_errors": raw["write_errors"],
        "timeouts": raw["timeouts"],
        "bytes": raw["bytes"],
    }


# -- output ----------------------------------------------------------------------------


def table(results: list[dict[str, Any]], skipped: dict[str, str]) -> str:
    """The results as a Markdown table (it reads as well in a terminal)."""
    header = ("scenario", "request", "req/s", "p50 ms", "p99 ms", "HTTP errors", "socket errors")
    rows = [
        (
            r["name"],
            r["request"],
            f"{r['rps']:,.0f}",
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            str(r["http_errors"]),
            str(r["socket_errors"]),
        )
        for r in results
    ]
    rows += [(name, f"skipped: {why}", "", "", "", "", "") for name, why in skipped.items()]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    right = {2, 3, 4, 5, 6}

    def line(cells: tuple[str, ...]) -> str:
        padded = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join("-" * (w + 1) + (":" if i in right else "-") for i, w in enumerate(widths))
        + "|"
    )
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def shown_command(argv: list[str], script: str = "bench/run.py") -> str:
    """The command line as run, without secrets, tokens or URL passwords."""
    shown: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            shown.append("***")
            hide_next = False
            continue
        name, eq, _ = arg.partition("=")
        if name in SECRET_OPTIONS:
            shown.append(f"{name}=***" if eq else arg)
            hide_next = not eq
            continue
        shown.append(re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", arg))
    return shlex.join(["python", script, *shown])


# -- main ------------------------------------------------------------------------------


def add_setup_arguments(
    parser: argparse.ArgumentParser,
) -> tuple[argparse._ArgumentGroup, argparse._ArgumentGroup, argparse._ArgumentGroup]:
    """The options of ``deployment()``: what to load, the tokens, the data seeded (groups
    "what to load", "tokens (with --url)" and "data", returned in that order)."""
    target = parser.add_argument_group("what to load")
    where = target.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running deployment, e.g. http://127.0.0.1:8080")
    where.add_argument(
        "--start", action="store_true", help="start `supportctl serve` here, stop it afterwards"
    )
    target.add_argument(
        "--pg",
        metavar="URL",
        help="with --start: a fresh PostgreSQL database bench_* on this server (dropped after)",
    )
    target.add_argument(
        "--database-url",
        metavar="URL",
        help="the deployment's database, for --preload; with --start, serve on it (kept after)",
    )
    target.add_argument(
        "--workers", type=int, default=1, metavar="N", help="with --start: server workers (1)"
    )
    target.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="with --start: one more server variable, e.g. SUPPORT_RATE_LIMIT_READS=12000/minute"
        " or SUPPORT_REDIS_URL=redis://127.0.0.1:6379/0 (repeatable; limits are off unless set)",
    )
    auth = parser.add_argument_group("tokens (with --url)")
    env = os.environ.get
    auth.add_argument(
        "--secret",
        metavar="SECRET",
        default=env("SUPPORT_JWT_SECRET"),
        help="the deployment's HS256 secret (default: $SUPPORT_JWT_SECRET; prefer the variable)",
    )
    auth.add_argument(
        "--issuer", metavar="ISS", default=env("SUPPORT_JWT_ISSUER"), help="iss of the tokens"
    )
    auth.add_argument(
        "--audience", metavar="AUD", default=env("SUPPORT_JWT_AUDIENCE"), help="aud of the tokens"
    )
    auth.add_argument(
        "--customer-token", metavar="JWT", help="one customer's token, instead of the secret"
    )
    auth.add_argument("--admin-token", metavar="JWT", help="an admin's token, for the queue")
    data = parser.add_argument_group("data")
    data.add_argument(
        "--customers", type=int, default=50, metavar="N", help="customers seeded (50)"
    )
    data.add_argument(
        "--requests", type=int, default=20, metavar="N", help="requests seeded per customer (20)"
    )
    data.add_argument(
        "--hot-messages", type=int, default=10, metavar="N", help="messages of the detail (10)"
    )
    data.add_argument("--seed-concurrency", type=int, default=8, help=argparse.SUPPRESS)
    data.add_argument(
        "--preload",
        type=int,
        default=0,
        metavar="N",
        help="first write N other requests straight into the database (the scale case)",
    )
    data.add_argument(
        "--preload-messages", type=int, default=5, metavar="N", help="messages each (5)"
    )
    return target, auth, data


def add_wrk_arguments(group: argparse._ArgumentGroup) -> None:
    """wrk's options: --threads, --connections, --timeout (what ``load()`` reads)."""
    group.add_argument("--threads", type=int, default=2, metavar="N", help="wrk threads (2)")
    group.add_argument(
        "--connections", type=int, default=32, metavar="N", help="wrk connections (32)"
    )
    group.add_argument(
        "--timeout", type=int, default=5, metavar="S", help="wrk's request timeout (5)"
    )


def check_setup_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The combinations of --start, --pg, --database-url and --preload that make sense."""
    if args.pg and not args.start:
        parser.error("--pg needs --start (for a running deployment, give --database-url)")
    if args.pg and args.database_url:
        parser.error("give --pg (a fresh database) or --database-url (an existing one), not both")
    if args.preload and not (args.start or args.database_url):
        parser.error("--preload with --url needs the deployment's --database-url")


def check_counts(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    positive: tuple[str, ...],
    non_negative: tuple[str, ...],
) -> None:
    """The options named must be at least 1, or not negative; --preload-messages too."""
    for name in positive:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in non_negative:
        if getattr(args, name) < 0:
            parser.error(f"--{name} must not be negative")
    if args.preload and args.preload_messages < 1:
        parser.error("--preload-messages must be at least 1")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description=__doc__.split("\n\n")[0],
        epilog="See bench/README.md (What it does) for what each scenario sends.",
    )
    add_setup_arguments(parser)
    run = parser.add_argument_group("load")
    run.add_argument(
        "--scenarios",
        default=",".join(DEFAULT_SCENARIOS),
        metavar="LIST",
        help=f"comma-separated, of {','.join(SCENARIOS)} ({','.join(DEFAULT_SCENARIOS)}; "
        f"the attachment ones, {','.join(ATTACHMENT_SCENARIOS)}, move a MiB a request and "
        "seed a 1 MiB PNG: only when named)",
    )
    run.add_argument(
        "--duration", type=int, default=10, metavar="S", help="seconds measured per scenario (10)"
    )
    run.add_argument(
        "--warmup", type=int, default=2, metavar="S", help="seconds of load before each (2)"
    )
    add_wrk_arguments(run)
    run.add_argument(
        "--out", type=Path, metavar="FILE", help="the JSON report (./bench-<time>.json)"
    )
    args = parser.parse_args(argv)

    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if unknown := [s for s in args.scenarios if s not in SCENARIOS]:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    check_setup_arguments(parser, args)
    check_counts(
        parser,
        args,
        ("customers", "hot_messages", "duration", "threads", "connections", "workers"),
        ("requests", "preload", "warmup"),
    )
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        report = run(args, argv)
    except BenchError as problem:
        log(f"error: {problem}")
        return 1
    out = args.out or Path(f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report["scenarios"], report["setup"]["skipped"]))
    log(f"results: {out}")
    return 0


@dataclass
class Deployment:
    """The deployment under load, seeded through its API (what ``deployment()`` sets up)."""

    workdir: Path
    api: Api
    who: Callers
    seeded: Seeded
    server: StartedServer | None
    database_url: str | None
    preloaded: dict[str, Any] | None


@contextmanager
def deployment(args: argparse.Namespace, run_id: str) -> Iterator[Deployment]:
    """Set up what the options of ``add_setup_arguments()`` ask for: a work directory, the
    database (fresh SQLite or PostgreSQL, with --start), the preload, the server (--start)
    or --url, the tokens and the seeded data; all torn down on exit."""
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="support-bench-")))
        server: StartedServer | None = None
        database_url: str | None = args.database_url
        preloaded = None
        secret = args.secret
        if args.start:
            if args.pg:
                database_url = stack.enter_context(fresh_postgres(args.pg))
            elif database_url is None:
                database_url = f"sqlite:///{workdir / 'support.db'}"
            secret = secrets.token_urlsafe(48)
            env = server_environment(database_url, workdir, secret)
            env.update(server_variables(args.server_env))
            initialise_database(env)
        if args.preload:
            assert database_url is not None
            preloaded = run_preload(database_url, args.preload, args.preload_messages)
        if args.start:
            server = stack.enter_context(started_server(env, workdir, args.workers))
        base_url = server.base_url if server else args.url
        api = Api(base_url)
        stack.callback(api.client.close)
        who = callers(args, secret, run_id)
        log(
            f"seeding {len(who.customers)} customer(s) x {args.requests} request(s) through the API"
        )
        seeded = seed(api, who, args.requests, args.hot_messages, args.seed_concurrency)
        log(
            f"seeded in {seeded.seconds:.1f} s; ETag on the detail: "
            f"{'yes' if seeded.etag else 'no'}"
        )
        if seeded.rate_limited:
            log("warning: the deployment rate-limits (RateLimit-* headers): expect 429s")
        yield Deployment(workdir, api, who, seeded, server, database_url, preloaded)


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """Set up (server, database, preload, seed), run the scenarios; the report as JSON data."""
    wrk = ensure_wrk()
    run_id = uuid.uuid4().hex[:8]
    load_before = os.getloadavg()
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with deployment(args, run_id) as target:
        server, who, seeded = target.server, target.who, target.seeded
        attachment = None
        if any(name in ATTACHMENT_SCENARIOS for name in args.scenarios):
            attachment = seed_attachment(target.api, who, target.workdir)
        badge = None
        if "unread" in args.scenarios:
            badge = seed_unread(target.api, who, seeded)
        available, skipped = scenarios(who, seeded, attachment)
        chosen = [s for s in available if s.name in args.scenarios]
        skipped = {k: v for k, v in skipped.items() if k in args.scenarios}
        results = []
        for scenario in sorted(chosen, key=lambda s: SCENARIOS.index(s.name)):
            log(f"{scenario.name}: {args.warmup} s warm-up, {args.duration} s measured")
            result = measure(wrk, target.api, scenario, target.workdir, args)
            if server and server.process.poll() is not None:
                raise BenchError(f"the server died during {scenario.name}:\n{server.log_tail()}")
            log(
                f"  {result['rps']:,.0f} req/s, p50 {result['p50_ms']:.2f} ms, "
                f"p99 {result['p99_ms']:.2f} ms, HTTP errors {result['http_errors']}, "
                f"socket errors {result['socket_errors']}"
            )
            results.append(result)
        return {
            "meta": {
                "started": started_at,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "command": shown_command(argv),
                "host": platform.node(),
                "cpus": os.cpu_count(),
                "loadavg_before": [round(x, 2) for x in load_before],
                "python": platform.python_version(),
                "wrk": wrk_version(wrk),
                "target": "supportctl serve (started)" if server else args.url,
                "database": _database_kind(target.database_url),
                "workers": args.workers if server else None,
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "threads": min(args.threads, args.connections),
                "connections": args.connections,
            },
            "setup": {
                "customers": len(who.customers),
                "requests_per_customer": args.requests,
                "hot_messages": args.hot_messages,
                "seed_seconds": round(seeded.seconds, 2),
                "etag": seeded.etag is not None,
                "unread": badge,
                "rate_limited": seeded.rate_limited,
                "preload": target.preloaded,
                "skipped": skipped,
            },
            "scenarios": results,
        }
    raise AssertionError("unreachable")


def run_preload(database_url: str, requests: int, messages: int) -> dict[str, Any]:
    """``bench/preload.py`` into the database; prints progress now and then."""
    from preload import preload

    log(f"preload: {requests:,} requests x {messages} messages into {_database_kind(database_url)}")
    last = [0.0]

    def progress(message: str) -> None:
        if time.monotonic() - last[0] > 5:
            last[0] = time.monotonic()
            log(message)

    result = preload(database_url, requests, messages, progress=progress).as_dict()
    log(
        f"preload: {result['requests']:,} requests, {result['messages']:,} messages in "
        f"{result['load_seconds']:.1f} s, analyzed in {result['analyze_seconds']:.1f} s"
    )
    return result


def _database_kind(url: str | None) -> str | None:
    if url is None:
        return None
    return "postgresql" if url.startswith("postgres") else "sqlite"


if __name__ == "__main__":
    sys.exit(main())
