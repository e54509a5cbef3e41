"""supportctl's local operator commands: token, db, demo, serve, version, completion."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from support_requests.cli.tokens import admin_id_for
from support_requests.storage import schema
from support_requests.storage.database import sync_url
from support_requests.storage.models import Base
from tests.conftest import BACKENDS, PG_URL, reset_pg
from tests.helpers import flat
from tests.servers import SUPPORTCTL, clean_environment, empty_database, supportctl_server

SECRET = "cli-test-secret-" + "s" * 40


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database, with no table at all (not even Alembic's)."""
    if request.param == "postgresql":
        assert PG_URL is not None
        reset_pg(PG_URL)
        empty_database(PG_URL)
        yield PG_URL
        empty_database(PG_URL)
    else:
        yield f"sqlite:///{tmp_path / 'support_requests.cli.db'}"


def claims_of(token: str, key: str | bytes) -> dict[str, Any]:
    return dict(jwt.decode(token, key, algorithms=["HS256"], options={"verify_aud": False}))


# -- token mint -----------------------------------------------------------------------------


def test_token_mint_signs_with_the_servers_secret(run: Any, tmp_path: Path) -> None:
    result = run(
        "token", "mint", "--sub", "alice", "--name", "Alex Customer",
        "--picture", "https://cdn.example.com/alex.png", "--ttl", "15m",
        SUPPORT_JWT_SECRET=SECRET,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    claims = claims_of(result.stdout.strip(), SECRET)
    assert claims["sub"] == "alice"
    assert claims["name"] == "Alex Customer"
    assert claims["picture"] == "https://cdn.example.com/alex.png"
    assert claims["exp"] - claims["iat"] == 15 * 60
    assert "role" not in claims
    assert not (tmp_path / "data" / "dev-jwt-secret").exists()


def test_token_mint_without_a_key_uses_the_development_secret(run: Any, tmp_path: Path) -> None:
    result = run("token", "mint", "--sub", "alice")
    assert result.exit_code == 0, result.output
    secret_file = tmp_path / "data" / "dev-jwt-secret"
    assert claims_of(result.stdout.strip(), secret_file.read_text().strip())["sub"] == "alice"
    assert "development secret" in result.stderr
    again = run("token", "mint", "--sub", "bob")
    assert claims_of(again.stdout.strip(), secret_file.read_text().strip())["sub"] == "bob"


def test_admin_token_without_sub_gets_a_stable_uuid_from_the_name(run: Any) -> None:
    first = run("token", "mint", "--admin", "--name", "Sam Rivera", SUPPORT_JWT_SECRET=SECRET)
    second = run("token", "mint", "--admin", "--name", "Sam Rivera", SUPPORT_JWT_SECRET=SECRET)
    other = run("token", "mint", "--admin", "--name", "Mei Tanaka", SUPPORT_JWT_SECRET=SECRET)
    subs = [claims_of(r.stdout.strip(), SECRET)["sub"] for r in (first, second, other)]
    assert subs[0] == subs[1] == admin_id_for("Sam Rivera") == str(uuid.UUID(subs[0]))
    assert subs[2] != subs[0]
    assert claims_of(first.stdout.strip(), SECRET)["role"] == "admin"


def test_admin_token_sub_must_be_a_uuid(run: Any) -> None:
    refused = run("token", "mint", "--admin", "--sub", "sam", SUPPORT_JWT_SECRET=SECRET)
    assert refused.exit_code == 2
    assert "UUID" in refused.stderr
    admin_id = str(uuid.uuid4())
    accepted = run("token", "mint", "--admin", "--sub", admin_id, SUPPORT_JWT_SECRET=SECRET)
    assert claims_of(accepted.stdout.strip(), SECRET)["sub"] == admin_id


@pytest.mark.parametrize(
    "args",
    [["--ttl", "soon"], ["--ttl", "0m"], ["--picture", "ftp://x/y.png"], []],
    ids=["ttl-word", "ttl-zero", "picture-not-http", "no-sub-or-name"],
)
def test_token_mint_usage_errors_exit_2(run: Any, args: list[str]) -> None:
    subject = ["--sub", "alice"] if args else []
    result = run("token", "mint", *subject, *args, SUPPORT_JWT_SECRET=SECRET)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""


def test_token_mint_adds_issuer_and_audience_when_the_server_checks_them(run: Any) -> None:
    result = run(
        "token", "mint", "--sub", "alice", "--json",
        SUPPORT_JWT_SECRET=SECRET, SUPPORT_JWT_ISSUER="https://id.example.com",
        SUPPORT_JWT_AUDIENCE="support-requests",
    )  # fmt: skip
    document = json.loads(result.stdout)
    claims = jwt.decode(
        document["token"], SECRET, algorithms=["HS256"],
        issuer="https://id.example.com", audience="support-requests",
    )  # fmt: skip
    assert (document["sub"], document["role"]) == ("alice", "customer")
    assert document["expiresAt"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(claims["exp"]))


def test_token_mint_explains_it_cannot_sign_for_a_public_key_server(
    run: Any, tmp_path: Path
) -> None:
    public_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    key_file = tmp_path / "public.pem"
    key_file.write_bytes(public_pem)
    result = run("token", "mint", "--sub", "alice", SUPPORT_JWT_PUBLIC_KEY=str(key_file))
    assert result.exit_code == 1
    error = flat(result.stderr)
    assert "ES256 with the public key from SUPPORT_JWT_PUBLIC_KEY" in error
    assert "identity provider" in error
    assert result.stdout == ""


def test_a_bad_server_configuration_is_a_message_not_a_traceback(run: Any) -> None:
    result = run("token", "mint", "--sub", "alice", SUPPORT_JWT_SECRET="too-short")
    assert result.exit_code == 1
    assert "at least 32 bytes" in flat(result.stderr)
    served = run("serve", SUPPORT_JWT_SECRET="too-short")
    assert served.exit_code == 1
    assert "at least 32 bytes" in flat(served.stderr)


# -- db ---------------------------------------------------------------------------------------


def test_db_init_creates_the_schema_at_the_newest_revision_and_is_safe_to_repeat(
    run: Any, database: str
) -> None:
    first = run("db", "init", "--json", SUPPORT_DATABASE_URL=database)
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["current"] is True
    assert schema.current(database) == schema.head()
    engine = sa.create_engine(sync_url(database))
    try:
        assert set(Base.metadata.tables) <= set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()

    again = run("db", "init", "--database-url", database)
    assert again.exit_code == 0, again.output
    assert f"is at revision {schema.head()}" in flat(again.stdout)
    current = json.loads(run("db", "current", "--json", SUPPORT_DATABASE_URL=database).stdout)
    assert (current["revision"], current["head"]) == (schema.head(), schema.head())


def test_db_downgrade_to_base_then_upgrade_round_trips(run: Any, database: str) -> None:
    assert run("db", "init", SUPPORT_DATABASE_URL=database).exit_code == 0
    down = run("db", "downgrade", "base", "--json", SUPPORT_DATABASE_URL=database)
    assert down.exit_code == 0, down.output
    assert json.loads(down.stdout)["revision"] is None
    assert schema.is_empty(database)
    up = run("db", "upgrade", "--json", SUPPORT_DATABASE_URL=database)
    assert up.exit_code == 0, up.output
    assert json.loads(up.stdout)["current"] is True


def _stamp(database: str, revision: str) -> None:
    """Write ``revision`` as the database's Alembic revision, as another version would."""
    engine = sa.create_engine(sync_url(database))
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.text("UPDATE alembic_version SET version_num = :r"), {"r": revision}
            )
    finally:
        engine.dispose()


