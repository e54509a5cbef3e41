"""``supportctl admin``: the support staff's side, the queue and the changes to a request."""

from __future__ import annotations

import uuid
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.text import Text

from support_requests.cli import attachments, stats, webhooks_admin
from support_requests.cli.attachments import AttachOption, opened, upload_all, with_attachments
from support_requests.cli.client import (
    ADMIN,
    ADMIN_ATTACHMENTS,
    ADMINS,
    ApiClient,
    ApiReply,
    fetch_pages,
    joined_text,
)
from support_requests.cli.context import (
    AllPagesOption,
    CursorOption,
    JsonOption,
    LimitOption,
    api,
    caller_id,
    complete_category,
    complete_status,
    text_input,
)
from support_requests.cli.render import (
    admins_table,
    events_table,
    make_console,
    print_json_text,
    request_table,
    request_view,
)

app = typer.Typer(
    help="The support staff's side: the queue and its requests.", no_args_is_help=True
)

RequestId = Annotated[int, typer.Argument(help="The support request's number.")]
Note = Annotated[
    str | None,
    typer.Option(
        metavar="TEXT", help="The resolution note the customer sees (needed to resolve, once)."
    ),
]
SORTS = "-createdAt (newest first, the default), createdAt or -updatedAt"

app.add_typer(attachments.admin_app, name="attachments")
app.add_typer(webhooks_admin.app, name="webhooks")


# -- fetching ------------------------------------------------------------------


def _admin_names(client: ApiClient) -> dict[str, str | None]:
    admins: list[dict[str, Any]] = client.call("GET", ADMINS).data
    return {admin["id"]: admin["name"] for admin in admins}


def _assignee(client: ApiClient, target: str) -> str | None:
    """``--to``: a UUID, ``me``, ``none``, or the name of an admin the service has seen."""
    if target.lower() == "none":
        return None
    if target.lower() == "me":
        return caller_id(client)
    try:
        return str(uuid.UUID(target))
    except ValueError:
        pass
    admins: list[dict[str, Any]] = client.call("GET", ADMINS).data
    matches = [a for a in admins if (a["name"] or "").casefold() == target.casefold()]
    if len(matches) == 1:
        return str(matches[0]["id"])
    known = ", ".join(sorted(repr(a["name"]) for a in admins if a["name"])) or "none yet"
    problem = "is the name of several admins" if matches else "is no admin's name"
    raise typer.BadParameter(
        f"{target!r} {problem}; give a UUID, 'me', 'none' or one of: {known}",
        param_hint="'--to'",
    )


def _change(client: ApiClient, method: str, path: str, body: Any, *, json_output: bool) -> None:
    """Send one change and show the updated request it answers with."""
    reply = client.call(method, path, body=body)
    if json_output:
        print_json_text(reply.text)
        return
    _show_detail(reply, names=_admin_names(client), me=caller_id(client))


# -- rendering -----------------------------------------------------------------


def _show_detail(reply: ApiReply, *, names: dict[str, str | None], me: str) -> None:
    console = make_console()
    console.print(Text(reply.message, style="bold"))
    console.print(
        request_view(reply.data, viewer="admin", me=me, width=console.width, admin_names=names)
    )


# -- commands ------------------------------------------------------------------


