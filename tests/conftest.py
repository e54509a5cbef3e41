"""Fixtures: a fresh app per test on SQLite and, when configured, on PostgreSQL.

Set ``SUPPORT_TEST_PG_URL`` (e.g. ``postgresql://postgres@127.0.0.1:5432/support_test``)
to run every database test on PostgreSQL as well; the database is created if
missing. With ``SUPPORT_REQUIRE_PG=1`` (CI) the run fails unless PostgreSQL
tests ran.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from typer.testing import CliRunner, Result

from support_requests.cli.main import app as supportctl_app
from support_requests.handlers.app import create_app
from support_requests.handlers.settings import Settings
from support_requests.storage.database import sync_url
from support_requests.storage.models import Base
from tests.helpers import SECRET

# Under pytest-xdist (``-n auto``) each worker process has a database of its own, named
# after the given one and the worker ("support_test_gw0"), created if missing.
_XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
PG_URL = os.environ.get("SUPPORT_TEST_PG_URL")
if PG_URL and _XDIST_WORKER:
    _given = make_url(PG_URL)
    PG_URL = _given.set(database=f"{_given.database}_{_XDIST_WORKER}").render_as_string(
        hide_password=False
    )
# The machine's Redis: tests that need it fail (never skip) when it is not there.
REDIS_URL = os.environ.get("SUPPORT_TEST_REDIS_URL") or "redis://127.0.0.1:6379/0"
REQUIRE_PG = os.environ.get("SUPPORT_REQUIRE_PG") == "1"
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])
_pg_ready = False
_pg_passed = 0


def _ensure_pg_database(url: str) -> None:
    global _pg_ready
    if _pg_ready:
        return
    target = make_url(url)
    admin_url = sync_url(url).set(database="postgres")
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        exists = connection.scalar(
            sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": target.database}
        )
        if not exists:
            connection.execute(sa.text(f'CREATE DATABASE "{target.database}"'))
    engine.dispose()
    _pg_ready = True


_pg_engines: dict[str, sa.Engine] = {}


def reset_pg(url: str) -> None:
    """Every table of the models present and empty, ids restarting at 1."""
    _ensure_pg_database(url)
    engine = _pg_engines.get(url)
    if engine is None:
        engine = _pg_engines[url] = sa.create_engine(sync_url(url), poolclass=sa.NullPool)
    tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    except sa.exc.ProgrammingError:
        # A test dropped or changed tables (migrations): build them again.
        Base.metadata.drop_all(engine)
        Base.metadata.create_all(engine)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file with every table of the models, empty, made once: tests get copies
    (creating the tables in each test's file costs more than most tests)."""
    path = tmp_path_factory.mktemp("template") / "support.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    engine.dispose()
    return path


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """A fresh database on each backend: every table of the models present and empty."""
    if request.param == "postgresql":
        assert PG_URL is not None
        request.node.add_marker(pytest.mark.postgres)
        reset_pg(PG_URL)
        return PG_URL
    shutil.copyfile(sqlite_template, tmp_path / "support.db")
    return f"sqlite:///{tmp_path / 'support.db'}"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        jwt_secret=SECRET.encode(),
        data_dir=tmp_path,
        validate_responses=True,
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[Any]:
    """An HTTP client of a fresh app (lifespan run, response validation on)."""
    app = create_app(settings)
    with app.test_client() as test_client:
        yield test_client


@pytest.fixture
def db(database_url: str) -> Iterator[sa.Engine]:
    """A blocking engine on the test's database, for asserting stored state."""
    engine = sa.create_engine(sync_url(database_url))
    yield engine
    engine.dispose()


def pytest_sessionstart(session: pytest.Session) -> None:
    if REQUIRE_PG and not PG_URL:
        pytest.exit("SUPPORT_REQUIRE_PG=1 but SUPPORT_TEST_PG_URL is not set", returncode=3)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    global _pg_passed
    if report.when == "call" and report.passed and "[postgresql" in report.nodeid:
        _pg_passed += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Under xdist the controller sees every worker's reports; a worker sees only its own.
    if REQUIRE_PG and not _XDIST_WORKER and exitstatus == 0 and _pg_passed == 0:
        session.exitstatus = 3
        print("\nSUPPORT_REQUIRE_PG=1 but no PostgreSQL test passed")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if PG_URL:
        terminalreporter.write_line(f"PostgreSQL tests passed: {_pg_passed}")


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """supportctl in-process, in an environment with only the given ``SUPPORT_*`` variables."""
    for name in list(os.environ):
        if name.startswith("SUPPORT_") or name in ("NO_COLOR", "FORCE_COLOR"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SUPPORT_DATA_DIR", str(tmp_path / "data"))

    def invoke(*args: str, **env: str) -> Result:
        result = CliRunner().invoke(supportctl_app, list(args), env=env)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        assert "Traceback" not in result.output
        return result

    return invoke
