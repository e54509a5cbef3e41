"""``supportctl mobile``: the customer's side, as the mobile app calls the API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.text import Text

from support_requests.cli.attachments import AttachOption, opened, upload_all, with_attachments
from support_requests.cli.client import (
    MOBILE,
    MOBILE_ATTACHMENTS,
    MOBILE_UNREAD,
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
    complete_category,
    complete_status,
    text_input,
)
from support_requests.cli.render import (
    badge_text,
    devices_table,
    make_console,
    print_answer,
    print_json_text,
    request_table,
    request_view,
)

app = typer.Typer(help="The customer's side: your own support requests.", no_args_is_help=True)
devices_app = typer.Typer(
    help="Your phones' push tokens, so that staff replies reach them.", no_args_is_help=True
)
app.add_typer(devices_app, name="devices")

MOBILE_DEVICES = "/api/mobile/devices"

RequestId = Annotated[int, typer.Argument(help="The support request's number.")]
Body = Annotated[
    str | None,
    typer.Option(metavar="TEXT", help="The reply; or use --body-file, or pipe it on stdin."),
]
BodyFile = Annotated[
    Path | None,
    typer.Option("--body-file", metavar="FILE", help="Read the reply from FILE ('-': stdin)."),
]


def _show_detail(reply: ApiReply, *, json_output: bool, announce: bool = True) -> None:
    if json_output:
        print_json_text(reply.text)
        return
    console = make_console()
    if announce:
        console.print(Text(reply.message, style="bold"))
    console.print(request_view(reply.data, viewer="customer", me=None, width=console.width))


@app.command()
def create(
    ctx: typer.Context,
    category: Annotated[
        str,
        typer.Option(
            "--category",
            metavar="CATEGORY",
            help="account, payment, technical or other.",
            autocompletion=complete_category,
        ),
    ],
    subject: Annotated[str, typer.Option(metavar="TEXT", help="One line saying what is wrong.")],
    message: Annotated[
        str | None,
        typer.Option(metavar="TEXT", help="The first message; or --message-file, or stdin."),
    ] = None,
    message_file: Annotated[
        Path | None,
        typer.Option(
            "--message-file", metavar="FILE", help="Read the first message from FILE ('-': stdin)."
        ),
    ] = None,
    attach: AttachOption = None,
    platform: Annotated[
        str | None,
        typer.Option(
            "--platform",
            metavar="PLATFORM",
            help="The device's platform: ios, android, web or other (needed for the others).",
        ),
    ] = None,
    os_version: Annotated[
        str | None, typer.Option("--os-version", metavar="TEXT", help="e.g. 18.2")
    ] = None,
    app_version: Annotated[
        str | None, typer.Option("--app-version", metavar="TEXT", help="e.g. 4.2.1")
    ] = None,
    app_build: Annotated[
        str | None, typer.Option("--app-build", metavar="TEXT", help="e.g. 1042")
    ] = None,
    device_model: Annotated[
        str | None, typer.Option("--device-model", metavar="TEXT", help="e.g. 'Pixel 8'")
    ] = None,
    locale: Annotated[
        str | None, typer.Option("--locale", metavar="BCP47", help="e.g. de-DE")
    ] = None,
    time_zone: Annotated[
        str | None, typer.Option("--time-zone", metavar="IANA", help="e.g. Europe/Berlin")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Open a support request with its first message (and the device it is sent from)."""
    text = text_input(message, message_file, option="--message", file_option="--message-file")
    device = {
        "platform": platform,
        "osVersion": os_version,
        "appVersion": app_version,
        "appBuild": app_build,
        "deviceModel": device_model,
        "locale": locale,
        "timeZone": time_zone,
    }
    sent = {name: value for name, value in device.items() if value is not None}
    if sent and platform is None:
        raise typer.BadParameter(
            "the device's other fields need its platform", param_hint="'--platform'"
        )
    with opened(attach) as files, api(ctx, json_output=json_output) as client:
        ids = upload_all(client, MOBILE_ATTACHMENTS, files)
        body: dict[str, Any] = {"category": category, "subject": subject, "message": text}
        if sent:
            body["device"] = sent
        reply = client.call("POST", MOBILE, body=with_attachments(body, ids))
    _show_detail(reply, json_output=json_output)


