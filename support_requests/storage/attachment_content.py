"""Inspect and clean one uploaded file before anything is stored.

``inspect_upload(source, workdir)`` decides the type from the bytes (``filetype``, never
the client's Content-Type or the file name), checks the whole file, and writes a cleaned
copy into ``workdir``; the caller stores or moves that file and deletes it. On any refusal
(``UnsupportedAttachmentType`` or ``InvalidAttachment`` from ``domain.attachments``) the
cleaned copy is removed: nothing is stored. The upload is read from disk in pieces, so a
10 MiB upload is never held twice in memory (decoded pixels are not the file).

What each format gets
---------------------
Every image is decoded in full by Pillow, restricted to the format the bytes claim (HEIC
through ``pillow-heif``), so a lie or a truncation fails; more pixels than Pillow's own
``Image.MAX_IMAGE_PIXELS`` is refused, checked on every call (no warning filter is set).
Every image also has its structure walked by hand, which refuses bytes after its end.
The thumbnail is made from the pixels as stored: longest side at most 320 px, aspect kept,
PNG when the image has transparency, otherwise JPEG (quality 80). ICC colour profiles are
kept everywhere (they describe the pixels, a Display P3 photo changes colour without one);
everything else that is not pixels is dropped.

- PNG (and APNG): chunks are copied byte for byte; only IHDR, PLTE, IDAT, IEND, tRNS, the
  colour chunks (gAMA, cHRM, sRGB, iCCP, sBIT, cICP, mDCV, cLLI) and the animation chunks
  (acTL, fcTL, fdAT) are kept, so tEXt, zTXt, iTXt, eXIf, tIME, pHYs and the rest go.
  The pixels and compression are untouched. Every chunk's CRC is checked.
- JPEG without an EXIF orientation (or orientation 1): segments are copied byte for byte
  without APP0 (JFIF, may hold a thumbnail), APP1 (EXIF incl. GPS, XMP), other APPn and
  COM; APP2 ICC_PROFILE and APP14 Adobe (colour transform) stay. Lossless. The further
  pictures a camera puts after the EOI under a Multi-Picture (MPF) header are dropped.
- JPEG with orientation 2-8: the rotation cannot be done losslessly with Pillow, so the
  image is turned upright and re-encoded with its own quantisation tables and chroma
  subsampling (Pillow's ``quality="keep"`` by hand): no visible re-compression.
- GIF (animated too): blocks are copied byte for byte; every frame, graphic control
  extension, the NETSCAPE/ANIMEXTS loop and the ICC extension stay; comments, plain-text
  and other application extensions (XMP) go. Identical pixels in every frame.
- WebP (lossy, lossless, animated): RIFF chunks are copied byte for byte, only VP8, VP8L,
  VP8X, ALPH, ANIM, ANMF and ICCP, so EXIF, XMP and unknown chunks go (and the VP8X flags
  for EXIF and XMP are cleared); lossless stays lossless, lossy is not re-encoded. The
  EXIF orientation is not applied (libwebp ignores it too).
- HEIC: ISOBMFF cannot be edited without rewriting item offsets, so the primary image is
  decoded, turned upright and re-encoded as HEIC at quality 90 without EXIF or XMP (ICC
  kept). The one format that is re-compressed; at 90 the difference is not visible.
- PDF: copied as sent after checks: ``%PDF-`` first, ``%%EOF`` in the last KiB and only
  whitespace after it, and no ``/JavaScript``, ``/JS``, ``/Launch``, ``/EmbeddedFile(s)``
  or ``/RichMedia`` name (hex-escaped spellings included) outside streams. Stream bytes
  are skipped (compressed data holds such bytes by chance), so names inside object
  streams are not seen; PDFs are served as downloads, never inline.
- Plain text: copied as sent; it must be UTF-8 with no control character but tab, line
  feed, carriage return and form feed, and must not start (after a BOM and whitespace)
  with ``<!doctype html``, ``<html``, ``<svg``, ``<?xml`` or ``<script``.

Polyglots: a file is refused when bytes follow the end of its format (PNG IEND, JPEG EOI
but MPF pictures, GIF trailer, WebP RIFF size, the last HEIC box, a PDF's last ``%%EOF``
but whitespace), since that is where a second format (ZIP, HTML, a script) is appended.
A second format hidden inside an image's metadata is not looked for: only pixel and
colour structures are copied, so it never reaches the stored file.
"""

