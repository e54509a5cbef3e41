"""``supportctl``: the root command, its global options, and ``login``.

API commands (``mobile``, ``admin``, ``attachments``) are an HTTP client of a running server;
local operator commands (``serve``, ``db``, ``demo``, ``token``, ``version``)
work on this machine. Exit codes: 0 success, 1 a failure (the API refused,
or it cannot be reached), 2 a usage error.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import httpx
import typer
from rich.text import Text

from support_requests.cli import (
    admin,
    attachments,
    customers,
    demo,
    doctor,
    mobile,
    operator,
    tokens,
    webhooks,
    worker,
)
from support_requests.cli.client import ADMINS, MOBILE, ApiClient
from support_requests.cli.context import (
    DEFAULT_API_URL,
    DEFAULT_TIMEOUT,
    GlobalOptions,
    api_url_of,
    given_token,
    global_options,
    renew_hint,
)
from support_requests.cli.profiles import (
    DEFAULT_PROFILE,
    Profile,
    ProfileFileError,
    load_profile,
    save_profile,
)
from support_requests.cli.render import fail, local_time, make_console

API_PANEL = "Use the API (any server)"
LOCAL_PANEL = "Operate the service (this machine)"

app = typer.Typer(
    name="supportctl",
    help="Support requests from the command line: the mobile side, the staff side, "
    "and the server's operator commands.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(mobile.app, name="mobile", rich_help_panel=API_PANEL)
app.add_typer(admin.app, name="admin", rich_help_panel=API_PANEL)
app.add_typer(attachments.app, name="attachments", rich_help_panel=API_PANEL)
app.add_typer(operator.db_app, name="db", rich_help_panel=LOCAL_PANEL)
app.add_typer(demo.app, name="demo", rich_help_panel=LOCAL_PANEL)
app.add_typer(tokens.app, name="token", rich_help_panel=LOCAL_PANEL)
app.add_typer(webhooks.app, name="webhooks", rich_help_panel=LOCAL_PANEL)
app.add_typer(customers.app, name="customers", rich_help_panel=LOCAL_PANEL)
app.command(rich_help_panel=LOCAL_PANEL)(operator.serve)
app.command(rich_help_panel=LOCAL_PANEL)(operator.version)
app.command(rich_help_panel=LOCAL_PANEL)(doctor.doctor)
app.command(rich_help_panel=LOCAL_PANEL)(worker.worker)


def _api_url(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as exc:
        raise typer.BadParameter(str(exc)) from None
    if url.scheme not in ("http", "https") or not url.host:
        raise typer.BadParameter(f"{value!r} is not an http(s) URL like {DEFAULT_API_URL}")
    return value.rstrip("/")


@app.callback()
def main(
    ctx: typer.Context,
    api_url: Annotated[
        str | None,
        typer.Option(
            envvar="SUPPORT_API_URL",
            metavar="URL",
            show_envvar=True,
            callback=_api_url,
            help=f"The API's base URL. Default: the profile's, else {DEFAULT_API_URL}.",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(envvar="SUPPORT_TOKEN", show_envvar=True, metavar="JWT", help="Bearer token."),
    ] = None,
    as_customer: Annotated[
        str | None,
        typer.Option(
            "--as",
            metavar="NAME",
            help="Act as customer NAME with a token minted by the local key (dev and QA).",
        ),
    ] = None,
    as_admin: Annotated[
        str | None,
        typer.Option(
            "--as-admin",
            metavar="NAME",
            help="Act as admin NAME (a stable UUID from the name), minted by the local key.",
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            envvar="SUPPORT_PROFILE",
            metavar="NAME",
            show_envvar=True,
            help=f"Saved profile to use (see 'login'). Default: '{DEFAULT_PROFILE}' if saved.",
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            envvar="SUPPORT_TIMEOUT",
            metavar="SECONDS",
            min=0.1,
            help="How long to wait for the API.",
        ),
    ] = DEFAULT_TIMEOUT,
) -> None:
    """Support requests from the command line."""
    if as_customer is not None and as_admin is not None:
        raise typer.BadParameter("use one of them", param_hint="'--as' / '--as-admin'")
    ctx.obj = GlobalOptions(
        api_url=api_url,
        token=token,
        as_customer=as_customer,
        as_admin=as_admin,
        profile=profile,
        timeout=timeout,
    )


@app.command(rich_help_panel=API_PANEL)
def login(
    ctx: typer.Context,
    token: Annotated[
        str | None,
        typer.Option(metavar="JWT", help="The token to save (asked for, hidden, when left out)."),
    ] = None,
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Check the token with the API first.")
    ] = True,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the saved profile (without the token) as JSON.")
    ] = False,
) -> None:
    """Save the API URL and a token as a profile, in a file only you can read."""
    options = global_options(ctx)
    name = options.profile or DEFAULT_PROFILE
    try:
        existing = load_profile(name)
    except ProfileFileError as exc:
        fail(str(exc))
    api_url = api_url_of(options, existing)
    given = given_token(options, api_url)
    secret = token or (given.token if given else None)
    if not secret:
        secret = typer.prompt("Token", hide_input=True).strip()
    claims = tokens.unverified_claims(secret)
    if claims is None:
        raise typer.BadParameter("this is not a JWT", param_hint="'--token'")
    is_admin = claims.get("role") == "admin"
    if verify:
        with ApiClient(
            api_url, secret, timeout=options.timeout, renew_hint=renew_hint(secret)
        ) as client:
            client.call(
                "GET", ADMINS if is_admin else MOBILE, params={} if is_admin else {"limit": 1}
            )
    try:
        path = save_profile(name, Profile(api_url=api_url, token=secret))
    except ProfileFileError as exc:
        fail(str(exc))
    expires = claims.get("exp")
    expires_at = (
        datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        if isinstance(expires, int | float)
        else None
    )
    who = {"sub": claims.get("sub"), "role": "admin" if is_admin else "customer"}
    if json_output:
        document = {"profile": name, "apiUrl": api_url, "path": str(path), **who}
        typer.echo(json.dumps({**document, "expiresAt": expires_at}))
        return
    make_console().print(
        Text(
            f"Saved profile '{name}' ({api_url}, {who['role']} {who['sub']}, "
            f"token expires {local_time(expires_at)}) in {path}."
        )
    )
