"""The domain's exception tree, mapped to problem responses in ``handlers.problems``.

DomainError
├── NotFound             the request does not exist or is not the caller's
├── RequestClosed        a reply to a closed request
├── InvalidTransition    a change the lifecycle does not allow from here
├── RatingNotAllowed     a rating before resolution or after its window (409)
├── AlreadyDelivered     a retry of a webhook delivery that succeeded (409)
├── RuleViolation        a body that is well-formed but breaks a rule (422)
│   └── InvalidAttachment          an empty, damaged, disguised or badly named upload
│                                  (``domain.attachments``; 422, field ``file``)
└── UnsupportedAttachmentType      an upload of a type not accepted
                                   (``domain.attachments``; 415 ``unsupported_attachment_type``)
"""

from __future__ import annotations

from dataclasses import dataclass


class DomainError(Exception):
    """Base of every error a service function raises on purpose."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(DomainError):
    """The support request does not exist, or the caller may not see it."""


class RequestClosed(DomainError):
    """A reply was attempted on a closed support request."""


class InvalidTransition(DomainError):
    """The lifecycle does not allow this change from the current status."""


class RatingNotAllowed(DomainError):
    """A rating of a request that is not resolved nor closed, or whose window has passed."""


class AlreadyDelivered(DomainError):
    """A retry of a webhook delivery that succeeded: there is nothing to send again."""


@dataclass(frozen=True)
class FieldProblem:
    """One field's violation, as listed in a 422 problem."""

    field: str
    message: str


class RuleViolation(DomainError):
    """The request is well-formed but breaks a rule; ``problems`` names the fields."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        count = len(problems)
        super().__init__(f"The request has {count} invalid field{'s' if count != 1 else ''}.")
        self.problems = problems