from __future__ import annotations

import codecs
import functools
import io
import os
import re
import struct
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

import filetype
from PIL import Image, ImageOps, JpegImagePlugin

from support_requests.domain.attachments import (
    GIF,
    HEIC,
    JPEG,
    PDF,
    PNG,
    TEXT,
    THUMBNAIL_MAX_SIDE,
    WEBP,
    InvalidAttachment,
    UnsupportedAttachmentType,
    unsupported,
)

PIECE: Final = 64 * 1024
HEIC_QUALITY: Final = 90
THUMBNAIL_JPEG_QUALITY: Final = 80


@dataclass(frozen=True)
class Inspected:
    """A checked upload: its type from the bytes and the cleaned copy to store.

    ``path`` is the cleaned file in the given ``workdir``; the caller owns it. ``size`` is
    the cleaned file's size. Non-images have no ``width``, ``height`` or thumbnail.
    """

    content_type: str
    size: int
    width: int | None
    height: int | None
    path: Path
    thumbnail: bytes | None
    thumbnail_content_type: str | None


@dataclass(frozen=True)
class _Cleaned:
    content_type: str
    width: int | None = None
    height: int | None = None
    thumbnail: bytes | None = None
    thumbnail_content_type: str | None = None


def inspect_upload(source: Path, workdir: Path) -> Inspected:
    """Check the upload at ``source`` and write its cleaned copy into ``workdir``.

    Raises ``UnsupportedAttachmentType`` (415) or ``InvalidAttachment`` (422); then no
    file is left in ``workdir``. ``source`` itself is never changed.
    """
    if source.stat().st_size == 0:
        raise InvalidAttachment("empty", "The file is empty.")
    with source.open("rb") as src:
        head = src.read(8192)
    kind = filetype.guess(head)
    found: str | None = kind.mime if kind is not None else None
    # filetype's weaker signatures ("BM" for BMP, "ID3" for MP3) also match plain
    # sentences, so anything it names that is not an accepted type may still be text.
    clean = _CLEANERS.get(found) if found is not None else None
    if clean is None:
        clean = functools.partial(_clean_text, found=found)
    descriptor, name = tempfile.mkstemp(dir=workdir, prefix="attachment-", suffix=".part")
    target = Path(name)
    try:
        with source.open("rb") as src, os.fdopen(descriptor, "w+b") as out:
            cleaned = clean(src, out)
        return Inspected(
            content_type=cleaned.content_type,
            size=target.stat().st_size,
            width=cleaned.width,
            height=cleaned.height,
            path=target,
            thumbnail=cleaned.thumbnail,
            thumbnail_content_type=cleaned.thumbnail_content_type,
        )
    except BaseException:
        target.unlink(missing_ok=True)
        raise


# -- refusals ------------------------------------------------------------------------------


def _damaged(label: str, what: str) -> InvalidAttachment:
    return InvalidAttachment(
        "damaged",
        f"The file starts like {label} but is not a whole, readable one: {what}.",
    )


def _trailing(label: str, end: str, count: int) -> InvalidAttachment:
    return InvalidAttachment(
        "polyglot",
        f"The {label} has {count} byte{'s' if count != 1 else ''} after its end ({end}); "
        "a file that is also something else is refused.",
    )


def _refuse_rest(src: BinaryIO, label: str, end: str) -> None:
    here = src.tell()
    size = os.fstat(src.fileno()).st_size
    if size > here:
        raise _trailing(label, end, size - here)


def _read_exact(src: BinaryIO, count: int, label: str, where: str) -> bytes:
    data = src.read(count)
    if len(data) != count:
        raise _damaged(label, f"it ends inside {where} (truncated)")
    return data


def _copy_exact(
    src: BinaryIO, out: BinaryIO | None, count: int, label: str, where: str, crc: int = 0
) -> int:
    """Copy ``count`` bytes in pieces (to nowhere when ``out`` is None); the running CRC-32."""
    while count:
        piece = src.read(min(count, PIECE))
        if not piece:
            raise _damaged(label, f"it ends inside {where} (truncated)")
        crc = zlib.crc32(piece, crc)
        if out is not None:
            out.write(piece)
        count -= len(piece)
    return crc


# -- Pillow: decode, limits, thumbnail -------------------------------------------------------


