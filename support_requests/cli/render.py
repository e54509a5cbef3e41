"""Output for people (rich tables, panels, a conversation) and for scripts (the API's JSON).

Nothing here fetches: commands fetch through ``cli.client`` and hand the JSON
to these functions. User text is always wrapped in ``Text``, never parsed as
markup. Colour is off when the stream is not a terminal or ``NO_COLOR`` is set.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, NoReturn

import typer
from rich import box
from rich.align import Align
from rich.cells import cell_len
from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.panel import Panel
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

Viewer = Literal["customer", "admin"]

STATUS_STYLES = {
    "open": "bold yellow",
    "in_progress": "bold cyan",
    "resolved": "bold green",
    "closed": "dim",
}
CUSTOMER_STYLE = "blue"
STAFF_STYLE = "green"
INTERNAL_STYLE = "yellow"
NOTHING = "-"
ATTACHMENT_MARK = "+ "


def make_console(*, stderr: bool = False) -> Console:
    """A console on stdout (or stderr) that honours ``NO_COLOR`` and non-terminals."""
    no_color = bool(os.environ.get("NO_COLOR"))
    return Console(
        stderr=stderr,
        color_system=None if no_color else "auto",
        no_color=no_color,
        highlight=False,
        emoji=False,
    )


def fail(message: str, *details: str) -> NoReturn:
    """Print an error and its detail lines as one block on stderr, and exit 1."""
    lines: list[RenderableType] = [Text(message, style="bold")]
    lines += [Padding(Text(line), (0, 0, 0, 2)) for line in details]
    block = Panel(Group(*lines), title="Error", title_align="left", border_style="red")
    make_console(stderr=True).print(block)
    raise typer.Exit(1)


def print_json_text(text: str) -> None:
    """The API's JSON body exactly as received, newline-terminated."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


# -- small pieces --------------------------------------------------------------


def local_time(value: str | None, style: str = "%Y-%m-%d %H:%M %Z") -> str:
    """An API timestamp (UTC) in this machine's time zone, e.g. ``2026-03-17 15:34 IST``."""
    if value is None:
        return NOTHING
    moment = datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).astimezone()
    return moment.strftime(style).strip()


def short_time(value: str | None, *, seconds: bool = False) -> str:
    """A compact local time for table cells, e.g. ``Mar 17 15:34``."""
    return local_time(value, "%b %d %H:%M:%S" if seconds else "%b %d %H:%M")


def status_text(status: str) -> Text:
    """The status, coloured, with ``in_progress`` written as people say it."""
    return Text(status.replace("_", " "), style=STATUS_STYLES.get(status, ""))


def admin_label(admin_id: str | None, admin_names: Mapping[str, str | None]) -> str:
    """An admin's name and UUID, or ``-``."""
    if admin_id is None:
        return NOTHING
    name = admin_names.get(admin_id)
    return f"{name} ({admin_id})" if name else admin_id


