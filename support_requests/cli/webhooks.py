"""``supportctl webhooks``: ``listen``, a local receiver that verifies and prints deliveries.

What ``stripe listen`` is to Stripe: point a webhook endpoint at it
(``SUPPORT_WEBHOOK_ALLOW_HTTP=1`` and ``SUPPORT_WEBHOOK_ALLOW_PRIVATE=1`` let the service
deliver to ``http://127.0.0.1``) and watch the stream. The receiver is
``support_requests.webhooks.listen``; this module parses options and draws the lines.
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from support_requests.cli.render import make_console, print_json_text

if TYPE_CHECKING:
    # The receiver (Starlette, uvicorn) is imported when `listen` runs, so other commands
    # start fast.
    from support_requests.webhooks.listen import Receipt

app = typer.Typer(help="Webhooks: receive and check deliveries locally.", no_args_is_help=True)

REFUSED_STYLE = "bold red"


def _line(receipt: Receipt) -> Text:
    """One line for people: time, webhook-id, type, request and a short summary."""
    from support_requests.webhooks.listen import summary

    moment = receipt.received_at.astimezone().strftime("%H:%M:%S")
    line = Text.assemble((moment, "dim"), "  ", (receipt.webhook_id or "-", "cyan"), "  ")
    if receipt.refusal is not None:
        return line.append(f"refused (401): {receipt.refusal}", style=REFUSED_STYLE)
    event = receipt.event
    if event is None:
        return line.append("verified, but the body is not a JSON object", style="yellow")
    data = event.get("data")
    request_id = data.get("requestId") if isinstance(data, dict) else None
    line.append(str(event.get("type", "-")), style="bold")
    if request_id is not None:
        line.append(f"  request {request_id}", style="green")
    described = summary(event)
    return line.append(f"  {described}") if described else line


def _json_line(receipt: Receipt) -> str:
    """The body as received, on one line (a body that spans lines is compacted)."""
    text = receipt.body.decode("utf-8", errors="replace")
    if "\n" not in text and "\r" not in text:
        return text
    if receipt.event is not None:
        return json.dumps(receipt.event, separators=(",", ":"), ensure_ascii=False)
    return json.dumps(text)


@app.command()
def listen(
    secret: Annotated[
        str,
        typer.Option(
            "--secret",
            metavar="WHSEC",
            help="The endpoint's signing secret (whsec_…), shown once when it was created.",
        ),
    ],
    port: Annotated[
        int,
        typer.Option("--port", metavar="PORT", min=1, max=65535, help="TCP port to listen on."),
    ] = 8787,
    host: Annotated[
        str, typer.Option("--host", metavar="ADDRESS", help="Interface to listen on.")
    ] = "127.0.0.1",
    json_output: Annotated[
        bool,
        typer.Option(
            "--json", help="Print each verified body as one JSON line (refusals on stderr)."
        ),
    ] = False,
    status: Annotated[
        int,
        typer.Option(
            "--status",
            metavar="N",
            min=200,
            max=599,
            help="Answer verified deliveries with N instead of 204 (500 to watch retries, "
            "410 to see the endpoint disabled).",
        ),
    ] = 204,
) -> None:
    """Receive deliveries, verify each signature, print one line per event (Ctrl-C stops)."""
    import uvicorn

    from support_requests.webhooks.listen import InvalidSecret, Listener, webhook_for

    try:
        webhook = webhook_for(secret)
    except InvalidSecret as exc:
        raise typer.BadParameter(str(exc), param_hint="'--secret'") from None
    out = make_console()
    err = make_console(stderr=True)

    def on_receipt(receipt: Receipt) -> None:
        if json_output and receipt.verified:
            print_json_text(_json_line(receipt))
        else:
            (err if json_output else out).print(_line(receipt), soft_wrap=True)

    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}/"
    answer = "204" if status == 204 else f"{status} (--status)"
    err.print(
        Text.assemble(
            ("Listening on ", "bold"),
            (url, "bold cyan"),
            f": verifying every request with the secret, answering {answer} when it verifies "
            "and 401 when it does not. Ctrl-C stops.",
        )
    )
    config = uvicorn.Config(
        Listener(webhook, on_receipt, answer=status),
        host=host,
        port=port,
        lifespan="off",
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=2,
    )
    # uvicorn shuts down gracefully on Ctrl-C, then raises it again: that is the normal end.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run()
    err.print(Text("Stopped.", style="dim"))