@pytest.mark.parametrize("args", [["-1"], ["--", "-1"]], ids=["-1", "-- -1"])
def test_db_downgrade_minus_one_steps_back_one_revision_with_or_without_a_double_dash(
    run: Any, database: str, args: list[str]
) -> None:
    assert run("db", "init", SUPPORT_DATABASE_URL=database).exit_code == 0
    scripts = ScriptDirectory.from_config(schema.alembic_config(database))
    previous = scripts.get_revision(schema.head()).down_revision
    assert isinstance(previous, str)
    down = run("db", "downgrade", "--json", *args, SUPPORT_DATABASE_URL=database)
    assert down.exit_code == 0, down.output
    assert json.loads(down.stdout) == {
        "database": database,
        "revision": previous,
        "head": schema.head(),
        "current": False,
    }
    assert schema.current(database) == previous


@pytest.mark.parametrize(
    ("revision", "reason"),
    [("-9", "Relative revision -9 didn't produce 9 migrations"), ("nonsense", "nonsense")],
)
def test_db_downgrade_past_the_base_or_to_an_unknown_revision_is_a_message_not_a_traceback(
    run: Any, database: str, revision: str, reason: str
) -> None:
    assert run("db", "init", SUPPORT_DATABASE_URL=database).exit_code == 0
    result = run("db", "downgrade", "--database-url", database, "--", revision)
    assert result.exit_code == 1
    assert reason in flat(result.stderr)
    assert schema.current(database) == schema.head()


def test_db_downgrade_at_no_revision_says_there_is_nothing_to_downgrade(
    run: Any, database: str
) -> None:
    result = run("db", "downgrade", "-1", SUPPORT_DATABASE_URL=database)
    assert result.exit_code == 1
    assert "at no revision: there is nothing to downgrade" in flat(result.stderr)
    assert schema.current(database) is None