@functools.cache
def _register_heif() -> None:
    """Teach Pillow HEIC once, on first use (not when the package is imported)."""
    from pillow_heif import register_heif_opener

    register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)


def _check_pixels(width: int, height: int) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        raise _too_many_pixels(f"{width * height:,} pixels ({width}x{height})")


def _too_many_pixels(what: str) -> InvalidAttachment:
    limit = Image.MAX_IMAGE_PIXELS
    bound = f"at most {limit:,} pixels are decoded" if limit else "it is too large to decode"
    return InvalidAttachment(
        "too_many_pixels",
        f"The image declares {what}; {bound}, so it is refused as a decompression bomb.",
    )


def _bomb(exc: Exception) -> InvalidAttachment:
    """Pillow's own refusal (or its warning made an error), with the count it names."""
    count = re.search(r"\((\d+) pixels\)", str(exc))
    return _too_many_pixels(f"{int(count.group(1)):,} pixels" if count else "too many pixels")


def _decode(src: BinaryIO, pillow_format: str, label: str) -> Image.Image:
    """Open and decode every frame, as ``pillow_format`` only; refusals for what fails.

    Pillow warns (DecompressionBombWarning) above ``MAX_IMAGE_PIXELS`` and raises above
    twice that; the warning is whatever the host's filters make it, and the size check
    below refuses on every call either way, without touching the warning filters.
    """
    src.seek(0)
    try:
        image = Image.open(src, formats=[pillow_format])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb(exc) from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise _damaged(label, f"{pillow_format} decoding failed ({_short(exc)})") from None
    _check_pixels(*image.size)
    primary = image.tell()  # a HEIC's primary image need not be its first
    try:
        for frame in range(getattr(image, "n_frames", 1)):
            image.seek(frame)
            image.load()
        image.seek(primary)
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb(exc) from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise _damaged(label, f"its pixels do not decode ({_short(exc)})") from None
    return image


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in {"RGBA", "LA", "PA", "RGBa", "La"} or "transparency" in image.info


def _thumbnail(image: Image.Image) -> tuple[bytes, str]:
    """Longest side at most THUMBNAIL_MAX_SIDE, aspect kept; PNG with alpha, else JPEG."""
    alpha = _has_alpha(image)
    width, height = image.size
    scale = min(1.0, THUMBNAIL_MAX_SIDE / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    mode = "RGBA" if alpha else "RGB"
    # Resize first when the mode allows it, so the full-size image is not copied to convert.
    if image.mode in {"RGB", "RGBA", "L", "LA"}:
        small = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0).convert(mode)
    else:
        small = image.convert(mode).resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if alpha:
        # zlib's run-length strategy: within 5% of the smallest file on screenshots, in a
        # sixth of the time, and a third less on photos and noise, whose pixels do not
        # compress (bench/README.md, round two).
        small.save(buffer, "PNG", compress_type=zlib.Z_RLE)
        return buffer.getvalue(), PNG
    small.save(buffer, "JPEG", quality=THUMBNAIL_JPEG_QUALITY)
    return buffer.getvalue(), JPEG


def _image_result(content_type: str, image: Image.Image) -> _Cleaned:
    thumbnail, thumbnail_type = _thumbnail(image)
    return _Cleaned(content_type, image.width, image.height, thumbnail, thumbnail_type)


# -- PNG ------------------------------------------------------------------------------------

_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_PNG_KEPT: Final = frozenset(
    {
        b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS",
        b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT", b"cICP", b"mDCV", b"cLLI",
        b"acTL", b"fcTL", b"fdAT",
    }
)  # fmt: skip


