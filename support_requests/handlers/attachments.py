"""Attachments (tags ``mobile`` and ``admin``): upload, download, thumbnail, removal.

An upload arrives as ``multipart/form-data`` (the body cap for these two paths is
``SUPPORT_ATTACHMENT_MAX_BYTES``, counted as it arrives); Starlette spools the part to
disk past 1 MiB. Its bytes are inspected and cleaned (``storage.attachment_content``) on
one of ``INSPECTIONS`` threads of their own, so that decoded pixels of concurrent images
do not add up, then stored (``storage.attachments``). Downloads stream the stored
bytes in chunks, with a strong ``ETag`` (304), one byte ``Range`` (206, 416) and the
headers that keep a browser from running or sniffing them.
"""

from __future__ import annotations

import asyncio
import base64
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.datastructures import UploadFile
from starlette.responses import Response, StreamingResponse

from support_requests import metrics
from support_requests.domain.attachments import clean_file_name, is_image
from support_requests.domain.errors import NotFound
from support_requests.domain.lifecycle import Actor
from support_requests.handlers import conditional
from support_requests.handlers.auth import caller
from support_requests.handlers.problems import HttpProblem
from support_requests.handlers.render import (
    ATTACHMENT_PATHS,
    attachment_entry,
    envelope,
    uploaded_attachment,
)
from support_requests.storage.attachment_content import Inspected, inspect_upload
from support_requests.storage.attachments import AttachmentStore, StoredAttachment

INSPECTIONS = 2
_COPY_PIECE = 256 * 1024
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


@dataclass(frozen=True)
class Uploads:
    """How uploads are received: the size limit, and the ``INSPECTIONS`` threads that
    inspect them. A pool of its own, not the default one: decoded pixels are freed back to
    the allocator arenas of the few threads that made them, instead of to a new arena in
    whichever of the default pool's threads ran each inspection."""

    max_bytes: int
    inspectors: ThreadPoolExecutor

    @classmethod
    def create(cls, max_bytes: int) -> Uploads:
        """Uploads of at most ``max_bytes``, inspected ``INSPECTIONS`` at a time."""
        return cls(max_bytes, ThreadPoolExecutor(INSPECTIONS, thread_name_prefix="inspect"))

    @asynccontextmanager
    async def received(self, file: UploadFile) -> AsyncIterator[tuple[str, Inspected]]:
        """The part's cleaned name and its bytes inspected and cleaned, in a temporary
        folder that is gone when the block ends."""
        workdir = None
        try:
            name = clean_file_name(file.filename or "")
            if file.size is not None and file.size > self.max_bytes:
                raise too_large(self.max_bytes)
            workdir = await asyncio.to_thread(tempfile.mkdtemp, prefix="support-upload-")
            source = Path(workdir) / "upload"
            await asyncio.to_thread(_copy_to, file, source)
            await file.close()
            inspected = await asyncio.get_running_loop().run_in_executor(
                self.inspectors, inspect_upload, source, Path(workdir)
            )
            yield name, inspected
        finally:
            await file.close()
            if workdir is not None:
                await asyncio.to_thread(shutil.rmtree, workdir, ignore_errors=True)


def too_large(max_bytes: int) -> HttpProblem:
    """413 for an upload over the limit."""
    return HttpProblem(
        413, "payload_too_large", f"The file is larger than {_size_text(max_bytes)}."
    )


def _size_text(size: int) -> str:
    mib = size / (1024 * 1024)
    return f"{mib:g} MiB" if mib >= 1 else f"{size // 1024} KiB"


def _copy_to(file: UploadFile, target: Path) -> None:
    """The spooled part (memory or disk) copied to ``target``, a piece at a time."""
    file.file.seek(0)
    with target.open("wb") as out:
        shutil.copyfileobj(file.file, out, _COPY_PIECE)


async def _upload(
    attachments: AttachmentStore, uploads: Uploads, file: UploadFile, token_info: dict[str, Any]
) -> Response:
    uploader = caller(token_info)
    async with uploads.received(file) as (name, inspected):
        stored = await attachments.save(uploader, name, inspected)
    metrics.uploads_total.inc()
    metrics.upload_bytes_total.inc(stored.size)
    return envelope(
        "Attachment uploaded successfully",
        uploaded_attachment(stored),
        status=201,
        headers={"Location": f"{ATTACHMENT_PATHS[uploader.role]}/{stored.id}"},
    )


async def upload_attachment(
    attachments: AttachmentStore, uploads: Uploads, file: UploadFile, token_info: dict[str, Any]
) -> Response:
    """Store a customer's upload, to be attached to a create or reply."""
    return await _upload(attachments, uploads, file, token_info)


async def admin_upload_attachment(
    attachments: AttachmentStore, uploads: Uploads, file: UploadFile, token_info: dict[str, Any]
) -> Response:
    """Store an admin's upload, to be attached to a staff reply."""
    return await _upload(attachments, uploads, file, token_info)


async def download_attachment(
    attachments: AttachmentStore, attachment_id: str, token_info: dict[str, Any]
) -> Response:
    """The file, for the customer who owns it."""
    found = await attachments.for_customer(caller(token_info), attachment_id)
    return _file(attachments, found)