def human_size(size: int) -> str:
    """Bytes as people read them: ``512 B``, ``48.2 KiB``, ``2.0 MiB``."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if round(value, 1) < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


def attachment_facts(attachment: Mapping[str, Any]) -> str:
    """A file's name, type, size and an image's pixels: ``a.png (image/png, 48.2 KiB, 64x48)``."""
    facts = [attachment["contentType"].split(";")[0], human_size(attachment["size"])]
    if attachment["width"] is not None and attachment["height"] is not None:
        facts.append(f"{attachment['width']}x{attachment['height']}")
    return f"{attachment['fileName']} ({', '.join(facts)})"


def attachment_lines(attachment: Mapping[str, Any]) -> list[str]:
    """A file on a message: its facts, then the id to download it with (a line of its own,
    so it is never wrapped), or ``removed``."""
    if attachment["removed"]:
        return [f"{ATTACHMENT_MARK}{attachment_facts(attachment)} removed"]
    return [f"{ATTACHMENT_MARK}{attachment_facts(attachment)}", f"  id {attachment['id']}"]


def _person(name: str | None, fallback: str) -> str:
    return name or fallback


def _with_id(name: str | None, identifier: str) -> str:
    return f"{name} ({identifier})" if name and name != identifier else identifier


# -- lists ---------------------------------------------------------------------


def request_table(
    items: list[dict[str, Any]],
    *,
    viewer: Viewer,
    admin_names: Mapping[str, str | None] | None = None,
    next_cursor: str | None = None,
) -> RenderableType:
    """Requests as a table, one row each, with a hint when more pages exist."""
    if not items:
        return Text("No support requests.")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("Status", no_wrap=True)
    table.add_column("Category", no_wrap=True)
    table.add_column("Subject", ratio=2)
    if viewer == "admin":
        table.add_column("Customer", ratio=1)
        table.add_column("Assignee", ratio=1)
    else:
        table.add_column("Staff", no_wrap=True)
        table.add_column("Unread", justify="right", no_wrap=True)
    table.add_column("Updated", no_wrap=True, min_width=12, max_width=12)
    for item in items:
        row: list[RenderableType] = [
            str(item["id"]),
            status_text(item["status"]),
            item["category"],
            Text(item["subject"]),
        ]
        if viewer == "admin":
            customer = item["customer"]
            row.append(Text(_person(customer["name"], customer["id"])))
            assignee = item["assignedAdminId"]
            row.append(Text((admin_names or {}).get(assignee) or assignee or NOTHING))
        else:
            row.append("assigned" if item["isAssigned"] else "waiting")
            # A server older than contract 1.1 sends no unread count.
            unread = item.get("unreadCount", 0)
            row.append(Text(str(unread), style="bold") if unread else "")
        row.append(short_time(item["updatedAt"]))
        table.add_row(*row)
    count = f"{len(items)} request{'s' if len(items) != 1 else ''}"
    return Group(table, page_footer(count, next_cursor))


def page_footer(count: str, next_cursor: str | None) -> Text:
    """Under a page of a listing: how many, and how to get the next page if there is one."""
    if next_cursor:
        return Text(f"{count}; more with --all, or --cursor {next_cursor}", style="dim")
    return Text(count, style="dim")


def admins_table(admins: list[dict[str, Any]]) -> RenderableType:
    """The admins the service has seen, for ``admin assign --to``."""
    if not admins:
        return Text("No admins yet.")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("Name")
    table.add_column("Id (use with admin assign --to)", no_wrap=True)
    for admin in admins:
        table.add_row(Text(admin["name"] or NOTHING), admin["id"])
    return table


# -- one request ---------------------------------------------------------------


def device_label(device: dict[str, Any]) -> str:
    """The device context on one line: ``ios 18.2 · app 4.2.1 (1042) · iPhone15,3 · …``."""
    parts = [" ".join(p for p in (device["platform"], device.get("osVersion")) if p)]
    if device.get("appVersion") or device.get("appBuild"):
        build = f" ({device['appBuild']})" if device.get("appBuild") else ""
        parts.append(f"app {device.get('appVersion') or '?'}{build}")
    parts += [device[key] for key in ("deviceModel", "locale", "timeZone") if device.get(key)]
    return " · ".join(parts)


def request_card(
    detail: dict[str, Any],
    *,
    viewer: Viewer,
    admin_names: Mapping[str, str | None] | None = None,
) -> RenderableType:
    """The request's metadata: status, people, times and what may be done next."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    grid.add_row("Status", status_text(detail["status"]))
    grid.add_row("Category", detail["category"])
    device = detail.get("device")
    grid.add_row("Device", Text(device_label(device)) if device else Text(NOTHING, style="dim"))
    if viewer == "admin":
        tags = detail.get("tags") or []
        grid.add_row("Tags", Text(", ".join(tags)) if tags else Text("none", style="dim"))
    if viewer == "admin":
        customer = detail["customer"]
        grid.add_row("Customer", Text(_with_id(customer["name"], customer["id"])))
        grid.add_row("Assignee", Text(admin_label(detail["assignedAdminId"], admin_names or {})))
        seen = detail.get("customerLastReadMessageId")
        grid.add_row("Customer has read", f"up to message {seen}" if seen else NOTHING)
    else:
        grid.add_row("Staff", "assigned" if detail["isAssigned"] else "not assigned yet")
    grid.add_row("Created", local_time(detail["createdAt"]))
    grid.add_row("Updated", local_time(detail["updatedAt"]))
    grid.add_row("Last customer message", local_time(detail["lastCustomerMessageAt"]))
    grid.add_row("Last staff message", local_time(detail["lastAdminMessageAt"]))
    if detail["resolvedAt"] is not None:
        grid.add_row("Resolved", local_time(detail["resolvedAt"]))
    if detail["resolutionNote"] is not None:
        grid.add_row("Resolution note", Text(detail["resolutionNote"]))
    if detail["closedAt"] is not None:
        grid.add_row("Closed", local_time(detail["closedAt"]))
    rating = rating_text(detail, viewer=viewer)
    if rating is not None:
        grid.add_row("Rating", rating)
    actions = detail["allowedActions"]
    grid.add_row(
        "Allowed actions",
        Text(", ".join(actions)) if actions else Text("none: the request is closed", style="dim"),
    )
    title = Text.assemble((f"#{detail['id']} ", "bold"), (detail["subject"], "bold"))
    return Panel(grid, title=title, title_align="left", box=box.ROUNDED, expand=False)