def _clean_png(src: BinaryIO, out: BinaryIO) -> _Cleaned:
    label = "a PNG image"
    if src.read(8) != _PNG_SIGNATURE:
        raise _damaged(label, "its signature is incomplete")
    out.write(_PNG_SIGNATURE)
    first = True
    while True:
        header = _read_exact(src, 8, label, "a chunk header")
        length, kind = struct.unpack(">I4s", header)
        if not kind.isalpha() or length >= 2**31:
            raise _damaged(label, f"a chunk at byte {src.tell() - 8} is not a PNG chunk")
        if first and kind != b"IHDR":
            raise _damaged(label, "it does not begin with its IHDR chunk")
        first = False
        kept = kind in _PNG_KEPT
        if not kept and kind[:1].isupper():
            raise _damaged(label, f"it has an unknown critical chunk {kind.decode()}")
        name = f"its {kind.decode()} chunk"
        if kept:
            out.write(header)
        crc = _copy_exact(src, out if kept else None, length, label, name, zlib.crc32(kind))
        stored = _read_exact(src, 4, label, name)
        if int.from_bytes(stored, "big") != crc:
            raise _damaged(label, f"{name} fails its checksum")
        if kept:
            out.write(stored)
        if kind == b"IEND":
            break
    _refuse_rest(src, "PNG image", "the IEND chunk")
    return _image_result(PNG, _decode(src, "PNG", label))


# -- GIF ------------------------------------------------------------------------------------

_GIF_KEPT_APPLICATIONS: Final = frozenset({b"NETSCAPE2.0", b"ANIMEXTS1.0", b"ICCRGBG1012"})


def _copy_sub_blocks(src: BinaryIO, out: BinaryIO | None, label: str) -> None:
    while True:
        size = _read_exact(src, 1, label, "a data block")
        if out is not None:
            out.write(size)
        if size == b"\x00":
            return
        _copy_exact(src, out, size[0], label, "a data block")


def _clean_gif(src: BinaryIO, out: BinaryIO) -> _Cleaned:
    label = "a GIF image"
    header = _read_exact(src, 13, label, "its header")
    if header[:6] not in {b"GIF87a", b"GIF89a"}:
        raise _damaged(label, "its signature is not GIF87a or GIF89a")
    out.write(header)
    if header[10] & 0x80:
        _copy_exact(src, out, 3 * 2 ** ((header[10] & 0x07) + 1), label, "its colour table")
    while True:
        introducer = _read_exact(src, 1, label, "its blocks (no trailer)")
        if introducer == b"\x2c":  # image descriptor, local colour table, LZW data
            descriptor = _read_exact(src, 9, label, "an image descriptor")
            out.write(introducer + descriptor)
            if descriptor[8] & 0x80:
                table = 3 * 2 ** ((descriptor[8] & 0x07) + 1)
                _copy_exact(src, out, table, label, "a colour table")
            out.write(_read_exact(src, 1, label, "an image"))
            _copy_sub_blocks(src, out, label)
        elif introducer == b"\x21":
            extension = _read_exact(src, 1, label, "an extension")
            kept = extension == b"\xf9"  # graphic control: delay, disposal, transparency
            if extension == b"\xff":
                size = _read_exact(src, 1, label, "an application extension")
                identifier = _read_exact(src, size[0], label, "an application extension")
                kept = identifier in _GIF_KEPT_APPLICATIONS
                if kept:
                    out.write(introducer + extension + size + identifier)
            elif kept:
                out.write(introducer + extension)
            _copy_sub_blocks(src, out if kept else None, label)
        elif introducer == b"\x3b":
            out.write(introducer)
            break
        else:
            raise _damaged(label, f"byte {src.tell() - 1} is not a GIF block")
    _refuse_rest(src, "GIF image", "the trailer")
    return _image_result(GIF, _decode(src, "GIF", label))


# -- WebP -----------------------------------------------------------------------------------

_WEBP_KEPT: Final = frozenset({b"VP8 ", b"VP8L", b"VP8X", b"ALPH", b"ANIM", b"ANMF", b"ICCP"})
_VP8X_EXIF_AND_XMP: Final = 0x08 | 0x04


def _clean_webp(src: BinaryIO, out: BinaryIO) -> _Cleaned:
    label = "a WebP image"
    header = _read_exact(src, 12, label, "its header")
    if header[:4] != b"RIFF" or header[8:] != b"WEBP":
        raise _damaged(label, "its RIFF header is not WebP")
    end = 8 + int.from_bytes(header[4:8], "little")
    out.write(b"RIFF\0\0\0\0WEBP")
    while src.tell() < end:
        chunk_header = _read_exact(src, 8, label, "a chunk header")
        kind, length = chunk_header[:4], int.from_bytes(chunk_header[4:], "little")
        padded = length + (length & 1)
        if src.tell() + padded > end:
            raise _damaged(label, f"its {kind!r} chunk runs past the RIFF size")
        name = f"its {kind.decode('latin-1')} chunk"
        if kind not in _WEBP_KEPT:
            _copy_exact(src, None, padded, label, name)
        elif kind == b"VP8X":
            data = bytearray(_read_exact(src, padded, label, name))
            data[0] &= ~_VP8X_EXIF_AND_XMP & 0xFF
            out.write(chunk_header + data)
        else:
            out.write(chunk_header)
            _copy_exact(src, out, padded, label, name)
    _refuse_rest(src, "WebP image", "its RIFF size")
    total = out.tell()
    out.seek(4)
    out.write((total - 8).to_bytes(4, "little"))
    out.seek(total)
    return _image_result(WEBP, _decode(src, "WEBP", label))


