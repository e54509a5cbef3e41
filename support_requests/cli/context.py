"""What every API command shares: the global options, the connection, ``--json``, text input.

Where the API URL and token come from, first match wins:

- API URL: ``--api-url`` / ``SUPPORT_API_URL``, the profile, ``http://127.0.0.1:8080``.
- token: ``--as NAME`` / ``--as-admin NAME`` (minted with the local key),
  ``--token`` / ``SUPPORT_TOKEN``, the profile.

The profile is ``--profile`` / ``SUPPORT_PROFILE``, or ``default`` when saved.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from support_requests.cli.client import ApiClient
from support_requests.cli.local import local_settings
from support_requests.cli.profiles import (
    DEFAULT_PROFILE,
    Profile,
    ProfileFileError,
    config_path,
    load_profile,
)
from support_requests.cli.render import fail
from support_requests.cli.tokens import admin_id_for, mint_token, unverified_claims

DEFAULT_API_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT = 10.0
AS_TTL_SECONDS = 3600

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print exactly the API's JSON, for scripts.")
]
AllPagesOption = Annotated[bool, typer.Option("--all", help="Follow the cursors to the last page.")]
LimitOption = Annotated[int | None, typer.Option(metavar="N", help="Requests per page (1 to 100).")]
CursorOption = Annotated[
    str | None,
    typer.Option("--cursor", metavar="CURSOR", help="Start at this page (a previous nextCursor)."),
]


@dataclass(frozen=True)
class GlobalOptions:
    """The options given before the command."""

    api_url: str | None = None
    token: str | None = None
    as_customer: str | None = None
    as_admin: str | None = None
    profile: str | None = None
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True)
class Connection:
    """Where to send requests and with which token."""

    api_url: str
    token: str
    renew_hint: str


def global_options(ctx: typer.Context) -> GlobalOptions:
    """The root command's options (defaults when a command runs on its own)."""
    options = ctx.find_root().obj
    return options if isinstance(options, GlobalOptions) else GlobalOptions()


def saved_profile(options: GlobalOptions) -> Profile | None:
    """The chosen profile; an explicitly named one must exist."""
    name = options.profile or DEFAULT_PROFILE
    try:
        profile = load_profile(name)
    except ProfileFileError as exc:
        fail(str(exc))
    if profile is None and options.profile is not None:
        raise typer.BadParameter(
            f"no profile {name!r} in {config_path()}; save one with: "
            f"supportctl --profile {shlex.quote(name)} login --token TOKEN",
            param_hint="'--profile'",
        )
    return profile


def api_url_of(options: GlobalOptions, profile: Profile | None) -> str:
    """The API URL, by the precedence in this module's docstring."""
    return options.api_url or (profile.api_url if profile else DEFAULT_API_URL)


def resolve_connection(options: GlobalOptions) -> Connection:
    """The API URL and token from the options, the environment and the profile."""
    profile = saved_profile(options)
    api_url = api_url_of(options, profile)
    given = given_token(options, api_url)
    if given is not None:
        return given
    if profile is None:
        raise typer.BadParameter(
            "no token: pass --token (or set SUPPORT_TOKEN), use --as NAME or --as-admin NAME, "
            "or save one with: supportctl login --token TOKEN",
            param_hint="'--token'",
        )
    return Connection(api_url, profile.token, renew_hint(profile.token))


def given_token(options: GlobalOptions, api_url: str) -> Connection | None:
    """The token the global options name (``--as``, ``--as-admin``, ``--token``), if any."""
    if options.as_customer is None and options.as_admin is None:
        return (
            Connection(api_url, options.token, renew_hint(options.token)) if options.token else None
        )
    admin = options.as_admin is not None
    name = ((options.as_admin if admin else options.as_customer) or "").strip()
    if not name:
        raise typer.BadParameter("needs a name", param_hint="'--as-admin'" if admin else "'--as'")
    settings = local_settings()
    minted = mint_token(
        settings,
        sub=admin_id_for(name) if admin else name,
        admin=admin,
        name=name,
        ttl_seconds=AS_TTL_SECONDS,
    )
    key = (
        f"the development secret in {settings.dev_secret_path}"
        if settings.dev_secret_path
        else "SUPPORT_JWT_SECRET"
    )
    hint = (
        f"--as/--as-admin sign with this machine's key ({key}), and {api_url} does not "
        "accept it. Run with the server's SUPPORT_JWT_SECRET or SUPPORT_DATA_DIR, "
        "or pass a token it accepts with --token."
    )
    return Connection(api_url, minted, hint)


def renew_hint(token: str) -> str:
    """How to get a fresh token like ``token``."""
    claims = unverified_claims(token) or {}
    command = ["supportctl", "token", "mint"]
    if isinstance(claims.get("sub"), str):
        command += ["--sub", claims["sub"]]
    if isinstance(claims.get("name"), str):
        command += ["--name", claims["name"]]
    if claims.get("role") == "admin":
        command.append("--admin")
    if len(command) == 3:
        command += ["--sub", "ID", "--name", "NAME"]
    return (
        f"Mint a new one with: {shlex.join(command)}\n"
        "then pass it with --token (or SUPPORT_TOKEN), or save it with: supportctl login --token"
    )


@contextmanager
def api(ctx: typer.Context, *, json_output: bool) -> Iterator[ApiClient]:
    """An ``ApiClient`` for the resolved connection, closed afterwards."""
    options = global_options(ctx)
    connection = resolve_connection(options)
    with ApiClient(
        connection.api_url,
        connection.token,
        timeout=options.timeout,
        renew_hint=connection.renew_hint,
        problems_to_stdout=json_output,
    ) as client:
        yield client


def caller_id(client: ApiClient) -> str:
    """The ``sub`` of the token in use (``--mine``, ``--to me``)."""
    claims = unverified_claims(client.token) or {}
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        fail("The token in use has no 'sub' claim, so 'me' cannot be worked out.")
    return sub


def acts_as_admin(client: ApiClient) -> bool:
    """Whether the token in use is an admin's, by its (unverified) ``role`` claim, as ``login``
    decides; ``--as-admin`` mints such a token."""
    claims = unverified_claims(client.token) or {}
    return claims.get("role") == "admin"


def text_input(value: str | None, file: Path | None, *, option: str, file_option: str) -> str:
    """Text from an option, a file (``-`` for stdin), or piped stdin."""
    if value is not None and file is not None:
        raise typer.BadParameter(f"give {option} or {file_option}, not both", param_hint=option)
    if value is not None:
        return value
    if file is not None:
        if str(file) == "-":
            return sys.stdin.read()
        try:
            return file.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise typer.BadParameter(f"cannot read {file}: {exc}", param_hint=file_option) from None
    text = "" if sys.stdin.isatty() else sys.stdin.read()
    if not text:
        raise typer.BadParameter(
            f"missing: give {option} TEXT, {file_option} FILE, or pipe the text on stdin",
            param_hint=option,
        )
    return text


def spec_schema(name: str) -> dict[str, Any]:
    """One of the contract's schemas, for the limits and values it states."""
    import yaml

    from support_requests.openapi import SPEC_PATH

    document: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
    return dict(document["components"]["schemas"][name])


def _spec_enum(schema: str) -> list[str]:
    return [str(value) for value in spec_schema(schema)["enum"]]


def complete_category(incomplete: str) -> list[str]:
    """Shell completion of categories, from the contract."""
    return [value for value in _spec_enum("Category") if value.startswith(incomplete)]


def complete_status(incomplete: str) -> list[str]:
    """Shell completion of statuses, from the contract."""
    return [value for value in _spec_enum("Status") if value.startswith(incomplete)]