def rating_text(detail: Mapping[str, Any], *, viewer: Viewer) -> Text | None:
    """The customer's rating as stars and its comment; for the customer, a hint to rate
    while they may. None when there is nothing to say."""
    # A server older than contract 1.1 sends no rating.
    rating: Mapping[str, Any] | None = detail.get("rating")
    may_rate = viewer == "customer" and "rate" in detail["allowedActions"]
    if rating is None:
        if may_rate:
            hint = f"not rated yet: supportctl mobile rate {detail['id']} --score 1-5"
            return Text(hint, style="dim")
        return Text("not rated", style="dim") if viewer == "admin" else None
    score = rating["score"]
    text = Text.assemble(("★" * score + "☆" * (5 - score), "bold yellow"), f" {score}/5")
    if rating["comment"] is not None:
        text.append("  ")
        text.append(rating["comment"])
    text.append(f"  ({local_time(rating['ratedAt'])})", style="dim")
    if may_rate:
        text.append("\nyou may rate it again while the request allows it", style="dim")
    return text


def first_unread(messages: list[dict[str, Any]], last_read: int | None) -> int | None:
    """The id of the first staff message after the customer's read marker, if any."""
    return next(
        (
            message["id"]
            for message in messages
            if message["authorType"] == "admin" and (last_read is None or message["id"] > last_read)
        ),
        None,
    )