# -- JPEG -----------------------------------------------------------------------------------


class _JpegReader:
    """Markers and entropy-coded data of a JPEG, read in pieces."""

    label = "a JPEG image"

    def __init__(self, src: BinaryIO) -> None:
        self.src = src
        self.buffer = b""
        self.position = 0

    def _fill(self) -> bool:
        piece = self.src.read(PIECE)
        if not piece:
            return False
        self.buffer = self.buffer[self.position :] + piece
        self.position = 0
        return True

    def read(self, count: int, where: str) -> bytes:
        while len(self.buffer) - self.position < count:
            if not self._fill():
                raise _damaged(self.label, f"it ends inside {where} (truncated)")
        data = self.buffer[self.position : self.position + count]
        self.position += count
        return data

    def marker(self) -> int:
        if self.read(1, "a marker") != b"\xff":
            raise _damaged(self.label, "a segment does not start with a marker")
        code = self.read(1, "a marker")[0]
        while code == 0xFF:  # fill bytes
            code = self.read(1, "a marker")[0]
        return code

    def copy_scan(self, out: BinaryIO | None) -> None:
        """Entropy-coded data up to the next marker that is not a restart or a stuffed 0xFF."""
        search = self.position
        while True:
            found = self.buffer.find(b"\xff", search)
            if found == -1 or found + 1 >= len(self.buffer):
                stop = len(self.buffer) if found == -1 else found
                if out is not None:
                    out.write(self.buffer[self.position : stop])
                self.position = stop
                if not self._fill():
                    raise _damaged(self.label, "it ends inside its image data (truncated)")
                search = 0
                continue
            following = self.buffer[found + 1]
            if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
                search = found + (1 if following == 0xFF else 2)
                continue
            if out is not None:
                out.write(self.buffer[self.position : found])
            self.position = found
            return

    def rest(self) -> int:
        """Bytes left after the current position (the file's tail, not read into memory)."""
        size = os.fstat(self.src.fileno()).st_size
        return len(self.buffer) - self.position + size - self.src.tell()

    def rest_starts_with(self, prefix: bytes) -> bool:
        while len(self.buffer) - self.position < len(prefix) and self._fill():
            pass
        return self.buffer[self.position : self.position + len(prefix)] == prefix


def _jpeg_kept(code: int, payload: bytes) -> bool:
    if code == 0xE2:
        return payload.startswith(b"ICC_PROFILE\0")
    if code == 0xEE:
        return payload.startswith(b"Adobe")
    return not (0xE0 <= code <= 0xEF or code == 0xFE)


def _walk_jpeg(src: BinaryIO, out: BinaryIO | None) -> None:
    """Check the structure up to the EOI, copying what is kept when ``out`` is given."""
    reader = _JpegReader(src)
    label = reader.label
    if reader.read(2, "its signature") != b"\xff\xd8":
        raise _damaged(label, "it does not start with SOI")
    if out is not None:
        out.write(b"\xff\xd8")
    multi_picture = False
    while True:
        code = reader.marker()
        if code == 0xD9:
            if out is not None:
                out.write(b"\xff\xd9")
            break
        if 0xD0 <= code <= 0xD7 or code == 0x01:
            if out is not None:
                out.write(bytes((0xFF, code)))
            continue
        size = reader.read(2, "a segment length")
        length = int.from_bytes(size, "big")
        if length < 2:
            raise _damaged(label, f"segment 0x{code:02X} has a length of {length}")
        payload = reader.read(length - 2, f"segment 0x{code:02X}")
        multi_picture = multi_picture or (code == 0xE2 and payload.startswith(b"MPF\0"))
        if out is not None and _jpeg_kept(code, payload):
            out.write(bytes((0xFF, code)) + size + payload)
        if code == 0xDA:
            reader.copy_scan(out)
    left = reader.rest()
    # A camera's Multi-Picture Format puts more JPEGs (depth, gain map) after the first
    # EOI; they are not stored. Anything else after the EOI makes the file two things.
    if left and not (multi_picture and reader.rest_starts_with(b"\xff\xd8\xff")):
        raise _trailing("JPEG image", "the EOI marker", left)


