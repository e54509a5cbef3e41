"""Who is calling: the verified claims of a bearer token."""

from __future__ import annotations

from dataclasses import dataclass

from support_requests.domain.lifecycle import Actor


@dataclass(frozen=True)
class Principal:
    """A verified caller. ``sub`` is the customer's id, or the admin's UUID."""

    sub: str
    role: Actor
    name: str | None = None
    picture: str | None = None