def test_db_downgrade_refuses_a_mistyped_option(run: Any) -> None:
    result = run("db", "downgrade", "--databse-url")
    assert result.exit_code == 2
    assert "no such option: --databse-url" in flat(result.stderr)


def test_serve_on_a_schema_newer_than_it_knows_says_to_upgrade_the_service(
    run: Any, database: str
) -> None:
    assert run("db", "init", SUPPORT_DATABASE_URL=database).exit_code == 0
    _stamp(database, "9999_from_a_newer_version")
    served = run("serve", SUPPORT_DATABASE_URL=database, SUPPORT_JWT_SECRET="s" * 40)
    upgraded = run("db", "upgrade", SUPPORT_DATABASE_URL=database)
    stepped_down = run("db", "downgrade", "-1", SUPPORT_DATABASE_URL=database)
    for result in (served, upgraded, stepped_down):
        assert result.exit_code == 1
        error = flat(result.stderr)
        assert "9999_from_a_newer_version, newer than this version of the service knows" in error
        assert "Upgrade the service" in error
        assert "run `supportctl db upgrade`" not in error
    assert schema.current(database) == "9999_from_a_newer_version"


def test_serve_refuses_an_out_of_date_schema_and_names_the_command(run: Any, database: str) -> None:
    assert run("db", "init", SUPPORT_DATABASE_URL=database).exit_code == 0
    assert run("db", "downgrade", "base", SUPPORT_DATABASE_URL=database).exit_code == 0
    engine = sa.create_engine(sync_url(database))
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE leftover (id INTEGER)"))
    try:
        served = run("serve", SUPPORT_DATABASE_URL=database, SUPPORT_JWT_SECRET="s" * 40)
    finally:
        with engine.begin() as connection:
            connection.execute(sa.text("DROP TABLE leftover"))
        engine.dispose()
    assert served.exit_code == 1
    assert "supportctl db upgrade" in flat(served.stderr)


def test_db_init_refuses_tables_it_did_not_create(run: Any, database: str) -> None:
    engine = sa.create_engine(sync_url(database))
    Base.metadata.create_all(engine)
    engine.dispose()
    result = run("db", "init", SUPPORT_DATABASE_URL=database)
    assert result.exit_code == 1
    assert "has tables but no schema revision" in flat(result.stderr)


def test_db_init_on_an_unreachable_database_exits_1_with_the_reason(run: Any) -> None:
    result = run("db", "init", SUPPORT_DATABASE_URL="postgresql://postgres@127.0.0.1:9/nothing")
    assert result.exit_code == 1
    error = flat(result.stderr)
    assert "postgresql://postgres@127.0.0.1:9/nothing" in error
    assert "refused" in error.lower() or "connect" in error.lower()


def test_db_commands_hide_the_database_password(run: Any) -> None:
    result = run("db", "current", SUPPORT_DATABASE_URL="postgresql://app:hunter2@127.0.0.1:9/x")
    assert result.exit_code == 1
    assert "hunter2" not in result.output
    assert "app:***@127.0.0.1:9/x" in result.output


# -- demo seed --------------------------------------------------------------------------------


