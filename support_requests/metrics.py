"""Prometheus metrics, kept by ``prometheus-client``; every name starts with ``support_``.

Counters and histograms are updated where things happen (the access-log middleware, the
rate limiter, idempotency, uploads, the PostgreSQL pool). What the database knows (the
webhook outbox: backlog, oldest pending age, deliveries by status, the workers' lag) is
read when Prometheus scrapes, so it is right whichever process or worker wrote it.

Several processes (``supportctl serve --workers N``): prometheus-client's multiprocess
mode. ``serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at an empty directory before the
workers start (``prepare_multiprocess``); each process writes its samples there, and a
scrape answered by any of them adds up all of them (``render``). One process: the
default registry, in memory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

requests_total = Counter(
    "support_http_requests_total",
    "Requests answered, by operation id (or `other`) and status class.",
    ["operation", "status_class"],
)
request_seconds = Histogram(
    "support_http_request_duration_seconds",
    "Time from the request's arrival to its response's last byte, by operation id.",
    ["operation"],
    buckets=_LATENCY_BUCKETS,
)
in_flight = Gauge(
    "support_http_requests_in_flight",
    "Requests being answered right now.",
    multiprocess_mode="livesum",
)
not_modified_total = Counter(
    "support_http_not_modified_total",
    "304 Not Modified answers (cheap revalidations), by operation id.",
    ["operation"],
)
rate_limited_total = Counter(
    "support_rate_limit_refusals_total",
    "Requests refused with 429 because the caller's budget was spent, by budget.",
    ["budget"],
)
idempotent_replays_total = Counter(
    "support_idempotency_replays_total",
    "Retries answered with the stored answer of their Idempotency-Key.",
)
uploads_total = Counter("support_uploads_total", "Attachments uploaded (201).")
upload_bytes_total = Counter("support_upload_bytes_total", "Bytes of the attachments uploaded.")
db_connections_in_use = Gauge(
    "support_db_connections_in_use",
    "PostgreSQL connections checked out of this service's pools.",
    multiprocess_mode="livesum",
)
db_connections_idle = Gauge(
    "support_db_connections_idle",
    "Open PostgreSQL connections waiting in this service's pools.",
    multiprocess_mode="livesum",
)
db_connection_waits_total = Counter(
    "support_db_connection_waits_total",
    "Checkouts that had to wait because every pooled connection was in use.",
)


webhook_deliveries_total = Counter(
    "support_webhook_deliveries_total",
    "Delivery attempts by outcome: succeeded, retry (failed, tried again later), failed "
    "(retries used up), gone (410: the endpoint was disabled).",
    ["outcome"],
)
webhook_delivery_seconds = Histogram(
    "support_webhook_delivery_duration_seconds",
    "Time of one delivery attempt, from the address check to the recorded outcome.",
    buckets=_LATENCY_BUCKETS,
)


def status_class(status: int) -> str:
    """``2xx`` for 204, and so on."""
    return f"{status // 100}xx"


def observe_request(operation: str | None, status: int, seconds: float) -> None:
    """Count one answered request."""
    name = operation or "other"
    requests_total.labels(name, status_class(status)).inc()
    request_seconds.labels(name).observe(seconds)
    if status == 304:
        not_modified_total.labels(name).inc()


def prepare_multiprocess() -> Path:
    """For ``serve --workers N``: an empty directory for every process's samples, named by
    ``PROMETHEUS_MULTIPROC_DIR`` for the processes about to start (emptied if the operator
    named one: samples of processes that are gone must not be added in)."""
    configured = os.environ.get(MULTIPROCESS_VARIABLE)
    if configured:
        directory = Path(configured)
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
    else:
        directory = Path(tempfile.mkdtemp(prefix="support-metrics-"))
        os.environ[MULTIPROCESS_VARIABLE] = str(directory)
    return directory


class _Gauges(Collector):
    """Gauges read at scrape time (from the database), as one collector."""

    def __init__(self, gauges: Iterable[GaugeMetricFamily]) -> None:
        self._gauges = list(gauges)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from self._gauges


def render(read_at_scrape: Iterable[GaugeMetricFamily] = ()) -> bytes:
    """The text exposition of every metric, this process's or (multiprocess mode) every
    process's, with the gauges read for this scrape."""
    registry = CollectorRegistry()
    if os.environ.get(MULTIPROCESS_VARIABLE):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        text = generate_latest(registry)
    else:
        text = generate_latest(REGISTRY)
    extra = CollectorRegistry()
    extra.register(_Gauges(read_at_scrape))
    return text + generate_latest(extra)