def _clean_jpeg(src: BinaryIO, out: BinaryIO) -> _Cleaned:
    label = "a JPEG image"
    _walk_jpeg(src, None)
    image = _decode(src, "JPEG", label)
    if not isinstance(image, JpegImagePlugin.JpegImageFile):  # MPO is one too
        raise _damaged(label, f"Pillow reads it as {image.format}")
    orientation = image.getexif().get(0x0112, 1)
    if orientation not in range(2, 9):
        src.seek(0)
        _walk_jpeg(src, out)
        return _image_result(JPEG, image)
    upright = ImageOps.exif_transpose(image)
    upright.info = {}
    upright.save(
        out,
        "JPEG",
        qtables=image.quantization,
        subsampling=JpegImagePlugin.get_sampling(image),
        icc_profile=image.info.get("icc_profile"),
        progressive=bool(image.info.get("progressive")),
    )
    return _image_result(JPEG, upright)


# -- HEIC -----------------------------------------------------------------------------------


def _walk_boxes(src: BinaryIO, label: str) -> None:
    """Top-level ISOBMFF boxes must tile the file exactly: truncation and appended data fail."""
    size = os.fstat(src.fileno()).st_size
    position = 0
    src.seek(0)
    while position < size:
        if size - position < 8:
            raise _trailing("HEIC image", "its last box", size - position)
        header = _read_exact(src, 8, label, "a box header")
        length, kind = int.from_bytes(header[:4], "big"), header[4:]
        if not all(32 <= byte < 127 for byte in kind):
            raise _trailing("HEIC image", "its last box", size - position)
        if length == 1:
            length = int.from_bytes(_read_exact(src, 8, label, "a box header"), "big")
        elif length == 0:
            length = size - position
        if length < 8:
            raise _damaged(label, f"box {kind.decode()} has a length of {length}")
        if position + length > size:
            raise _damaged(label, f"it ends inside its {kind.decode()} box (truncated)")
        position += length
        src.seek(position)


def _clean_heic(src: BinaryIO, out: BinaryIO) -> _Cleaned:
    label = "a HEIC image"
    _register_heif()
    _walk_boxes(src, label)
    image = _decode(src, "HEIF", label)
    upright = ImageOps.exif_transpose(image)
    icc = image.info.get("icc_profile")
    upright.info = {}
    upright.save(out, "HEIF", quality=HEIC_QUALITY, exif=None, xmp=None, icc_profile=icc)
    return _image_result(HEIC, upright)


# -- PDF ------------------------------------------------------------------------------------


def _pdf_name(name: bytes) -> bytes:
    """A regex for a PDF name, each character also in its ``#xx`` escape (either case)."""

    def character(c: int) -> bytes:
        escape = b"".join(
            b"[%s%s]" % (d.upper(), d.lower()) if d.isalpha() else d
            for d in (bytes((x,)) for x in b"%02X" % c)
        )
        return b"(?:%s|#%s)" % (re.escape(bytes((c,))), escape)

    return b"/" + b"".join(character(c) for c in name)


_PDF_ACTIVE_NAMES: Final = (
    b"JavaScript", b"JS", b"Launch", b"EmbeddedFiles", b"EmbeddedFile", b"RichMedia"
)  # fmt: skip
# Outside streams, the next active name or the start of a stream; a stream's bytes are
# skipped up to its "endstream", because compressed data holds "/JS" by chance (about once
# in 16 MiB) and would refuse good documents.
_PDF_TOKEN: Final = re.compile(
    b"(?P<active>(?:"
    + b"|".join(_pdf_name(name) for name in _PDF_ACTIVE_NAMES)
    + b")(?![A-Za-z0-9#]))|(?<![A-Za-z])stream(?:\r\n|\n)"
)
_PDF_TAIL: Final = 1024
_PDF_LOOKAHEAD: Final = 64  # longer than any token, so none is cut at a piece's edge