def test_demo_seed_writes_requests_through_the_lifecycle(run: Any, database: str) -> None:
    result = run(
        "demo", "seed", "--customers", "4", "--requests", "40", "--admins", "2", "--seed", "4",
        "--json", SUPPORT_DATABASE_URL=database,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    seeded = json.loads(result.stdout)
    assert sum(seeded["requests"].values()) == 40
    assert set(seeded["requests"]) == {"open", "in_progress", "resolved", "closed"}
    assert [a["id"] for a in seeded["admins"]] == [
        admin_id_for(a["name"]) for a in seeded["admins"]
    ]
    assert all(c["id"] == c["name"] for c in seeded["customers"])  # so --as NAME is them
    assert schema.current(database) == schema.head()

    engine = sa.create_engine(sync_url(database))
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT * FROM support_requests")).mappings().all()
            admins = connection.scalars(sa.text("SELECT id FROM admins")).all()
            threads = connection.execute(
                sa.text("SELECT request_id, COUNT(*) FROM messages GROUP BY request_id")
            ).all()
            events = connection.execute(
                sa.text("SELECT type, actor_id, changes FROM request_events")
            ).all()
    finally:
        engine.dispose()
    assert len(rows) == 40
    assert {row["customer_id"] for row in rows} <= {c["id"] for c in seeded["customers"]}
    assert sorted(admins) == sorted(a["id"] for a in seeded["admins"])
    by_status: dict[str, int] = {}
    for row in rows:
        by_status[row["status"]] = by_status.get(row["status"], 0) + 1
        assert (row["closed_at"] is not None) == (row["status"] == "closed")
        assert (row["resolution_note"] is not None) == (row["status"] == "resolved")
        assert row["assigned_admin_id"] is None or row["assigned_admin_id"] in admins
        if row["status"] == "in_progress":
            assert row["last_admin_message_at"] is not None
    assert by_status == seeded["requests"]
    assert len(threads) == 40 and all(count >= 1 for _, count in threads)
    changes = [(kind, actor, _json(raw)) for kind, actor, raw in events]
    handed_over = [
        c for kind, actor, c in changes
        if kind == "assignment_changed" and c["assignedAdminId"]["to"] not in (None, actor)
    ]  # fmt: skip
    reopened = [
        c for kind, _, c in changes
        if kind == "status_changed" and c["status"] == {"from": "resolved", "to": "open"}
    ]  # fmt: skip
    assert handed_over and reopened


def _json(value: Any) -> dict[str, Any]:
    return dict(json.loads(value) if isinstance(value, str) else value)


def test_demo_seed_with_the_same_seed_writes_the_same_data(run: Any, tmp_path: Path) -> None:
    def subjects(url: str) -> list[tuple[str, str, str]]:
        engine = sa.create_engine(sync_url(url))
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text("SELECT customer_id, subject, status FROM support_requests ORDER BY id")
            )
            seen = [tuple(row) for row in rows]
        engine.dispose()
        return seen

    urls = [f"sqlite:///{tmp_path / f'seed-{n}.db'}" for n in range(2)]
    for url in urls:
        assert (
            run("demo", "seed", "--requests", "15", "--seed", "42", "--database-url", url).exit_code
            == 0
        )
    assert subjects(urls[0]) == subjects(urls[1])
    assert len(subjects(urls[0])) == 15


def test_demo_seed_shows_progress_and_how_to_act_as_the_people_it_made(
    run: Any, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    result = run("demo", "seed", "--customers", "2", "--requests", "6", "--database-url", url)
    assert result.exit_code == 0, result.output
    assert re.search(r"Seeding support requests.*6/6", result.stderr)
    assert "Seeded 6 support requests" in result.stdout
    assert "supportctl --as-admin 'Sam Rivera' admin queue" in result.stdout


# -- serve, version, completion ---------------------------------------------------------------


def test_serve_rejects_an_unknown_log_level(run: Any) -> None:
    result = run("serve", "--log-level", "loud", SUPPORT_JWT_SECRET=SECRET)
    assert result.exit_code == 2
    assert "--log-level" in result.stderr


@pytest.mark.slow
def test_serve_runs_several_workers_without_a_server_header(tmp_path: Path) -> None:
    env = clean_environment(SUPPORT_DATA_DIR=str(tmp_path / "data"), SUPPORT_JWT_SECRET=SECRET)
    with supportctl_server(env, tmp_path, "--workers", "2") as server:
        response = httpx.get(f"{server.url}/api/mobile/support-requests", timeout=5)
        assert response.status_code == 401
        assert "server" not in response.headers
        children = _children(server.process.pid)
        assert len(children) >= 2, children
        log = server.log()
    assert "Tokens: HS256 with the secret from SUPPORT_JWT_SECRET" in log
    assert SECRET not in log


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def test_version_prints_the_package_and_contract_versions(run: Any) -> None:
    from importlib import metadata

    document = json.loads(run("version", "--json").stdout)
    assert document["version"] == metadata.version("support-requests")
    assert document["apiVersion"] == schema_version()
    assert run("version").stdout.startswith(f"supportctl {document['version']} ")


def schema_version() -> str:
    import yaml

    from support_requests.openapi import SPEC_PATH

    return str(yaml.safe_load(SPEC_PATH.read_text())["info"]["version"])


@pytest.mark.slow
def test_shell_completion_offers_the_contracts_categories_and_statuses() -> None:
    def complete(words: str) -> list[str]:
        env = clean_environment(
            _SUPPORTCTL_COMPLETE="complete_bash",
            COMP_WORDS=words,
            COMP_CWORD=str(len(words.split()) - (0 if words.endswith(" ") else 1)),
        )
        completed = subprocess.run(
            [SUPPORTCTL], env=env, capture_output=True, text=True, timeout=60, check=True
        )
        return completed.stdout.split()

    assert complete("supportctl mobile create --category te") == ["technical"]
    assert complete("supportctl admin queue --status ") == [
        "open",
        "in_progress",
        "resolved",
        "closed",
    ]
    assert "queue" in complete("supportctl admin ")


@pytest.mark.slow
def test_show_completion_prints_the_script_to_install() -> None:
    completed = subprocess.run(
        [SUPPORTCTL, "--show-completion", "bash"],
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    assert "_SUPPORTCTL_COMPLETE=complete_bash" in completed.stdout
