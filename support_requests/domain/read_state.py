"""A customer's read state: per request, a marker that only moves forward and the public
staff messages after it; per customer, the badge (their sum, and how many requests have any).

Storage locks the request row, asks these functions what changes, and writes it with the
badge's deltas in the same transaction. Internal notes never reach here: the customer does
not see them, so they are neither read nor unread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from support_requests.domain.errors import FieldProblem, RuleViolation


@dataclass(frozen=True)
class ReadState:
    """One request's read state: the customer's marker (None until they read or reply) and
    the public staff messages after it."""

    last_read_message_id: int | None
    unread_count: int

    def to_columns(self) -> dict[str, Any]:
        """The request's columns holding it."""
        return {
            "customer_last_read_message_id": self.last_read_message_id,
            "unread_count": self.unread_count,
        }


@dataclass(frozen=True)
class Badge:
    """A customer's badge: unread staff messages over all their requests, and how many of
    their requests have some."""

    unread_count: int = 0
    requests_with_unread: int = 0


@dataclass(frozen=True)
class BadgeDelta:
    """What a request's change of unread count adds to its customer's badge."""

    unread_count: int
    requests_with_unread: int

    @classmethod
    def between(cls, before: ReadState, after: ReadState) -> BadgeDelta:
        """The badge's change when a request goes from ``before`` to ``after``."""
        return cls(
            after.unread_count - before.unread_count,
            int(after.unread_count > 0) - int(before.unread_count > 0),
        )

    def __bool__(self) -> bool:
        return bool(self.unread_count or self.requests_with_unread)


def after_staff_reply(state: ReadState) -> ReadState:
    """A public staff message: one more unread."""
    return ReadState(state.last_read_message_id, state.unread_count + 1)


def after_customer_reply(state: ReadState, message_id: int) -> ReadState:
    """The customer's own message: they have read everything up to it."""
    del state  # whatever was unread before, the customer has seen it now
    return ReadState(message_id, 0)


def moves_forward(state: ReadState, target: int | None) -> bool:
    """Whether marking ``target`` read moves the marker (it never moves back)."""
    if target is None:
        return False
    return state.last_read_message_id is None or target > state.last_read_message_id


def unknown_message(message_id: int) -> RuleViolation:
    """The refusal of a marker that names no message of the thread the customer sees."""
    return RuleViolation(
        [
            FieldProblem(
                "lastReadMessageId", f"message {message_id} is not a message of this request"
            )
        ]
    )
