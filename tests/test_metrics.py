"""GET /metrics: Prometheus text format behind SUPPORT_METRICS_TOKEN, counters that move
with traffic, the outbox read at scrape time, and the sum over `serve --workers N`."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from support_requests.handlers.app import create_app
from support_requests.handlers.settings import ConfigurationError, Settings
from support_requests.webhooks.secrets import new_secret
from tests.helpers import MOBILE, assert_problem, create, customer, pending_delivery
from tests.servers import migrated_database, server_environment, supportctl_server

TOKEN = "metrics-token-0123456789"
SCRAPE = {"Authorization": f"Bearer {TOKEN}"}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and labels (parsed by prometheus_client)."""
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def value(scrape: dict[Any, float], name: str, **labels: str) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(client: Any) -> dict[Any, float]:
    response = client.get("/metrics", headers=SCRAPE)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


@pytest.fixture
def metered(settings: Settings) -> Settings:
    return dataclasses.replace(settings, metrics_token=TOKEN)


def test_metrics_is_404_without_a_metrics_token(client):
    assert_problem(client.get("/metrics", headers=SCRAPE), 404, "not_found")


def test_metrics_needs_its_own_bearer_token_not_a_customer_token(metered):
    with create_app(metered).test_client() as client:
        assert_problem(client.get("/metrics"), 401, "unauthorized")
        assert_problem(client.get("/metrics", headers=customer()), 401, "unauthorized")
        wrong = {"Authorization": f"Bearer {TOKEN}x"}
        assert_problem(client.get("/metrics", headers=wrong), 401, "unauthorized")
        assert client.get("/metrics", headers=SCRAPE).status_code == 200


def test_a_short_metrics_token_is_refused_at_start(settings):
    with pytest.raises(ConfigurationError, match="SUPPORT_METRICS_TOKEN"):
        dataclasses.replace(settings, metrics_token="short")


def test_metrics_is_not_an_operation_of_the_contract(metered):
    with create_app(metered).test_client() as client:
        paths = client.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if "metrics" in path]


def test_request_counters_and_latency_move_with_traffic(metered):
    alice = customer()
    with create_app(metered).test_client() as client:
        before = scrape(client)
        created = [create(client, alice) for _ in range(3)]
        detail = client.get(f"{MOBILE}/{created[0]['id']}", headers=alice)
        again = client.get(
            f"{MOBILE}/{created[0]['id']}",
            headers={**alice, "If-None-Match": detail.headers["ETag"]},
        )
        assert again.status_code == 304
        assert client.get(f"{MOBILE}/999999", headers=alice).status_code == 404
        after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    created_2xx = {"operation": "createSupportRequest", "status_class": "2xx"}
    assert moved("support_http_requests_total", **created_2xx) == 3
    assert (
        moved("support_http_request_duration_seconds_count", operation="createSupportRequest") == 3
    )
    assert moved("support_http_request_duration_seconds_sum", operation="createSupportRequest") > 0
    get_2xx = {"operation": "getSupportRequest", "status_class": "2xx"}
    assert moved("support_http_requests_total", **get_2xx) == 1
    get_3xx = {"operation": "getSupportRequest", "status_class": "3xx"}
    assert moved("support_http_requests_total", **get_3xx) == 1
    assert moved("support_http_not_modified_total", operation="getSupportRequest") == 1
    get_4xx = {"operation": "getSupportRequest", "status_class": "4xx"}
    assert moved("support_http_requests_total", **get_4xx) == 1
    # The scrape in flight counts itself; none of the requests above is still running.
    assert value(after, "support_http_requests_in_flight") == 1


def test_rate_limit_refusals_are_counted_and_metrics_are_never_limited(metered):
    alice = customer()
    limited = dataclasses.replace(metered, rate_limit_reads="1/minute")
    with create_app(limited).test_client() as client:
        before = scrape(client)
        statuses = [client.get(MOBILE, headers=alice).status_code for _ in range(3)]
        after = scrape(client)
        assert [scrape(client) is not None for _ in range(3)] == [True] * 3
    assert statuses == [200, 429, 429]
    moved = value(after, "support_rate_limit_refusals_total", budget="reads") - value(
        before, "support_rate_limit_refusals_total", budget="reads"
    )
    assert moved == 2


