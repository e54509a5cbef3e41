"""Local operator commands: ``serve``, ``db``, ``version``.

These run on the server's machine and read its ``SUPPORT_*`` configuration;
``db`` talks to the database directly, through the storage layer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.text import Text

from support_requests.cli.client import cli_version
from support_requests.cli.local import database_url, local_settings
from support_requests.cli.render import fail, make_console

APP_FACTORY = "support_requests.handlers.app:app_from_environment"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")

db_app = typer.Typer(help="The database: create or upgrade the schema.", no_args_is_help=True)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        metavar="URL",
        envvar="SUPPORT_DATABASE_URL",
        show_envvar=True,
        help="sqlite:///path.db or postgresql://user@host/db. "
        "Default: support.db in SUPPORT_DATA_DIR (./.supportdesk).",
    ),
]


DbJson = Annotated[
    bool, typer.Option("--json", help="Print the database and its schema revision as JSON.")
]
T = TypeVar("T")


def shown_url(url: str) -> str:
    """A database URL with any password hidden."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def database_error(exc: Exception) -> str:
    """The driver's own words for a database failure, without SQLAlchemy's boilerplate."""
    reason = getattr(exc, "orig", None) or exc
    text = str(reason).strip()
    return text.splitlines()[0] if text else type(reason).__name__


def run_on_database(url: str, action: Callable[[str], T]) -> T:
    """``action(url)``, with a database's failures turned into a clear message (exit 1)."""
    from alembic.util import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from support_requests.storage.schema import SchemaOutOfDate

    try:
        return action(url)
    except (ValueError, SchemaOutOfDate) as exc:
        fail(str(exc))
    except CommandError as exc:
        # Alembic's own refusals: a revision it cannot find, a step past the base.
        fail(f"{shown_url(url)}: {exc}")
    except (SQLAlchemyError, OSError) as exc:
        fail(f"{shown_url(url)}: {database_error(exc)}")


def _describe(url: str, json_output: bool, summary: str) -> None:
    from support_requests.storage import schema

    at, head = run_on_database(url, schema.current), schema.head()
    if json_output:
        document = {"database": shown_url(url), "revision": at, "head": head, "current": at == head}
        typer.echo(json.dumps(document))
        return
    make_console().print(Text(f"{summary} {shown_url(url)} is at revision {at} (newest: {head})."))


def _upgrade(url: str, revision: str) -> None:
    from support_requests.storage import schema

    if revision == "head" and not schema.is_empty(url) and schema.current(url) is None:
        fail(
            f"{shown_url(url)} has tables but no schema revision: "
            "it was not created by supportctl; use an empty database."
        )
    schema.upgrade(url, revision)


@db_app.command("init")
def db_init(url: DatabaseUrl = None, json_output: DbJson = False) -> None:
    """Create the schema, or upgrade it to the newest revision (safe to run again)."""
    target = database_url(url)
    run_on_database(target, lambda u: _upgrade(u, "head"))
    _describe(target, json_output, "Schema ready:")


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    url: DatabaseUrl = None,
    json_output: DbJson = False,
) -> None:
    """Migrate the schema up to a revision (the newest by default)."""
    target = database_url(url)
    run_on_database(target, lambda u: _upgrade(u, revision))
    _describe(target, json_output, "Upgraded:")


# Click reads any word that starts with "-" as an option, so `db downgrade -1` would be
# "No such option: -1": unknown options are handed to the arguments instead, and a word
# that still looks like an option (a mistyped `--database-url`) is refused below.
@db_app.command("downgrade", context_settings={"ignore_unknown_options": True})
def db_downgrade(
    revision: Annotated[
        str, typer.Argument(help="Target revision: an id, -1 for one step, base for none.")
    ],
    url: DatabaseUrl = None,
    json_output: DbJson = False,
) -> None:
    """Migrate the schema down to a revision (base drops every table: data is lost)."""
    from support_requests.storage import schema

    if revision.startswith("--") or not revision.lstrip("-"):
        raise typer.BadParameter(f"no such option: {revision}", param_hint="'REVISION'")
    target = database_url(url)
    run_on_database(target, lambda u: schema.downgrade(u, revision))
    _describe(target, json_output, "Downgraded:")


