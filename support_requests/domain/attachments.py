"""Attachment rules that need no file parser: accepted types, limits, names, refusals.

The bytes themselves are inspected in ``support_requests.storage.attachment_content``;
everything here is plain Python so the HTTP and storage layers share one wording.

Refusals (both are ``DomainError``; the HTTP status is the problem mapping's business):

- ``UnsupportedAttachmentType``: 415 ``unsupported_attachment_type``, a type not accepted
  (decided from the bytes, never from the client's Content-Type or the file name).
- ``InvalidAttachment``: 422 ``validation_failed`` with one entry for the field ``file``;
  ``reason`` says which rule, for logs and tests (see ``InvalidAttachment.REASONS``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar, Final

from support_requests.domain.errors import DomainError, FieldProblem, RuleViolation

MAX_ATTACHMENTS_PER_MESSAGE: Final = 5
THUMBNAIL_MAX_SIDE: Final = 320
UNATTACHED_TTL: Final = timedelta(hours=24)
MAX_FILE_NAME_LENGTH: Final = 255

PNG: Final = "image/png"
JPEG: Final = "image/jpeg"
GIF: Final = "image/gif"
WEBP: Final = "image/webp"
HEIC: Final = "image/heic"
PDF: Final = "application/pdf"
TEXT: Final = "text/plain; charset=utf-8"

IMAGE_CONTENT_TYPES: Final = frozenset({PNG, JPEG, GIF, WEBP, HEIC})
ALLOWED_CONTENT_TYPES: Final = IMAGE_CONTENT_TYPES | {PDF, TEXT}
ACCEPTED_TYPES_SENTENCE: Final = "PNG, JPEG, GIF, WebP, HEIC, PDF and UTF-8 plain text"

FILE_FIELD: Final = "file"

# Bidirectional embeddings, overrides and isolates: "invoice\u202egnp.exe" shows as
# "invoiceexe.png". They are format characters (Cf), not Cc, so they are named here.
_BIDI_CONTROLS: Final = frozenset(
    "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


class UnsupportedAttachmentType(DomainError):
    """The file's bytes are not one of the accepted types (415 ``unsupported_attachment_type``)."""

    CODE: ClassVar[str] = "unsupported_attachment_type"


class InvalidAttachment(RuleViolation):
    """An upload of an accepted kind that breaks a rule (422, field ``file``).

    ``reason`` is one of ``REASONS``: ``empty``, ``bad_file_name``, ``damaged`` (the bytes
    start like a type but are not a whole, readable file of it: lies and truncation),
    ``too_many_pixels`` (a decompression bomb by Pillow's own limit), ``polyglot`` (bytes
    after the end of the format, or a second format inside) and ``active_content`` (a PDF
    with scripts, launch actions or embedded files).
    """

    REASONS: ClassVar[frozenset[str]] = frozenset(
        {"empty", "bad_file_name", "damaged", "too_many_pixels", "polyglot", "active_content"}
    )

    def __init__(self, reason: str, message: str) -> None:
        if reason not in self.REASONS:
            raise ValueError(f"unknown reason {reason!r}")
        super().__init__([FieldProblem(FILE_FIELD, message)])
        self.reason = reason
        # One field, so the problem's detail can be the sentence itself.
        self.detail = message
        self.args = (message,)


def clean_file_name(name: str) -> str:
    """The name to keep: path parts (``/`` and ``\\``) and surrounding blanks removed.

    Refused (``InvalidAttachment`` ``bad_file_name``): any control character or
    bidirectional override anywhere in the name as sent, nothing left after stripping
    (``""``, ``"dir/"``, ``"."``, ``".."``), or more than 255 characters left.
    """
    for index, char in enumerate(name):
        if _is_control(char):
            raise InvalidAttachment(
                "bad_file_name",
                f"The file name contains a control character (U+{ord(char):04X} at "
                f"position {index + 1}); send the name without it.",
            )
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if base in {"", ".", ".."}:
        raise InvalidAttachment(
            "bad_file_name", "The file name is empty once folder parts are removed."
        )
    if len(base) > MAX_FILE_NAME_LENGTH:
        raise InvalidAttachment(
            "bad_file_name",
            f"The file name has {len(base)} characters; at most {MAX_FILE_NAME_LENGTH} "
            "are accepted.",
        )
    return base


def _is_control(char: str) -> bool:
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F or char in _BIDI_CONTROLS


def is_image(content_type: str) -> bool:
    """Whether a stored type is an image (served inline, with a thumbnail)."""
    return content_type in IMAGE_CONTENT_TYPES


def unsupported(found: str | None) -> UnsupportedAttachmentType:
    """The 415 refusal, naming what was found when it is known."""
    what = f"is {found}" if found else "could not be recognised from its bytes"
    return UnsupportedAttachmentType(
        f"The file's type {what}; accepted are {ACCEPTED_TYPES_SENTENCE}."
    )