def test_idempotency_replays_are_counted(metered):
    alice = customer()
    body = {"category": "technical", "subject": "Replayed", "message": "Once."}
    keyed = {**alice, "Idempotency-Key": "metrics-replay-1"}
    with create_app(metered).test_client() as client:
        before = scrape(client)
        first = client.post(MOBILE, json=body, headers=keyed)
        second = client.post(MOBILE, json=body, headers=keyed)
        after = scrape(client)
    assert (first.status_code, second.status_code) == (201, 201)
    assert second.headers["Idempotent-Replayed"] == "true"
    name = "support_idempotency_replays_total"
    assert value(after, name) - value(before, name) == 1


def test_uploads_and_their_bytes_are_counted(metered):
    image = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(image, format="PNG")
    payload = image.getvalue()
    alice = customer()
    with create_app(metered).test_client() as client:
        before = scrape(client)
        response = client.post(
            "/api/mobile/attachments", files={"file": ("red.png", payload)}, headers=alice
        )
        assert response.status_code == 201, response.text
        stored = response.json()["data"]["size"]
        after = scrape(client)
    assert value(after, "support_uploads_total") - value(before, "support_uploads_total") == 1
    moved = value(after, "support_upload_bytes_total") - value(before, "support_upload_bytes_total")
    assert moved == stored


def test_outbox_backlog_and_age_are_read_from_the_database_at_scrape(metered, database_url):
    pending_delivery(database_url, new_secret(), minutes_ago=10)
    with create_app(dataclasses.replace(metered, embedded_worker=False)).test_client() as client:
        scraped = scrape(client)
    assert value(scraped, "support_webhook_outbox_pending") == 1
    assert 590 <= value(scraped, "support_webhook_outbox_oldest_pending_age_seconds") <= 700
    assert 590 <= value(scraped, "support_webhook_worker_lag_seconds") <= 700


@pytest.mark.postgres
def test_postgresql_pool_gauges_show_connections_in_use_and_idle(metered, database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("the pool gauges are PostgreSQL's (SQLite has two fixed connections)")
    alice = customer()
    with create_app(metered).test_client() as client:
        create(client, alice)
        scraped = scrape(client)
    # Every request above, and the scrape's own outbox read, has returned its connection.
    assert value(scraped, "support_db_connections_in_use") == 0
    assert value(scraped, "support_db_connections_idle") >= 1


@pytest.mark.slow
def test_metrics_add_up_over_every_worker_process(tmp_path: Path, database_url: str) -> None:
    """`serve --workers 2`: any process's scrape counts the requests every process answered."""
    if database_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'metrics.db'}"
    else:
        url = database_url
    migrated_database(url)
    env = server_environment(url, tmp_path, SUPPORT_METRICS_TOKEN=TOKEN)
    alice = customer()
    sent = 40
    closing = {"Connection": "close"}  # a fresh connection each time: both processes answer
    with (
        supportctl_server(env, tmp_path, "--workers", "2") as server,
        httpx.Client(base_url=server.url, timeout=10) as http,
    ):
        for _ in range(sent):
            assert http.get(MOBILE, headers={**alice, **closing}).status_code == 200
        assert http.get(f"{MOBILE}/424242", headers={**alice, **closing}).status_code == 404
        counts = {
            value(
                samples(http.get("/metrics", headers={**SCRAPE, **closing}).text),
                "support_http_requests_total",
                operation="listSupportRequests",
                status_class="2xx",
            )
            for _ in range(6)
        }
        log = server.log()
    assert counts == {sent}
    # uvicorn's scope has no `extensions` of its own: the route the router matched still
    # reaches the access log and the metrics' labels.
    assert '"route":"/api/mobile/support-requests/{id}","status":404' in log
