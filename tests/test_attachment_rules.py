"""The pure attachment rules: file names, refusals as domain errors, limits."""

from __future__ import annotations

from datetime import timedelta

import pytest

from support_requests.domain import attachments
from support_requests.domain.attachments import (
    InvalidAttachment,
    UnsupportedAttachmentType,
    clean_file_name,
)
from support_requests.domain.errors import DomainError, FieldProblem, RuleViolation


def test_limits_are_the_decisions():
    assert attachments.MAX_ATTACHMENTS_PER_MESSAGE == 5
    assert attachments.THUMBNAIL_MAX_SIDE == 320
    assert timedelta(hours=24) == attachments.UNATTACHED_TTL


def test_accepted_types_are_seven_and_five_are_images():
    assert {
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/heic",
        "application/pdf",
        "text/plain; charset=utf-8",
    } == attachments.ALLOWED_CONTENT_TYPES
    assert attachments.is_image("image/heic")
    assert not attachments.is_image("application/pdf")


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("screenshot.png", "screenshot.png"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\evil.png", "evil.png"),
        ("C:\\Users\\ana\\Desktop\\crash log.txt", "crash log.txt"),
        ("/var/mobile/Media/DCIM/IMG_0001.HEIC", "IMG_0001.HEIC"),
        ("  padded.pdf  ", "padded.pdf"),
        ("café ☕.jpg", "café ☕.jpg"),
        ("a" * 255, "a" * 255),
        ("dir/" + "b" * 255, "b" * 255),
    ],
)
def test_file_name_keeps_the_last_path_part(sent, kept):
    assert clean_file_name(sent) == kept


@pytest.mark.parametrize("sent", ["", "   ", "uploads/", "a\\b\\", ".", "..", "x/..", "x\\."])
def test_file_name_empty_after_stripping_is_refused(sent):
    with pytest.raises(InvalidAttachment) as refused:
        clean_file_name(sent)
    assert refused.value.reason == "bad_file_name"
    assert refused.value.detail == "The file name is empty once folder parts are removed."


@pytest.mark.parametrize(
    ("sent", "code_point", "position"),
    [
        ("report\x00.png", "U+0000", 7),
        ("line\nbreak.txt", "U+000A", 5),
        ("tab\there.txt", "U+0009", 4),
        ("\x1b[31mred.txt", "U+001B", 1),
        ("del\x7f.txt", "U+007F", 4),
        ("c1\x85.txt", "U+0085", 3),
        ("invoice\u202egnp.exe", "U+202E", 8),
        ("dir\x00/ok.png", "U+0000", 4),
    ],
)
def test_file_name_with_a_control_character_is_refused(sent, code_point, position):
    with pytest.raises(InvalidAttachment) as refused:
        clean_file_name(sent)
    assert refused.value.reason == "bad_file_name"
    assert refused.value.detail == (
        f"The file name contains a control character ({code_point} at position {position}); "
        "send the name without it."
    )


def test_file_name_over_255_characters_is_refused():
    with pytest.raises(InvalidAttachment) as refused:
        clean_file_name("x" * 252 + ".png")
    assert refused.value.detail == "The file name has 256 characters; at most 255 are accepted."


def test_invalid_attachment_is_a_422_rule_violation_on_the_file_field():
    error = InvalidAttachment("empty", "The file is empty.")
    assert isinstance(error, RuleViolation)
    assert error.problems == [FieldProblem("file", "The file is empty.")]
    assert error.detail == "The file is empty."
    assert str(error) == "The file is empty."


def test_invalid_attachment_reasons_are_a_closed_set():
    with pytest.raises(ValueError, match="unknown reason"):
        InvalidAttachment("spooky", "Nope.")


def test_unsupported_type_names_what_was_found_and_what_is_accepted():
    error = attachments.unsupported("application/zip")
    assert isinstance(error, UnsupportedAttachmentType)
    assert isinstance(error, DomainError)
    assert not isinstance(error, RuleViolation)
    assert error.CODE == "unsupported_attachment_type"
    assert error.detail == (
        "The file's type is application/zip; accepted are PNG, JPEG, GIF, WebP, HEIC, PDF "
        "and UTF-8 plain text."
    )
    assert "could not be recognised" in attachments.unsupported(None).detail