@db_app.command("backup")
def db_backup(
    file: Annotated[Path, typer.Argument(help="Where to write the copy (a new file).")],
    url: DatabaseUrl = None,
    force: Annotated[bool, typer.Option("--force", help="Replace FILE if it exists.")] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print what was copied as JSON.")
    ] = False,
) -> None:
    """Copy a SQLite database while the server runs (SQLite's online backup: one consistent
    snapshot, writers go on). PostgreSQL: use pg_dump (docs/operations.md, Backups)."""
    from support_requests.storage.backup import BackupRefused, backup_sqlite

    target = database_url(url)
    if file.exists() and not force:
        fail(f"{file} exists; choose a new file or add --force.")
    try:
        copied = run_on_database(target, lambda u: backup_sqlite(u, file))
    except BackupRefused as refused:
        fail(str(refused))
    if json_output:
        typer.echo(json.dumps({"file": str(file), **copied}))
        return
    counts = ", ".join(f"{count} {table}" for table, count in copied["rows"].items())
    make_console().print(
        Text(f"Backed up {shown_url(target)} to {file} ({copied['bytes']} bytes: {counts}).")
    )


@db_app.command("current")
def db_current(url: DatabaseUrl = None, json_output: DbJson = False) -> None:
    """Show the schema revision the database is at, and the newest one."""
    _describe(database_url(url), json_output, "Database")


def serve(
    host: Annotated[
        str, typer.Option(metavar="ADDRESS", help="Interface to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", metavar="PORT", help="TCP port.", min=0, max=65535)
    ] = 8080,
    workers: Annotated[int, typer.Option(metavar="N", help="Worker processes.", min=1)] = 1,
    log_level: Annotated[
        str,
        typer.Option(metavar="LEVEL", help=f"uvicorn's log level: {', '.join(LOG_LEVELS)}."),
    ] = "info",
) -> None:
    """Run the API server (uvicorn), configured by SUPPORT_* variables."""
    import uvicorn

    if log_level.lower() not in LOG_LEVELS:
        raise typer.BadParameter(
            f"must be one of: {', '.join(LOG_LEVELS)}", param_hint="'--log-level'"
        )

    # Read (and validate) the configuration once here, so a bad one fails with a clear
    # message, and the development secret exists before any worker starts.
    settings = local_settings()
    console = make_console(stderr=True)
    if settings.dev_secret_path is not None:
        console.print(
            Text.assemble(
                ("Development mode: ", "bold yellow"),
                "tokens are signed with the development secret in "
                f"{settings.dev_secret_path.resolve()}; "
                "mint one with: supportctl token mint --sub alice --name 'Alex Customer'. "
                "Set SUPPORT_JWT_SECRET (or another key) for anything but local use.",
            )
        )
    else:
        console.print(Text(f"Tokens: {settings.key_description}", style="dim"))
    console.print(Text(f"Database: {shown_url(settings.database_url)}", style="dim"))
    # Once, before any worker starts: workers starting together must not race to
    # migrate an empty SQLite file, and an out-of-date schema stops here, clearly.
    from support_requests.storage import schema
    from support_requests.storage.database import sync_url

    try:
        schema.ensure_current(
            settings.database_url,
            initialise_empty=sync_url(settings.database_url).get_backend_name() == "sqlite",
        )
    except schema.SchemaOutOfDate as problem:
        console.print(Text.assemble(("Error: ", "bold red"), str(problem)))
        raise typer.Exit(1) from None
    if workers > 1:
        # Each worker writes its samples here; a scrape of any of them adds all up.
        from support_requests.metrics import prepare_multiprocess

        prepare_multiprocess()
    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        server_header=False,
        # asyncio's own loop, not uvloop (which uvicorn picks when it is installed): under
        # uvloop a saturated server on SQLite, whose statements run on the loop, answered
        # some requests many passes late (p99 list 136-378 ms, reply 237-291 ms at 32
        # connections, against 55-57 and 64-93 ms on asyncio's loop; PostgreSQL no worse:
        # bench/README.md, "Round two, continued").
        loop="asyncio",
        # The service writes its own JSON line per request (with the request id).
        access_log=False,
        log_level=log_level.lower(),
        timeout_keep_alive=5,
        timeout_graceful_shutdown=10,
    )


def version(
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the versions as JSON.")
    ] = False,
) -> None:
    """Print supportctl's version and the API contract's."""
    import yaml

    from support_requests.openapi import SPEC_PATH

    api_version = str(yaml.safe_load(SPEC_PATH.read_text())["info"]["version"])
    if json_output:
        typer.echo(json.dumps({"version": cli_version(), "apiVersion": api_version}))
        return
    typer.echo(f"supportctl {cli_version()} (API contract {api_version})")