@app.command()
def queue(
    ctx: typer.Context,
    status: Annotated[
        str | None,
        typer.Option(
            "--status", metavar="STATUS", help="Only this status.", autocompletion=complete_status
        ),
    ] = None,
    category: Annotated[
        str | None,
        typer.Option(
            "--category",
            metavar="CATEGORY",
            help="Only this category.",
            autocompletion=complete_category,
        ),
    ] = None,
    unassigned: Annotated[
        bool, typer.Option("--unassigned", help="Only requests nobody owns.")
    ] = False,
    mine: Annotated[bool, typer.Option("--mine", help="Only requests assigned to you.")] = False,
    platform: Annotated[
        str | None,
        typer.Option("--platform", metavar="PLATFORM", help="Only this platform: ios, android, …"),
    ] = None,
    app_version: Annotated[
        str | None,
        typer.Option("--app-version", metavar="TEXT", help="Only exactly this app version."),
    ] = None,
    tag: Annotated[
        str | None, typer.Option("--tag", metavar="TAG", help="Only requests with this tag.")
    ] = None,
    rated: Annotated[
        bool | None,
        typer.Option("--rated/--unrated", help="Only requests the customer rated, or did not."),
    ] = None,
    max_score: Annotated[
        int | None,
        typer.Option("--max-score", metavar="1-5", help="Only rated requests scored at most this."),
    ] = None,
    sort: Annotated[str | None, typer.Option(metavar="ORDER", help=f"Order: {SORTS}.")] = None,
    all_pages: AllPagesOption = False,
    limit: LimitOption = None,
    cursor: CursorOption = None,
    json_output: JsonOption = False,
) -> None:
    """The support queue, filtered and sorted."""
    if unassigned and mine:
        raise typer.BadParameter(
            "--unassigned and --mine exclude each other", param_hint="'--mine'"
        )
    with api(ctx, json_output=json_output) as client:
        params = {
            "status": status,
            "category": category,
            "assigned": False if unassigned else None,
            "assigneeId": caller_id(client) if mine else None,
            "platform": platform,
            "appVersion": app_version,
            "tag": tag,
            "rated": rated,
            "maxScore": max_score,
            "sort": sort,
            "limit": limit,
            "cursor": cursor,
        }
        pages = fetch_pages(client, ADMIN, params, follow=all_pages)
        if json_output:
            print_json_text(joined_text(pages))
            return
        names = _admin_names(client)
    items = [item for page in pages for item in page.data]
    make_console().print(
        request_table(items, viewer="admin", admin_names=names, next_cursor=pages[-1].next_cursor)
    )


@app.command()
def show(ctx: typer.Context, request_id: RequestId, json_output: JsonOption = False) -> None:
    """Show a request: customer, assignee, the conversation and its history."""
    with api(ctx, json_output=json_output) as client:
        reply = client.call("GET", f"{ADMIN}/{request_id}")
        if json_output:
            print_json_text(reply.text)
            return
        events = client.call("GET", f"{ADMIN}/{request_id}/events").data
        names = _admin_names(client)
        me = caller_id(client)
    console = make_console()
    console.print(
        Group(
            request_view(reply.data, viewer="admin", me=me, width=console.width, admin_names=names),
            events_table(events, names),
        )
    )


@app.command()
def events(ctx: typer.Context, request_id: RequestId, json_output: JsonOption = False) -> None:
    """A request's history, oldest first."""
    with api(ctx, json_output=json_output) as client:
        reply = client.call("GET", f"{ADMIN}/{request_id}/events")
        if json_output:
            print_json_text(reply.text)
            return
        names = _admin_names(client)
    make_console().print(events_table(reply.data, names))


@app.command()
def reply(
    ctx: typer.Context,
    request_id: RequestId,
    body: Annotated[
        str | None,
        typer.Option(metavar="TEXT", help="The reply; or use --body-file, or pipe it on stdin."),
    ] = None,
    body_file: Annotated[
        Path | None,
        typer.Option("--body-file", metavar="FILE", help="Read the reply from FILE ('-': stdin)."),
    ] = None,
    attach: AttachOption = None,
    json_output: JsonOption = False,
) -> None:
    """Reply as staff (an open request moves to in progress and becomes yours if unowned)."""
    _post_message(ctx, request_id, body, body_file, attach, json_output=json_output)


def _post_message(
    ctx: typer.Context,
    request_id: int,
    body: str | None,
    body_file: Path | None,
    attach: list[Path] | None,
    *,
    json_output: bool,
    internal: bool = False,
) -> None:
    """Post a staff message (an internal note when ``internal``) with its files."""
    text = text_input(body, body_file, option="--body", file_option="--body-file")
    fields: dict[str, Any] = {"body": text, "internal": True} if internal else {"body": text}
    with opened(attach) as files, api(ctx, json_output=json_output) as client:
        ids = upload_all(client, ADMIN_ATTACHMENTS, files)
        change = with_attachments(fields, ids)
        _change(client, "POST", f"{ADMIN}/{request_id}/messages", change, json_output=json_output)