@app.command("list")
def list_requests(
    ctx: typer.Context,
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            metavar="STATUS",
            help="Only this status: open, in_progress, resolved, closed.",
            autocompletion=complete_status,
        ),
    ] = None,
    all_pages: AllPagesOption = False,
    limit: LimitOption = None,
    cursor: CursorOption = None,
    json_output: JsonOption = False,
) -> None:
    """List your support requests, newest first."""
    params = {"status": status, "limit": limit, "cursor": cursor}
    with api(ctx, json_output=json_output) as client:
        pages = fetch_pages(client, MOBILE, params, follow=all_pages)
    if json_output:
        print_json_text(joined_text(pages))
        return
    items = [item for page in pages for item in page.data]
    make_console().print(request_table(items, viewer="customer", next_cursor=pages[-1].next_cursor))


@app.command()
def show(
    ctx: typer.Context,
    request_id: RequestId,
    no_read: Annotated[
        bool, typer.Option("--no-read", help="Leave the messages unread (send no read marker).")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Show a request as a conversation, "new" before the first unread staff message, then
    mark what was shown read."""
    with api(ctx, json_output=json_output) as client:
        reply = client.call("GET", f"{MOBILE}/{request_id}")
        _show_detail(reply, json_output=json_output, announce=False)
        # A server older than contract 1.1 sends no read state; nothing unread, nothing to mark.
        messages = reply.data["messages"]
        if not no_read and reply.data.get("unreadCount") and messages:
            client.call(
                "POST",
                f"{MOBILE}/{request_id}/read",
                body={"lastReadMessageId": messages[-1]["id"]},
            )


@app.command()
def unread(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Your badge: unread staff messages over all your requests."""
    with api(ctx, json_output=json_output) as client:
        reply = client.call("GET", MOBILE_UNREAD)
    if json_output:
        print_json_text(reply.text)
        return
    make_console().print(badge_text(reply.data))


@app.command()
def reply(
    ctx: typer.Context,
    request_id: RequestId,
    body: Body = None,
    body_file: BodyFile = None,
    attach: AttachOption = None,
    json_output: JsonOption = False,
) -> None:
    """Reply to one of your requests (a resolved one reopens)."""
    text = text_input(body, body_file, option="--body", file_option="--body-file")
    with opened(attach) as files, api(ctx, json_output=json_output) as client:
        ids = upload_all(client, MOBILE_ATTACHMENTS, files)
        path = f"{MOBILE}/{request_id}/messages"
        answer = client.call("POST", path, body=with_attachments({"body": text}, ids))
    _show_detail(answer, json_output=json_output)


@app.command()
def rate(
    ctx: typer.Context,
    request_id: RequestId,
    score: Annotated[
        int,
        typer.Option(
            "--score", metavar="1-5", min=1, max=5, help="1 (very dissatisfied) to 5 (very)."
        ),
    ],
    comment: Annotated[
        str | None, typer.Option(metavar="TEXT", help="What went well or not (optional).")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Rate a resolved or closed request, within 14 days (rating again replaces it)."""
    body: dict[str, Any] = {"score": score}
    if comment is not None:
        body["comment"] = comment
    with api(ctx, json_output=json_output) as client:
        answer = client.call("PUT", f"{MOBILE}/{request_id}/rating", body=body)
    _show_detail(answer, json_output=json_output)


# -- push devices ----------------------------------------------------------------------------


@devices_app.command("register")
def register_device(
    ctx: typer.Context,
    platform: Annotated[
        str,
        typer.Option(
            "--platform", metavar="PLATFORM", help="ios (an APNs token) or android (an FCM token)."
        ),
    ],
    token: Annotated[str, typer.Option("--token", metavar="TOKEN", help="The push token.")],
    app_id: Annotated[
        str | None,
        typer.Option("--app-id", metavar="ID", help="The app's bundle id or package name."),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Register a push token for you (a token someone else registered moves to you)."""
    body: dict[str, Any] = {"platform": platform, "token": token}
    if app_id is not None:
        body["appId"] = app_id
    with api(ctx, json_output=json_output) as client:
        reply = client.call("POST", MOBILE_DEVICES, body=body)
    table = devices_table([reply.data])
    print_answer(reply.text, table, json_output=json_output, headline=reply.message)


@devices_app.command("list")
def list_devices(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Your push devices, the most recently registered first."""
    with api(ctx, json_output=json_output) as client:
        reply = client.call("GET", MOBILE_DEVICES)
    print_answer(reply.text, devices_table(reply.data), json_output=json_output)


@devices_app.command("remove")
def remove_device(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(metavar="ID", help="The device's id (dev_…).")],
) -> None:
    """Stop pushing to one of your devices."""
    with api(ctx, json_output=False) as client:
        client.call("DELETE", f"{MOBILE_DEVICES}/{quote(device_id, safe='')}")
    make_console().print(Text(f"Device {device_id} removed."))