def conversation(
    messages: list[dict[str, Any]],
    *,
    viewer: Viewer,
    me: str | None,
    width: int,
    new_from: int | None = None,
) -> RenderableType:
    """The thread as a chat: customer messages on the left, staff on the right.

    A message's files are listed under its text, one line each; a "new" divider comes before
    message ``new_from`` (the first unread one).

    Besides colour, the two sides differ in alignment, border and label, so
    they stay distinct without colour. Staff's internal notes (admin view only) are
    yellow, with a double border and an "internal note" label.
    """
    bubbles: list[RenderableType] = []
    bubble_max = max(24, width * 3 // 4)
    for message in messages:
        if message["id"] == new_from:
            bubbles.append(Rule(Text("new", style="bold red"), style="red"))
        staff = message["authorType"] == "admin"
        name = message["authorName"]
        internal = bool(message.get("internal"))
        if staff:
            label = f"{_person(name, 'Support')} (staff)"
            if viewer == "admin" and me is not None and message.get("authorId") == me:
                label += ", you"
            if internal:
                label = f"internal note · {label}"
        elif viewer == "customer":
            label = f"You ({name})" if name else "You"
        else:
            label = f"{_person(name, message.get('authorId') or 'Customer')} (customer)"
        body = Text(message["body"])
        # A server older than contract 1.1 sends no attachments.
        attachments: list[dict[str, Any]] = message.get("attachments", [])
        files: list[str] = []
        for attachment in attachments:
            for line in attachment_lines(attachment):
                body.append(f"\n{line}", style="dim" if attachment["removed"] else "")
                files.append(line)
        when = local_time(message["createdAt"])
        lines = [*message["body"].splitlines(), *files]
        content = max((cell_len(line) for line in lines), default=0)
        size = min(bubble_max, max(content, cell_len(label) + 6, cell_len(when) + 6) + 4)
        style = INTERNAL_STYLE if internal else STAFF_STYLE if staff else CUSTOMER_STYLE
        panel = Panel(
            body,
            title=Text(label, style=f"bold {style}"),
            title_align="right" if staff else "left",
            subtitle=Text(when, style="dim"),
            subtitle_align="right" if staff else "left",
            border_style=style,
            box=box.DOUBLE if internal else box.HEAVY if staff else box.ROUNDED,
            width=size,
        )
        bubbles.append(Align.right(panel) if staff else panel)
    return Group(*bubbles)


def request_view(
    detail: dict[str, Any],
    *,
    viewer: Viewer,
    me: str | None,
    width: int,
    admin_names: Mapping[str, str | None] | None = None,
) -> RenderableType:
    """The card and the conversation under it (for the customer, "new" before the first
    unread staff message)."""
    messages = detail["messages"]
    new_from = None
    if viewer == "customer" and detail.get("unreadCount"):
        new_from = first_unread(messages, detail.get("lastReadMessageId"))
    return Group(
        request_card(detail, viewer=viewer, admin_names=admin_names),
        conversation(messages, viewer=viewer, me=me, width=width, new_from=new_from),
    )


def badge_text(badge: Mapping[str, Any]) -> Text:
    """The customer's badge as a sentence."""
    unread, requests = badge["unreadCount"], badge["requestsWithUnread"]
    if not unread:
        return Text("No unread messages.")
    return Text(
        f"{unread} unread message{'s' if unread != 1 else ''} "
        f"in {requests} request{'s' if requests != 1 else ''}."
    )


# -- history -------------------------------------------------------------------


def _change_value(field: str, value: Any, admin_names: Mapping[str, str | None]) -> str:
    if value is None:
        return NOTHING
    if field == "assignedAdminId":
        return admin_names.get(value) or str(value)
    if field.endswith("At") and isinstance(value, str):
        return short_time(value, seconds=True)
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def events_table(
    events: list[dict[str, Any]], admin_names: Mapping[str, str | None]
) -> RenderableType:
    """The request's history, oldest first, each change as ``field: before → after``."""
    zone = datetime.now().astimezone().strftime("%Z")
    table = Table(
        box=box.SIMPLE_HEAD, pad_edge=False, title=f"History ({zone})", title_justify="left"
    )
    table.add_column("When", no_wrap=True)
    table.add_column("Event", no_wrap=True)
    table.add_column("By", ratio=1)
    table.add_column("Changes", ratio=3)
    for event in events:
        actor = event["actor"]
        by = (
            admin_names.get(actor["id"]) or actor["id"] if actor["type"] == "admin" else actor["id"]
        )
        changes = _changes(event["changes"].items(), admin_names)
        table.add_row(
            short_time(event["at"], seconds=True),
            event["type"].replace("_", " "),
            Text(by, style=STAFF_STYLE if actor["type"] == "admin" else CUSTOMER_STYLE),
            Text(changes),
        )
    return table


def _changes(items: Iterable[tuple[str, Any]], admin_names: Mapping[str, str | None]) -> str:
    return "\n".join(
        f"{field}: {_change_value(field, change['from'], admin_names)}"
        f" → {_change_value(field, change['to'], admin_names)}"
        for field, change in items
        if field != "messageId" and not field.startswith("last")
    )


# -- push devices and webhooks -------------------------------------------------------


def short_token(token: str) -> str:
    """A push token cut to its ends, ``740f4707beb…61bb78ad``: enough to tell phones apart."""
    return token if len(token) <= 24 else f"{token[:11]}…{token[-8:]}"


def devices_table(devices: list[dict[str, Any]]) -> RenderableType:
    """The caller's push devices, the most recently registered first."""
    if not devices:
        return Text("No devices registered.")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("Id (use with devices remove)", no_wrap=True)
    table.add_column("Platform", no_wrap=True)
    table.add_column("App", ratio=1)
    table.add_column("Token", no_wrap=True)
    table.add_column("Registered", no_wrap=True)
    for device in devices:
        table.add_row(
            device["id"],
            device["platform"],
            Text(device["appId"] or NOTHING),
            Text(short_token(device["token"])),
            short_time(device["registeredAt"]),
        )
    return table


def enabled_text(endpoint: Mapping[str, Any]) -> Text:
    """``yes``, or ``no`` with why (``gone``: the receiver answered 410)."""
    if endpoint["enabled"]:
        return Text("yes", style="green")
    reason = endpoint["disabledReason"]
    return Text(f"no ({reason})" if reason else "no", style="red")


def webhook_endpoints_table(endpoints: list[dict[str, Any]]) -> RenderableType:
    """Webhook endpoints, one row each."""
    if not endpoints:
        return Text("No webhook endpoints.")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("Id", no_wrap=True)
    table.add_column("URL", ratio=2, overflow="fold")
    table.add_column("Events", ratio=2)
    table.add_column("Enabled", no_wrap=True)
    table.add_column("Description", ratio=1)
    for endpoint in endpoints:
        table.add_row(
            endpoint["id"],
            Text(endpoint["url"]),
            Text("\n".join(endpoint["events"])),
            enabled_text(endpoint),
            Text(endpoint["description"] or NOTHING),
        )
    return table


def webhook_endpoint_card(endpoint: Mapping[str, Any]) -> RenderableType:
    """One webhook endpoint's settings (never its secret: the API shows it once)."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row("URL", Text(endpoint["url"]))
    grid.add_row("Events", Text("\n".join(endpoint["events"])))
    grid.add_row("Enabled", enabled_text(endpoint))
    grid.add_row("Description", Text(endpoint["description"] or NOTHING))
    grid.add_row("Created", local_time(endpoint["createdAt"]))
    grid.add_row("Updated", local_time(endpoint["updatedAt"]))
    title = Text(f"Webhook endpoint {endpoint['id']}", style="bold")
    return Panel(grid, title=title, title_align="left", box=box.ROUNDED, expand=False)


DELIVERY_STYLES = {"pending": "bold yellow", "succeeded": "bold green", "failed": "bold red"}


def deliveries_table(
    deliveries: list[dict[str, Any]], *, next_cursor: str | None = None
) -> RenderableType:
    """An endpoint's deliveries, newest first, with the last answer and the next attempt."""
    if not deliveries:
        return Text("No deliveries.")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("Event", ratio=2, overflow="fold")
    table.add_column("Status", no_wrap=True)
    table.add_column("Attempts", justify="right", no_wrap=True)
    table.add_column("Last answer", ratio=2)
    table.add_column("Next attempt", no_wrap=True)
    table.add_column("Created", no_wrap=True)
    for delivery in deliveries:
        answer = [str(delivery["lastResponseStatus"] or "")]
        if delivery["lastError"]:
            answer.append(delivery["lastError"])
        table.add_row(
            str(delivery["id"]),
            Text(f"{delivery['eventType']}\n{delivery['eventId']}"),
            Text(delivery["status"], style=DELIVERY_STYLES.get(delivery["status"], "")),
            str(delivery["attempts"]),
            Text(" ".join(part for part in answer if part) or NOTHING),
            short_time(delivery["nextAttemptAt"], seconds=True),
            short_time(delivery["createdAt"], seconds=True),
        )
    count = f"{len(deliveries)} deliver{'ies' if len(deliveries) != 1 else 'y'}"
    return Group(table, page_footer(count, next_cursor))


def print_answer(
    text: str, view: RenderableType, *, json_output: bool, headline: str | None = None
) -> None:
    """A command's answer: with ``--json`` the API's JSON exactly as received; otherwise
    ``view``, under ``headline`` (the API's sentence) when given."""
    if json_output:
        print_json_text(text)
        return
    console = make_console()
    if headline is not None:
        console.print(Text(headline, style="bold"))
    console.print(view)