def _clean_pdf(src: BinaryIO, out: BinaryIO) -> _Cleaned:
    label = "a PDF document"
    if src.read(5) != b"%PDF-":
        raise _damaged(label, "it does not start with %PDF-")
    src.seek(0)
    pending = b""
    tail = b""
    in_stream = False
    while True:
        piece = src.read(PIECE)
        out.write(piece)
        tail = (tail + piece[-_PDF_TAIL:])[-_PDF_TAIL:]
        data = pending + piece
        limit = len(data) if not piece else max(0, len(data) - _PDF_LOOKAHEAD)
        position = 0
        while position < limit:
            if in_stream:
                found = data.find(b"endstream", position)
                if found == -1 or found >= limit:
                    break
                in_stream, position = False, found + len(b"endstream")
                continue
            token = _PDF_TOKEN.search(data, position)
            if token is None or token.start() >= limit:
                break
            if token.group("active"):
                raise InvalidAttachment(
                    "active_content",
                    f"The PDF contains {token.group().decode('latin-1')} (scripts, launch "
                    "actions, embedded files or rich media); save it without them and upload "
                    "again.",
                )
            in_stream, position = True, token.end()
        pending = data[max(position, limit) :]
        if not piece:
            break
    end = tail.rfind(b"%%EOF")
    if end == -1:
        raise _damaged(label, "there is no %%EOF at its end (truncated)")
    after = tail[end + 5 :]
    if after.strip(b" \t\r\n\x00\x0c"):
        raise _trailing("PDF document", "its last %%EOF", len(after))
    return _Cleaned(PDF)


# -- plain text -----------------------------------------------------------------------------

_TEXT_CONTROL: Final = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")
_MARKUP: Final = {
    "<!doctype html": "HTML",
    "<html": "HTML",
    "<svg": "SVG",
    "<?xml": "XML",
    "<script": "HTML",
}
_MARKUP_LOOKAHEAD: Final = max(len(prefix) for prefix in _MARKUP)


def _refuse_markup(lead: str) -> None:
    lowered = lead.lower()
    for prefix, kind in _MARKUP.items():
        if lowered.startswith(prefix):
            raise UnsupportedAttachmentType(
                f"The file is {kind} (it starts with {lead[: len(prefix)]!r}); HTML, SVG "
                "and XML are refused because a browser would run them."
            )


def _clean_text(src: BinaryIO, out: BinaryIO, found: str | None = None) -> _Cleaned:
    """UTF-8 text copied as sent; ``found`` is the type filetype saw, named if it is not text."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    consumed = 0
    characters = 0
    lead: str | None = ""
    while True:
        piece = src.read(PIECE)
        pending = len(decoder.getstate()[0])
        try:
            text = decoder.decode(piece, final=not piece)
        except UnicodeDecodeError as exc:
            if found is not None:
                raise unsupported(found) from None
            offset = consumed - pending + exc.start
            raise UnsupportedAttachmentType(
                f"The file is not UTF-8 text (byte {offset} is not valid UTF-8) nor another "
                "accepted type; accepted are PNG, JPEG, GIF, WebP, HEIC, PDF and UTF-8 "
                "plain text."
            ) from None
        control = _TEXT_CONTROL.search(text)
        if control and found is not None:
            raise unsupported(found)
        if control:
            raise UnsupportedAttachmentType(
                f"The file has a control character (U+{ord(control.group()):04X} at character "
                f"{characters + control.start()}), so it is not plain text; only tab, line "
                "feed, carriage return and form feed are accepted."
            )
        if lead is not None:
            lead = (lead + text).lstrip("\ufeff \t\r\n\x0c")
            if len(lead) >= _MARKUP_LOOKAHEAD or not piece:
                _refuse_markup(lead)
                lead = None
        consumed += len(piece)
        characters += len(text)
        if not piece:
            return _Cleaned(TEXT)
        out.write(piece)


_CLEANERS: Final[dict[str, Callable[[BinaryIO, BinaryIO], _Cleaned]]] = {
    "image/png": _clean_png,
    "image/apng": _clean_png,
    "image/jpeg": _clean_jpeg,
    "image/gif": _clean_gif,
    "image/webp": _clean_webp,
    "image/heic": _clean_heic,
    "application/pdf": _clean_pdf,
}