async def admin_download_attachment(
    attachments: AttachmentStore, attachment_id: str, token_info: dict[str, Any]
) -> Response:
    """The file, for staff."""
    found = await attachments.for_admin(caller(token_info), attachment_id)
    return _file(attachments, found)


async def download_attachment_thumbnail(
    attachments: AttachmentStore, attachment_id: str, token_info: dict[str, Any]
) -> Response:
    """An image's thumbnail, for the customer who owns it."""
    found = await attachments.for_customer(caller(token_info), attachment_id)
    return await _thumbnail(attachments, found)


async def admin_download_attachment_thumbnail(
    attachments: AttachmentStore, attachment_id: str, token_info: dict[str, Any]
) -> Response:
    """An image's thumbnail, for staff."""
    found = await attachments.for_admin(caller(token_info), attachment_id)
    return await _thumbnail(attachments, found)


async def remove_attachment(
    attachments: AttachmentStore, attachment_id: str, token_info: dict[str, Any]
) -> Response:
    """Delete an attachment's bytes; its message keeps an entry marked removed."""
    removed = await attachments.remove(caller(token_info), attachment_id)
    return envelope("Attachment removed successfully", attachment_entry(removed, Actor.ADMIN))


# -- downloads ------------------------------------------------------------------------------


def _gone(attachment: StoredAttachment) -> NotFound:
    return NotFound(f"Attachment {attachment.id} was not found.")


def _file(attachments: AttachmentStore, attachment: StoredAttachment) -> Response:
    if attachment.removed:
        raise _gone(attachment)
    return _ranged(
        etag=_tag("f", attachment),
        size=attachment.size,
        content_type=attachment.content_type,
        disposition="inline" if is_image(attachment.content_type) else "attachment",
        file_name=attachment.file_name,
        read=lambda first, last: attachments.read(attachment, first, last),
    )


async def _thumbnail(attachments: AttachmentStore, attachment: StoredAttachment) -> Response:
    if attachment.removed or not attachment.has_thumbnail:
        raise _gone(attachment)
    data = await attachments.thumbnail(attachment)
    content_type = attachment.thumbnail_content_type or "image/jpeg"
    extension = "png" if content_type == "image/png" else "jpg"

    async def chunk(first: int, last: int) -> AsyncIterator[bytes]:
        yield data[first : last + 1]

    return _ranged(
        etag=_tag("t", attachment),
        size=len(data),
        content_type=content_type,
        disposition="inline",
        file_name=f"{Path(attachment.file_name).stem or 'thumbnail'}-thumbnail.{extension}",
        read=chunk,
    )


def _tag(kind: str, attachment: StoredAttachment) -> str:
    """A strong tag from the stored bytes' digest (base64url: it never reads as a UUID)."""
    digest = base64.urlsafe_b64encode(bytes.fromhex(attachment.sha256)[:18]).decode()
    return f'"{kind}{conditional.REVISION}-{digest}"'


def _ranged(
    *,
    etag: str,
    size: int,
    content_type: str,
    disposition: str,
    file_name: str,
    read: Callable[[int, int], AsyncIterator[bytes]],
) -> Response:
    headers = {"ETag": etag, "Cache-Control": "private"}
    condition = conditional.if_none_match()
    if condition is not None and condition.matches(etag):
        return Response(status_code=304, headers=headers)
    headers["Accept-Ranges"] = "bytes"
    headers["X-Content-Type-Options"] = "nosniff"  # every response has it; a download needs it
    headers["Content-Disposition"] = content_disposition(disposition, file_name)
    span = byte_range(conditional.range_header(), size)
    if span is None:
        first, last, status = 0, size - 1, 200
    else:
        first, last = span
        status = 206
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    headers["Content-Length"] = str(last - first + 1)
    return StreamingResponse(
        read(first, last), status_code=status, media_type=content_type, headers=headers
    )


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range ``header`` asks for, clipped to ``size``; None for the whole file
    (no header, several ranges, another unit or form). A range past the end is 416."""
    if header is None:
        return None
    matched = _RANGE.fullmatch(header.strip())
    if matched is None:
        return None
    first_text, last_text = matched.groups()
    if not first_text and not last_text:
        return None
    if not first_text:  # a suffix: the last N bytes
        suffix = int(last_text)
        if suffix == 0:
            raise _unsatisfiable(size)
        return max(size - suffix, 0), size - 1
    first = int(first_text)
    if last_text and int(last_text) < first:
        return None  # not a valid range: ignored, as RFC 9110 says
    if first >= size:
        raise _unsatisfiable(size)
    return first, min(int(last_text), size - 1) if last_text else size - 1


def _unsatisfiable(size: int) -> HttpProblem:
    return HttpProblem(
        416,
        "range_not_satisfiable",
        f"The range starts past the end of the file ({size} bytes).",
        headers={"Content-Range": f"bytes */{size}"},
    )


def content_disposition(kind: str, file_name: str) -> str:
    """``inline`` or ``attachment`` with the name as an ASCII ``filename`` and the exact
    name as ``filename*`` (RFC 6266, RFC 8187)."""
    fallback = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\%' else "_" for c in file_name)
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(file_name, safe='')}"
