"""``supportctl admin webhooks``: the endpoints events are sent to, and their deliveries.

``add`` prints the signing secret, which the API shows in that one answer only; every
other command shows the endpoint without it.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.text import Text

from support_requests.cli.client import ApiReply, fetch_pages, joined_text
from support_requests.cli.context import (
    AllPagesOption,
    CursorOption,
    JsonOption,
    LimitOption,
    api,
    spec_schema,
)
from support_requests.cli.render import (
    deliveries_table,
    make_console,
    print_answer,
    print_json_text,
    webhook_endpoint_card,
    webhook_endpoints_table,
)

ADMIN_WEBHOOKS = "/api/admin/webhooks"

app = typer.Typer(
    help="Webhook endpoints: where events are sent, and how their deliveries went.",
    no_args_is_help=True,
)

EndpointId = Annotated[str, typer.Argument(metavar="ID", help="The endpoint's id (whe_…).")]


def event_types() -> list[str]:
    """The event types an endpoint may take, from the contract."""
    return [str(value) for value in spec_schema("WebhookEventType")["enum"]]


def _complete_event(incomplete: str) -> list[str]:
    return [value for value in event_types() if value.startswith(incomplete)]


EventOption = Annotated[
    list[str] | None,
    typer.Option(
        "--event",
        metavar="TYPE",
        help="An event type to send (repeat for more), e.g. notification.push.",
        autocompletion=_complete_event,
        show_default=False,
    ),
]
DescriptionOption = Annotated[
    str | None, typer.Option(metavar="TEXT", help="What the endpoint is for (one line).")
]


def _endpoint_path(endpoint_id: str, *rest: str) -> str:
    return "/".join([ADMIN_WEBHOOKS, quote(endpoint_id, safe=""), *rest])


def _show_endpoint(reply: ApiReply, *, json_output: bool) -> None:
    card = webhook_endpoint_card(reply.data)
    print_answer(reply.text, card, json_output=json_output, headline=reply.message)


def _show_delivery(reply: ApiReply, *, json_output: bool) -> None:
    table = deliveries_table([reply.data])
    print_answer(reply.text, table, json_output=json_output, headline=reply.message)


@app.command()
def add(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(metavar="URL", help="An https URL that takes POSTs.")],
    event: EventOption = None,
    description: DescriptionOption = None,
    json_output: JsonOption = False,
) -> None:
    """Register an endpoint for some events (all of them unless --event), and print its
    signing secret, which is never shown again."""
    body: dict[str, Any] = {"url": url, "events": event or event_types()}
    if description is not None:
        body["description"] = description
    with api(ctx, json_output=json_output) as client:
        reply = client.call("POST", ADMIN_WEBHOOKS, body=body)
    if json_output:
        print_json_text(reply.text)
        return
    _show_endpoint(reply, json_output=False)
    console = make_console()
    console.print(Text.assemble(("Signing secret: ", "bold"), reply.data["secret"]))
    console.print(
        Text(
            "It will not be shown again: store it now where the receiver reads it "
            "(it verifies the webhook-signature header).",
            style="yellow",
        )
    )


@app.command("list")
def list_endpoints(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Every webhook endpoint, the oldest first."""
    with api(ctx, json_output=json_output) as client:
        reply = client.call("GET", ADMIN_WEBHOOKS)
    print_answer(reply.text, webhook_endpoints_table(reply.data), json_output=json_output)


@app.command()
def show(ctx: typer.Context, endpoint_id: EndpointId, json_output: JsonOption = False) -> None:
    """One endpoint's settings."""
    with api(ctx, json_output=json_output) as client:
        reply = client.call("GET", _endpoint_path(endpoint_id))
    print_answer(reply.text, webhook_endpoint_card(reply.data), json_output=json_output)


@app.command()
def update(
    ctx: typer.Context,
    endpoint_id: EndpointId,
    url: Annotated[str | None, typer.Option("--url", metavar="URL", help="A new URL.")] = None,
    event: EventOption = None,
    description: Annotated[
        str | None,
        typer.Option(metavar="TEXT", help="A new description ('' removes it)."),
    ] = None,
    enabled: Annotated[
        bool | None,
        typer.Option(
            "--enable/--disable",
            help="Turn deliveries on (also after a 410 Gone disabled it) or off.",
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Change an endpoint's URL, events (--event replaces them all), description, or
    whether it is enabled."""
    change: dict[str, Any] = {}
    if url is not None:
        change["url"] = url
    if event:
        change["events"] = event
    if description is not None:
        change["description"] = description or None
    if enabled is not None:
        change["enabled"] = enabled
    if not change:
        raise typer.BadParameter(
            "nothing to change: give --url, --event, --description, --enable or --disable",
            param_hint="'update'",
        )
    with api(ctx, json_output=json_output) as client:
        reply = client.call("PATCH", _endpoint_path(endpoint_id), body=change)
    _show_endpoint(reply, json_output=json_output)


@app.command()
def remove(
    ctx: typer.Context,
    endpoint_id: EndpointId,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove an endpoint and its deliveries (pending ones are never sent)."""
    if not yes:
        typer.confirm(f"Remove webhook endpoint {endpoint_id} and all its deliveries?", abort=True)
    with api(ctx, json_output=False) as client:
        client.call("DELETE", _endpoint_path(endpoint_id))
    make_console().print(Text(f"Webhook endpoint {endpoint_id} removed."))


@app.command()
def deliveries(
    ctx: typer.Context,
    endpoint_id: EndpointId,
    status: Annotated[
        str | None,
        typer.Option("--status", metavar="STATUS", help="Only pending, succeeded or failed."),
    ] = None,
    all_pages: AllPagesOption = False,
    limit: LimitOption = None,
    cursor: CursorOption = None,
    json_output: JsonOption = False,
) -> None:
    """An endpoint's deliveries, newest first: status, attempts, last answer, next try."""
    params = {"status": status, "limit": limit, "cursor": cursor}
    with api(ctx, json_output=json_output) as client:
        pages = fetch_pages(
            client, _endpoint_path(endpoint_id, "deliveries"), params, follow=all_pages
        )
    if json_output:
        print_json_text(joined_text(pages))
        return
    items = [item for page in pages for item in page.data]
    make_console().print(deliveries_table(items, next_cursor=pages[-1].next_cursor))


@app.command()
def retry(
    ctx: typer.Context,
    endpoint_id: EndpointId,
    delivery_id: Annotated[int, typer.Argument(metavar="DELIVERY_ID", help="The delivery's #.")],
    json_output: JsonOption = False,
) -> None:
    """Send a pending or failed delivery again, now."""
    with api(ctx, json_output=json_output) as client:
        reply = client.call(
            "POST", _endpoint_path(endpoint_id, "deliveries", str(delivery_id), "retry")
        )
    _show_delivery(reply, json_output=json_output)


@app.command()
def ping(ctx: typer.Context, endpoint_id: EndpointId, json_output: JsonOption = False) -> None:
    """Send a webhook.ping event to one endpoint, to check it receives and verifies."""
    with api(ctx, json_output=json_output) as client:
        reply = client.call("POST", _endpoint_path(endpoint_id, "ping"))
    _show_delivery(reply, json_output=json_output)