@app.command()
def note(
    ctx: typer.Context,
    request_id: RequestId,
    body: Annotated[
        str | None,
        typer.Option(metavar="TEXT", help="The note; or use --body-file, or pipe it on stdin."),
    ] = None,
    body_file: Annotated[
        Path | None,
        typer.Option("--body-file", metavar="FILE", help="Read the note from FILE ('-': stdin)."),
    ] = None,
    attach: AttachOption = None,
    json_output: JsonOption = False,
) -> None:
    """Add an internal note for staff: the customer never sees it; nothing else changes."""
    _post_message(ctx, request_id, body, body_file, attach, json_output=json_output, internal=True)


@app.command()
def assign(
    ctx: typer.Context,
    request_id: RequestId,
    to: Annotated[
        str,
        typer.Option(
            metavar="ADMIN", help="An admin's UUID or name (see 'admin admins'), 'me', or 'none'."
        ),
    ],
    json_output: JsonOption = False,
) -> None:
    """Assign a request to an admin, or unassign it."""
    with api(ctx, json_output=json_output) as client:
        change = {"assignedAdminId": _assignee(client, to)}
        _change(client, "PATCH", f"{ADMIN}/{request_id}", change, json_output=json_output)


@app.command()
def status(
    ctx: typer.Context,
    request_id: RequestId,
    new_status: Annotated[
        str,
        typer.Argument(
            metavar="STATUS",
            help="open, in_progress, resolved or closed.",
            autocompletion=complete_status,
        ),
    ],
    note: Note = None,
    json_output: JsonOption = False,
) -> None:
    """Set a request's status (resolved needs a note; closed is final)."""
    change: dict[str, Any] = {"status": new_status}
    if note is not None:
        change["resolutionNote"] = note
    with api(ctx, json_output=json_output) as client:
        _change(client, "PATCH", f"{ADMIN}/{request_id}", change, json_output=json_output)


@app.command()
def resolve(
    ctx: typer.Context, request_id: RequestId, note: Note = None, json_output: JsonOption = False
) -> None:
    """Resolve a request with a note for the customer (they may still reply)."""
    change: dict[str, Any] = {"status": "resolved"}
    if note is not None:
        change["resolutionNote"] = note
    with api(ctx, json_output=json_output) as client:
        _change(client, "PATCH", f"{ADMIN}/{request_id}", change, json_output=json_output)


@app.command()
def close(ctx: typer.Context, request_id: RequestId, json_output: JsonOption = False) -> None:
    """Close a request for good: no more replies or changes."""
    with api(ctx, json_output=json_output) as client:
        change = {"status": "closed"}
        _change(client, "PATCH", f"{ADMIN}/{request_id}", change, json_output=json_output)


class TagChange(StrEnum):
    """What ``admin tag`` does to the request's set of tags."""

    ADD = "add"
    REMOVE = "remove"


@app.command()
def tag(
    ctx: typer.Context,
    request_id: RequestId,
    change: Annotated[TagChange, typer.Argument(help="add or remove.")],
    name: Annotated[str, typer.Argument(metavar="TAG", help="e.g. bug-ios (a-z, 0-9, '-').")],
    json_output: JsonOption = False,
) -> None:
    """Add a tag to a request or remove one (tags are for staff; customers never see them)."""
    with api(ctx, json_output=json_output) as client:
        current: list[str] = client.call("GET", f"{ADMIN}/{request_id}").data["tags"]
        tags = [*current, name] if change is TagChange.ADD else [t for t in current if t != name]
        body = {"tags": sorted(set(tags))}
        _change(client, "PATCH", f"{ADMIN}/{request_id}", body, json_output=json_output)


@app.command()
def admins(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """The admins the service has seen, with the ids 'assign --to' takes."""
    with api(ctx, json_output=json_output) as client:
        reply = client.call("GET", ADMINS)
    if json_output:
        print_json_text(reply.text)
        return
    make_console().print(admins_table(reply.data))


app.command()(stats.stats)
