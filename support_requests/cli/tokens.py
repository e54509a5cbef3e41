"""``supportctl token``: tokens signed with the same key the local server uses.

The key is the server's: ``SUPPORT_JWT_SECRET``, or the development secret
file in ``SUPPORT_DATA_DIR`` (default ``./.supportdesk``). An admin's ``sub`` is
its UUID; without ``--sub`` it is derived from the name, so the same name is
always the same admin.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import jwt
import typer

from support_requests.cli.local import local_settings, signing_key
from support_requests.cli.render import make_console

if TYPE_CHECKING:
    from support_requests.handlers.settings import Settings

ADMIN_NAMESPACE = uuid.UUID("cefaca12-0d64-4b6c-ab7e-22496c2bdf77")
DEFAULT_TTL = "1h"
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}

app = typer.Typer(help="Tokens signed with the local server's key.", no_args_is_help=True)


def admin_id_for(name: str) -> str:
    """The stable admin UUID for a name: the same name always gives the same admin."""
    return str(uuid.uuid5(ADMIN_NAMESPACE, name.strip()))


def parse_ttl(text: str) -> int:
    """Seconds in a duration written ``90``, ``90s``, ``15m``, ``1h`` or ``7d``."""
    match = re.fullmatch(r"(\d+)([smhd]?)", text.strip().lower())
    if match is None or int(match.group(1)) == 0:
        raise typer.BadParameter(f"{text!r} is not a duration like 90s, 15m, 1h or 7d")
    return int(match.group(1)) * _UNITS[match.group(2)]


def mint_token(
    settings: Settings,
    *,
    sub: str,
    admin: bool,
    name: str | None = None,
    picture: str | None = None,
    ttl_seconds: int = 3600,
) -> str:
    """An HS256 token the server configured by ``settings`` accepts."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + ttl_seconds}
    if admin:
        claims["role"] = "admin"
    if name:
        claims["name"] = name
    if picture:
        claims["picture"] = picture
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    return jwt.encode(claims, signing_key(settings), algorithm="HS256")


def unverified_claims(token: str) -> dict[str, Any] | None:
    """The token's claims as written (not verified), or None if it is not a JWT."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    return claims if isinstance(claims, dict) else None


def subject_for(*, sub: str | None, name: str | None, admin: bool) -> str:
    """The ``sub`` to sign: as given (a UUID for admins), or derived from the name."""
    if sub is not None:
        if not sub.strip():
            raise typer.BadParameter("must not be empty", param_hint="'--sub'")
        if admin:
            try:
                return str(uuid.UUID(sub))
            except ValueError:
                raise typer.BadParameter(
                    "an admin's sub must be its UUID (leave --sub out to derive one from --name)",
                    param_hint="'--sub'",
                ) from None
        return sub
    if name is None or not name.strip():
        raise typer.BadParameter("give --sub, --name, or both", param_hint="'--sub' / '--name'")
    return admin_id_for(name) if admin else name.strip()


@app.command("mint")
def mint(
    sub: Annotated[
        str | None,
        typer.Option(
            "--sub",
            metavar="SUB",
            help="Subject: the customer's id, or the admin's UUID. Default: from --name.",
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", metavar="NAME", help="Display name (the 'name' claim).")
    ] = None,
    picture: Annotated[
        str | None, typer.Option(metavar="URL", help="Avatar URL (the 'picture' claim), http(s).")
    ] = None,
    admin: Annotated[bool, typer.Option("--admin", help="An admin token (role 'admin').")] = False,
    ttl: Annotated[
        str, typer.Option(metavar="DURATION", help="Lifetime: 90s, 15m, 1h, 7d.", show_default=True)
    ] = DEFAULT_TTL,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the token and its claims as JSON.")
    ] = False,
) -> None:
    """Print a token signed with the key the local server uses."""
    subject = subject_for(sub=sub, name=name, admin=admin)
    if picture is not None and not picture.startswith(("https://", "http://")):
        raise typer.BadParameter("must be an http(s) URL", param_hint="'--picture'")
    seconds = parse_ttl(ttl)
    settings = local_settings()
    token = mint_token(
        settings, sub=subject, admin=admin, name=name, picture=picture, ttl_seconds=seconds
    )
    if settings.dev_secret_path is not None:
        make_console(stderr=True).print(
            f"Signed with the development secret in {settings.dev_secret_path} "
            "(the key `supportctl serve` uses here).",
            style="dim",
            markup=False,
        )
    if json_output:
        claims = unverified_claims(token) or {}
        expires = datetime.fromtimestamp(claims["exp"], UTC)
        document = {
            "token": token,
            "sub": subject,
            "role": "admin" if admin else "customer",
            "expiresAt": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        typer.echo(json.dumps(document))
    else:
        typer.echo(token)
