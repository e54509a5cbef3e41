"""``supportctl customers``: a data subject's requests, ``export`` and ``erase``.

Local commands, like ``db``: they talk to the server's database directly, through
``support_requests.storage.customers`` (the service ``POST
/api/admin/customers/{sub}/erase`` runs too), so they need no token and no running server.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from support_requests.cli.local import database_url
from support_requests.cli.operator import DatabaseUrl, run_on_database, shown_url
from support_requests.cli.render import fail, make_console

if TYPE_CHECKING:
    from support_requests.storage.customers import CustomerData, Erasure

app = typer.Typer(
    help="A customer's data: export it, or erase it (data-subject requests).",
    no_args_is_help=True,
)

# Who the history names for an erasure run from this machine.
OPERATOR_ID = "supportctl"

Sub = Annotated[str, typer.Argument(metavar="SUB", help="The customer's id (their tokens' sub).")]
AttachmentDir = Annotated[
    Path | None,
    typer.Option(
        "--attachment-dir",
        metavar="DIR",
        envvar="SUPPORT_ATTACHMENT_DIR",
        show_envvar=True,
        help="Where the server keeps attachments' bytes, when not in the database.",
    ),
]


async def _with_service(url: str, directory: Path | None, work: Any) -> Any:
    from support_requests.storage.attachments import AttachmentStore
    from support_requests.storage.customers import CustomerData
    from support_requests.storage.database import Database

    database = Database(url, pool_size=2)
    try:
        service: CustomerData = CustomerData(database, AttachmentStore(database, directory))
        return await work(service)
    finally:
        await database.dispose()


def _run(url: str | None, directory: Path | None, sub: str, work: Any) -> Any:
    """``work(service)`` on the server's database; an unknown customer exits 1."""
    from support_requests.domain.errors import NotFound

    target = database_url(url)
    try:
        return run_on_database(target, lambda u: asyncio.run(_with_service(u, directory, work)))
    except NotFound:
        fail(f"{shown_url(target)} holds no data about customer {sub!r}.")


@app.command("export")
def export(
    sub: Sub,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="Write to FILE instead of stdout."),
    ] = None,
    url: DatabaseUrl = None,
) -> None:
    """Everything held about a customer as JSON: requests, messages (internal notes too),
    attachments' metadata, ratings, uploads and push devices."""
    document = _run(url, None, sub, lambda service: service.export(sub))
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if output is None:
        typer.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    make_console(stderr=True).print(Text(f"Exported customer {sub!r} to {output}."))


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}" if number == 1 else f"{number} {thing}s"


def _held(document: dict[str, Any]) -> str:
    requests = document["requests"]
    messages = sum(len(r["messages"]) for r in requests)
    attachments = sum(len(m["attachments"]) for r in requests for m in r["messages"])
    return (
        f"{_count(len(requests), 'request')} ({_count(messages, 'message')}, "
        f"{_count(attachments, 'attachment')}), "
        f"{_count(len(document['uploads']), 'upload')} not attached, "
        f"{_count(len(document['devices']), 'device')}"
    )


@app.command("erase")
def erase(
    sub: Sub,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Erase without showing what and asking first.")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print what was erased as JSON.")
    ] = False,
    attachment_dir: AttachmentDir = None,
    url: DatabaseUrl = None,
) -> None:
    """Erase a customer's personal data in one transaction (docs/operations.md, "Data
    requests"); their requests stay as skeletons for the statistics. Without --yes it
    shows what it holds and asks; answering no erases nothing and exits 1."""
    from support_requests.domain.lifecycle import Actor
    from support_requests.domain.principal import Principal

    if not yes:
        document = _run(url, attachment_dir, sub, lambda service: service.export(sub))
        make_console(stderr=True).print(Text(f"Customer {sub!r}: {_held(document)}."))
        if not typer.confirm("Erase their personal data? This cannot be undone", err=True):
            fail("Nothing was erased.")
    operator = Principal(sub=OPERATOR_ID, role=Actor.ADMIN)
    erasure: Erasure = _run(url, attachment_dir, sub, lambda service: service.erase(operator, sub))
    if json_output:
        typer.echo(json.dumps(erasure.document()))
        return
    make_console().print(
        Text(
            f"Erased customer {sub!r}: {_count(erasure.requests, 'request')}, "
            f"{_count(erasure.messages, 'message')}, "
            f"{_count(erasure.attachments, 'attachment')}, {_count(erasure.devices, 'device')}."
        )
    )
