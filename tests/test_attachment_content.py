"""inspect_upload on real files made here with Pillow: types, cleaning, refusals.

Every secret planted in metadata carries the word SECRET, so "nothing left" is also
checked on the cleaned file's raw bytes, not only through Pillow.
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import tracemalloc
import warnings
import zipfile
import zlib
from pathlib import Path

import pytest
from PIL import ExifTags, Image, ImageDraw, PngImagePlugin

from support_requests.domain.attachments import InvalidAttachment, UnsupportedAttachmentType
from support_requests.storage.attachment_content import Inspected, inspect_upload

SECRET_XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description>'
    b"SECRET-XMP</rdf:Description></rdf:RDF></x:xmpmeta>"
)


# -- makers ---------------------------------------------------------------------------------


def picture(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """A picture whose every corner differs, so a rotation or a crop shows in the pixels."""
    image = Image.new("RGB", (width, height))
    image.putdata(
        [((x * 7) % 256, (y * 5) % 256, (x + y) % 256) for y in range(height) for x in range(width)]
    )
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, width // 4, height // 4), fill=(255, 0, 0))
    return image.convert(mode)


def secret_exif(orientation: int | None = None) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "SECRET-MAKE"
    exif[ExifTags.Base.ImageDescription] = "SECRET-DESCRIPTION"
    if orientation is not None:
        exif[ExifTags.Base.Orientation] = orientation
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (52.0, 31.0, 12.5)
    gps[ExifTags.GPS.GPSMapDatum] = "SECRET-GPS-DATUM"
    return exif


def encoded(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def png_with_text() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "SECRET-PNG-TEXT")
    info.add_itxt("XML:com.adobe.xmp", SECRET_XMP.decode(), zip=False)
    info.add_text("Software", "SECRET-PNG-COMPRESSED", zip=True)
    return encoded(picture(640, 480), "PNG", pnginfo=info, exif=secret_exif())


def jpeg_with_exif(orientation: int | None, width: int = 400, height: int = 300) -> bytes:
    exif = secret_exif(orientation)
    return encoded(
        picture(width, height), "JPEG", quality=83, exif=exif, comment=b"SECRET-JPEG-COMMENT"
    )


def animated_gif() -> bytes:
    frames = [picture(120, 90).quantize(64) for _ in range(3)]
    for number, frame in enumerate(frames):
        ImageDraw.Draw(frame).rectangle((number * 30, 40, number * 30 + 20, 60), fill=number)
    return encoded(
        frames[0],
        "GIF",
        save_all=True,
        append_images=frames[1:],
        duration=[100, 200, 300],
        loop=0,
        comment=b"SECRET-GIF-COMMENT",
    )


def heic_with_exif() -> bytes:
    from pillow_heif import register_heif_opener

    register_heif_opener()
    return encoded(picture(360, 240), "HEIF", quality=80, exif=secret_exif().tobytes())


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose header declares ``width`` x ``height`` grey pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def pdf(*extra_objects: bytes, trailer_extra: bytes = b"") -> bytes:
    """A minimal valid PDF (one empty page) with a correct cross-reference table."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
        *extra_objects,
    ]
    body = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"
    offsets = []
    for number, content in enumerate(objects, start=1):
        offsets.append(len(body))
        body += b"%d 0 obj\n%s\nendobj\n" % (number, content)
    xref = len(body)
    body += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    body += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    body += b"trailer\n<< /Size %d /Root 1 0 R >>\n" % (len(objects) + 1)
    return body + b"startxref\n%d\n%%%%EOF\n" % xref + trailer_extra


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("payload.html", "<script>alert(1)</script>")
    return buffer.getvalue()


# -- running --------------------------------------------------------------------------------


def upload(tmp_path: Path, data: bytes, name: str = "upload.bin") -> Inspected:
    source = tmp_path / "incoming" / name
    source.parent.mkdir(exist_ok=True)
    source.write_bytes(data)
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    inspected = inspect_upload(source, workdir)
    assert source.read_bytes() == data, "the upload itself is never changed"
    assert inspected.path.parent == workdir
    assert inspected.size == inspected.path.stat().st_size
    return inspected


def refusal(tmp_path: Path, data: bytes) -> InvalidAttachment | UnsupportedAttachmentType:
    with pytest.raises((InvalidAttachment, UnsupportedAttachmentType)) as refused:
        upload(tmp_path, data)
    assert list((tmp_path / "work").iterdir()) == [], "a refusal leaves nothing behind"
    return refused.value


def invalid(tmp_path: Path, data: bytes, reason: str) -> str:
    error = refusal(tmp_path, data)
    assert isinstance(error, InvalidAttachment), error
    assert error.reason == reason, error.detail
    assert error.problems[0].field == "file"
    return error.detail


def unsupported(tmp_path: Path, data: bytes) -> str:
    error = refusal(tmp_path, data)
    assert isinstance(error, UnsupportedAttachmentType), error
    return error.detail


def reopened(inspected: Inspected) -> Image.Image:
    image = Image.open(io.BytesIO(inspected.path.read_bytes()))
    image.load()
    return image


def assert_thumbnail(inspected: Inspected, content_type: str = "image/jpeg") -> None:
    assert inspected.thumbnail is not None
    assert inspected.thumbnail_content_type == content_type
    thumbnail = Image.open(io.BytesIO(inspected.thumbnail))
    assert thumbnail.format == content_type.removeprefix("image/").upper()
    assert inspected.width and inspected.height
    assert max(thumbnail.size) == min(320, max(inspected.width, inspected.height))
    assert thumbnail.width / thumbnail.height == pytest.approx(
        inspected.width / inspected.height, rel=0.01
    )


def assert_no_secrets(inspected: Inspected) -> None:
    raw = inspected.path.read_bytes()
    assert b"SECRET" not in raw
    assert b"GPS" not in raw
    image = reopened(inspected)
    assert not image.getexif()
    for key in ("exif", "xmp", "comment", "XML:com.adobe.xmp", "Comment"):
        assert not image.info.get(key), key


# -- PNG ------------------------------------------------------------------------------------


def test_png_keeps_its_pixels_and_loses_text_xmp_and_exif(tmp_path):
    data = png_with_text()
    assert b"SECRET-PNG-TEXT" in data and b"eXIf" in data and b"iTXt" in data

    inspected = upload(tmp_path, data)

    assert inspected.content_type == "image/png"
    assert (inspected.width, inspected.height) == (640, 480)
    assert_no_secrets(inspected)
    raw = inspected.path.read_bytes()
    assert not any(kind in raw for kind in (b"tEXt", b"zTXt", b"iTXt", b"eXIf"))
    assert reopened(inspected).tobytes() == Image.open(io.BytesIO(data)).tobytes()
    assert_thumbnail(inspected)


def test_png_with_transparency_gets_a_png_thumbnail_and_same_pixels(tmp_path):
    data = encoded(picture(100, 700, "RGBA"), "PNG")

    inspected = upload(tmp_path, data)

    assert reopened(inspected).tobytes() == Image.open(io.BytesIO(data)).tobytes()
    assert_thumbnail(inspected, "image/png")
    assert Image.open(io.BytesIO(inspected.thumbnail or b"")).size == (46, 320)


def test_animated_png_keeps_its_frames(tmp_path):
    frames = [picture(60, 40), picture(60, 40).transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "SECRET-APNG")
    data = encoded(frames[0], "PNG", save_all=True, append_images=frames[1:], pnginfo=info)

    inspected = upload(tmp_path, data)

    assert inspected.content_type == "image/png"
    assert_no_secrets(inspected)
    original, cleaned = Image.open(io.BytesIO(data)), reopened(inspected)
    assert getattr(cleaned, "n_frames", 1) == 2
    for frame in range(2):
        original.seek(frame)
        cleaned.seek(frame)
        assert cleaned.tobytes() == original.tobytes()


def test_a_small_image_keeps_its_size_in_the_thumbnail(tmp_path):
    inspected = upload(tmp_path, encoded(picture(40, 20), "PNG"))

    assert_thumbnail(inspected)
    assert Image.open(io.BytesIO(inspected.thumbnail or b"")).size == (40, 20)


def test_type_comes_from_the_bytes_not_the_name(tmp_path):
    inspected = upload(tmp_path, encoded(picture(30, 30), "PNG"), name="notes.txt")

    assert inspected.content_type == "image/png"


# -- JPEG -----------------------------------------------------------------------------------


def test_jpeg_without_orientation_is_stripped_losslessly(tmp_path):
    data = jpeg_with_exif(orientation=None)
    assert b"SECRET-GPS-DATUM" in data and b"SECRET-JPEG-COMMENT" in data

    inspected = upload(tmp_path, data)

    assert inspected.content_type == "image/jpeg"
    assert (inspected.width, inspected.height) == (400, 300)
    assert_no_secrets(inspected)
    original = Image.open(io.BytesIO(data))
    cleaned = reopened(inspected)
    assert cleaned.tobytes() == original.tobytes()
    assert cleaned.quantization == original.quantization  # type: ignore[attr-defined]
    assert_thumbnail(inspected)


@pytest.mark.parametrize(
    "options",
    [{"progressive": True}, {"restart_marker_blocks": 1}, {"subsampling": "4:4:4"}],
    ids=["progressive", "restart-markers", "no-subsampling"],
)
def test_jpeg_layouts_are_stripped_losslessly(tmp_path, options):
    data = encoded(picture(333, 222), "JPEG", quality=90, exif=secret_exif(), **options)

    inspected = upload(tmp_path, data)

    assert_no_secrets(inspected)
    assert reopened(inspected).tobytes() == Image.open(io.BytesIO(data)).tobytes()


def test_jpeg_with_orientation_6_is_turned_upright_at_its_own_quality(tmp_path):
    data = jpeg_with_exif(orientation=6)
    original = Image.open(io.BytesIO(data))
    assert original.getexif()[ExifTags.Base.Orientation] == 6

    inspected = upload(tmp_path, data)

    assert (inspected.width, inspected.height) == (300, 400)
    assert_no_secrets(inspected)
    cleaned = reopened(inspected)
    assert cleaned.quantization == original.quantization  # type: ignore[attr-defined]
    # Orientation 6 means "rotate 90° clockwise to view": the red top-left corner of the
    # stored pixels ends at the top right.
    red = cleaned.convert("RGB").getpixel((cleaned.width - 10, 10))
    assert isinstance(red, tuple) and red[0] > 200 and red[1] < 60
    assert_thumbnail(inspected)
    assert Image.open(io.BytesIO(inspected.thumbnail or b"")).size == (240, 320)


def test_jpeg_keeps_its_icc_profile(tmp_path):
    profile = b"\x00" * 128 + b"fake profile"
    data = encoded(picture(64, 64), "JPEG", icc_profile=profile, comment=b"SECRET-X")

    inspected = upload(tmp_path, data)

    assert reopened(inspected).info.get("icc_profile") == profile
    assert b"SECRET" not in inspected.path.read_bytes()


def test_multi_picture_jpeg_keeps_the_first_picture_only(tmp_path):
    first, second = picture(80, 60), picture(80, 60).transpose(Image.Transpose.ROTATE_180)
    data = encoded(first, "MPO", save_all=True, append_images=[second])

    inspected = upload(tmp_path, data)

    assert inspected.content_type == "image/jpeg"
    raw = inspected.path.read_bytes()
    assert raw.count(b"\xff\xd8") == 1 and raw.endswith(b"\xff\xd9")
    assert b"MPF\x00" not in raw


# -- GIF ------------------------------------------------------------------------------------


def test_animated_gif_keeps_every_frame_and_loses_its_comment(tmp_path):
    data = animated_gif()
    assert b"SECRET-GIF-COMMENT" in data

    inspected = upload(tmp_path, data)

    assert inspected.content_type == "image/gif"
    assert (inspected.width, inspected.height) == (120, 90)
    assert_no_secrets(inspected)
    original, cleaned = Image.open(io.BytesIO(data)), reopened(inspected)
    assert getattr(cleaned, "n_frames", 1) == getattr(original, "n_frames", 1) == 3
    for frame in range(3):
        original.seek(frame)
        cleaned.seek(frame)
        assert cleaned.convert("RGBA").tobytes() == original.convert("RGBA").tobytes()
        assert cleaned.info["duration"] == original.info["duration"]
    assert cleaned.info.get("loop") == 0
    assert_thumbnail(inspected)


# -- WebP -----------------------------------------------------------------------------------


def test_lossless_webp_stays_lossless_with_the_same_pixels_and_no_exif_or_xmp(tmp_path):
    data = encoded(picture(300, 200), "WEBP", lossless=True, exif=secret_exif(), xmp=SECRET_XMP)
    assert b"SECRET-XMP" in data and b"SECRET-GPS-DATUM" in data

    inspected = upload(tmp_path, data)

    assert inspected.content_type == "image/webp"
    assert (inspected.width, inspected.height) == (300, 200)
    assert_no_secrets(inspected)
    raw = inspected.path.read_bytes()
    assert b"VP8L" in raw and b"EXIF" not in raw and b"XMP " not in raw
    assert reopened(inspected).tobytes() == Image.open(io.BytesIO(data)).tobytes()
    assert_thumbnail(inspected)


def test_lossy_webp_is_not_reencoded(tmp_path):
    data = encoded(picture(300, 200), "WEBP", quality=60, exif=secret_exif(), xmp=SECRET_XMP)

    inspected = upload(tmp_path, data)

    assert_no_secrets(inspected)
    raw = inspected.path.read_bytes()
    bitstream = data[data.index(b"VP8 ") :]
    bitstream = bitstream[: 8 + int.from_bytes(bitstream[4:8], "little")]
    assert bitstream in raw
    assert reopened(inspected).tobytes() == Image.open(io.BytesIO(data)).tobytes()


# -- HEIC -----------------------------------------------------------------------------------


def test_heic_is_reencoded_without_exif(tmp_path):
    data = heic_with_exif()
    assert b"SECRET-GPS-DATUM" in data

    inspected = upload(tmp_path, data)

    assert inspected.content_type == "image/heic"
    assert (inspected.width, inspected.height) == (360, 240)
    assert_no_secrets(inspected)
    assert reopened(inspected).format == "HEIF"
    assert_thumbnail(inspected)


def test_heic_with_orientation_6_is_stored_upright(tmp_path):
    from pillow_heif import register_heif_opener

    register_heif_opener()
    data = encoded(picture(360, 240), "HEIF", quality=80, exif=secret_exif(6).tobytes())

    inspected = upload(tmp_path, data)

    assert (inspected.width, inspected.height) == (240, 360)
    cleaned = reopened(inspected)
    assert cleaned.getexif().get(ExifTags.Base.Orientation) in {None, 1}
    red = cleaned.convert("RGB").getpixel((cleaned.width - 10, 10))
    assert isinstance(red, tuple) and red[0] > 200 and red[1] < 60


def test_heif_support_is_registered_on_first_use_not_at_import():
    code = (
        "import support_requests.storage.attachment_content\n"
        "from PIL import Image\n"
        "print('HEIF' in Image.OPEN)\n"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert shown.strip() == "False"


# -- PDF and text ---------------------------------------------------------------------------


def test_pdf_is_kept_as_sent_without_dimensions_or_thumbnail(tmp_path):
    data = pdf()

    inspected = upload(tmp_path, data)

    assert inspected.content_type == "application/pdf"
    assert (inspected.width, inspected.height, inspected.thumbnail) == (None, None, None)
    assert inspected.thumbnail_content_type is None
    assert inspected.path.read_bytes() == data


@pytest.mark.parametrize(
    ("active", "shown"),
    [
        (b"<< /S /JavaScript /JS (app.alert(1)) >>", "/JavaScript"),
        (b"<< /Type /Action /S /Launch /F (calc.exe) >>", "/Launch"),
        (b"<< /Names << /EmbeddedFiles 9 0 R >> >>", "/EmbeddedFiles"),
        (b"<< /Type /EmbeddedFile /Length 0 >>", "/EmbeddedFile"),
        (b"<< /S /#4A#61vaScript >>", "/#4A#61vaScript"),
    ],
)
def test_pdf_with_scripts_launch_actions_or_embedded_files_is_refused(tmp_path, active, shown):
    detail = invalid(tmp_path, pdf(active), "active_content")

    assert detail.startswith(f"The PDF contains {shown} ")


def test_pdf_with_a_name_that_only_starts_like_js_is_accepted(tmp_path):
    assert upload(tmp_path, pdf(b"<< /JSON (x) /Font /Helvetica >>")).content_type == (
        "application/pdf"
    )


def test_pdf_stream_bytes_that_look_like_a_script_name_are_not_refused(tmp_path):
    content = b"\x9c/JS\x00\xff/Launch)\x01 endstreamish"
    stream = b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content)

    assert upload(tmp_path, pdf(stream)).content_type == "application/pdf"


def test_pdf_script_after_a_stream_is_refused(tmp_path):
    stream = b"<< /Length 3 >>\nstream\nabc\nendstream"

    invalid(tmp_path, pdf(stream, b"<< /S /JavaScript /JS (x) >>"), "active_content")


@pytest.mark.parametrize("shift", [-11, -6, -3, 0, 3])
def test_pdf_script_across_a_piece_boundary_is_refused(tmp_path, shift):
    active = b"<< /S /JavaScript >>"
    before = pdf(b"<< /Filler () >>", active).index(b"/JavaScript")
    filler = b"x" * (64 * 1024 + shift - before)  # the name starts `shift` from the edge
    data = pdf(b"<< /Filler (%s) >>" % filler, active)
    assert data.index(b"/JavaScript") == 64 * 1024 + shift

    invalid(tmp_path, data, "active_content")


def test_webp_unknown_chunks_are_dropped(tmp_path):
    data = encoded(picture(20, 20), "WEBP", lossless=True, exif=secret_exif())
    extra = b"ZZZZ" + (12).to_bytes(4, "little") + b"<html>SECRET"
    data = data[:4] + (len(data) - 8 + len(extra)).to_bytes(4, "little") + data[8:] + extra

    inspected = upload(tmp_path, data)

    assert b"ZZZZ" not in inspected.path.read_bytes()
    assert_no_secrets(inspected)


def test_pdf_with_html_after_its_end_is_refused_as_a_polyglot(tmp_path):
    detail = invalid(tmp_path, pdf(trailer_extra=b"<html><script>x</script>"), "polyglot")

    assert detail == (
        "The PDF document has 25 bytes after its end (its last %%EOF); a file that is also "
        "something else is refused."
    )


def test_truncated_pdf_is_refused(tmp_path):
    detail = invalid(tmp_path, pdf()[:-40], "damaged")

    assert "no %%EOF at its end (truncated)" in detail


@pytest.mark.parametrize(
    "text",
    [
        "The app crashes when I tap Send.\r\n\tStack:\n  at main()\f\n",
        "\ufeffGrüße aus Köln, 你好, ☕ and <b>bold</b> further on\n",
        "",
    ],
)
def test_utf8_text_is_kept_as_sent(tmp_path, text):
    data = text.encode("utf-8") + b"  \n"

    inspected = upload(tmp_path, data)

    assert inspected.content_type == "text/plain; charset=utf-8"
    assert inspected.path.read_bytes() == data
    assert (inspected.width, inspected.thumbnail) == (None, None)


def test_latin1_text_is_unsupported(tmp_path):
    detail = unsupported(tmp_path, "Le café est froid".encode("latin-1"))

    assert detail == (
        "The file is not UTF-8 text (byte 6 is not valid UTF-8) nor another accepted type; "
        "accepted are PNG, JPEG, GIF, WebP, HEIC, PDF and UTF-8 plain text."
    )


def test_utf8_cut_inside_a_character_is_unsupported(tmp_path):
    assert "not UTF-8 text" in unsupported(tmp_path, "naïve ☕".encode()[:-1])


@pytest.mark.parametrize(("control", "name"), [("\x00", "U+0000"), ("\x1b", "U+001B")])
def test_text_with_control_characters_is_unsupported(tmp_path, control, name):
    detail = unsupported(tmp_path, f"log line\n{control}[31m red".encode())

    assert detail.startswith(f"The file has a control character ({name} at character 9)")


@pytest.mark.parametrize(
    ("markup", "kind"),
    [
        ('<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', "SVG"),
        ("\ufeff \n\t<!DOCTYPE HTML><html><body>hi</body></html>", "HTML"),
        ("<HTML><script>alert(1)</script></HTML>", "HTML"),
        ('<?xml version="1.0"?><svg/>', "XML"),
        ("  <Script>alert(document.cookie)</Script>", "HTML"),
    ],
)
def test_html_svg_and_xml_are_refused(tmp_path, markup, kind):
    detail = unsupported(tmp_path, markup.encode())

    assert detail.startswith(f"The file is {kind} (it starts with ")
    assert detail.endswith("HTML, SVG and XML are refused because a browser would run them.")


@pytest.mark.parametrize("text", ["BMW app crashed at login\n", "ID3 tags are lost\n"])
def test_text_that_starts_like_a_weak_signature_is_still_text(tmp_path, text):
    inspected = upload(tmp_path, text.encode())

    assert inspected.content_type == "text/plain; charset=utf-8"


def test_text_that_mentions_html_further_on_is_text(tmp_path):
    inspected = upload(tmp_path, b"Steps: open <html> page, then <svg> icon\n")

    assert inspected.content_type == "text/plain; charset=utf-8"


@pytest.mark.parametrize("kind", ["text", "pdf"])
def test_a_10_mib_upload_is_read_in_pieces(tmp_path, kind):
    line = b"2026-12-06T04:30:00Z INFO request handled in 12 ms\n"
    if kind == "text":
        data = line * (10 * 1024 * 1024 // len(line) + 1)
    else:
        content = b"BT /F1 9 Tf (" + line * (10 * 1024 * 1024 // len(line) + 1) + b") Tj ET"
        data = pdf(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content))
    source = tmp_path / "big"
    source.write_bytes(data)
    del data
    size = source.stat().st_size
    workdir = tmp_path / "work"
    workdir.mkdir()

    tracemalloc.start()
    try:
        inspected = inspect_upload(source, workdir)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert inspected.size == size >= 10 * 1024 * 1024
    assert peak < 4 * 1024 * 1024, f"peak {peak:,} bytes for a {size:,}-byte upload"


# -- refusals -------------------------------------------------------------------------------


def test_empty_file_is_refused(tmp_path):
    assert invalid(tmp_path, b"", "empty") == "The file is empty."


def test_zip_is_unsupported_and_named(tmp_path):
    detail = unsupported(tmp_path, zip_bytes())

    assert detail.startswith("The file's type is application/zip; accepted are PNG, JPEG")


def test_tiff_is_unsupported(tmp_path):
    assert "image/tiff" in unsupported(tmp_path, encoded(picture(8, 8), "TIFF"))


@pytest.mark.parametrize(
    ("data", "label"),
    [
        (b"\x89PNG\r\n\x1a\n<html><script>alert(1)</script></html>", "a PNG image"),
        (b"GIF89a/*\x00\x00*/=1;alert(document.domain)//" + b"\x00" * 20, "a GIF image"),
        (b"\xff\xd8\xff\xe0 this is not a JPEG at all", "a JPEG image"),
        (b"RIFF\x20\x00\x00\x00WEBPVP8 this is not a WebP" + b"\x00" * 8, "a WebP image"),
    ],
)
def test_a_file_that_lies_about_its_type_is_refused(tmp_path, data, label):
    detail = invalid(tmp_path, data, "damaged")

    assert detail.startswith(f"The file starts like {label} but is not a whole, readable one")


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_png_is_refused(tmp_path, cut):
    data = encoded(picture(200, 200), "PNG")

    detail = invalid(tmp_path, data[: int(len(data) * cut)], "damaged")

    assert "(truncated)" in detail


def test_png_with_a_bad_checksum_is_refused(tmp_path):
    data = bytearray(encoded(picture(50, 50), "PNG"))
    data[60] ^= 0xFF  # inside the first IDAT

    assert "fails its checksum" in invalid(tmp_path, bytes(data), "damaged")


@pytest.mark.parametrize("cut", [0.5, 0.95])
def test_truncated_jpeg_is_refused(tmp_path, cut):
    data = encoded(picture(200, 200), "JPEG")

    detail = invalid(tmp_path, data[: int(len(data) * cut)], "damaged")

    assert detail == (
        "The file starts like a JPEG image but is not a whole, readable one: it ends inside "
        "its image data (truncated)."
    )


def test_truncated_gif_webp_and_heic_are_refused(tmp_path):
    for data in (animated_gif(), encoded(picture(90, 90), "WEBP"), heic_with_exif()):
        invalid(tmp_path, data[: len(data) * 2 // 3], "damaged")


def test_decompression_bomb_over_twice_the_limit_is_refused(tmp_path):
    data = png_declaring(100_000, 100_000)
    assert len(data) < 200

    detail = invalid(tmp_path, data, "too_many_pixels")

    assert detail == (
        "The image declares 10,000,000,000 pixels; at most 89,478,485 pixels are decoded, "
        "so it is refused as a decompression bomb."
    )


@pytest.mark.parametrize("action", ["error", "ignore", "default"])
def test_decompression_bomb_over_the_limit_is_refused_whatever_the_warning_filters(
    tmp_path, action
):
    data = png_declaring(10_000, 9_000)  # 90,000,000: Pillow only warns
    with warnings.catch_warnings(record=True):
        warnings.simplefilter(action)  # type: ignore[call-overload]
        error = refusal(tmp_path, data)
    assert isinstance(error, InvalidAttachment)
    assert error.reason == "too_many_pixels"
    assert error.detail.startswith("The image declares 90,000,000 pixels")


def test_the_pixel_limit_is_pillows_own(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)

    with warnings.catch_warnings(record=True):
        warnings.simplefilter("ignore")
        detail = invalid(tmp_path, encoded(picture(101, 100), "PNG"), "too_many_pixels")

    assert detail.startswith("The image declares 10,100 pixels (101x100); at most 10,000 pixels")
    assert upload(tmp_path, encoded(picture(100, 100), "PNG")).width == 100


def test_png_with_a_zip_after_its_end_is_refused_as_a_polyglot(tmp_path):
    archive = zip_bytes()
    detail = invalid(tmp_path, encoded(picture(50, 50), "PNG") + archive, "polyglot")

    assert detail == (
        f"The PNG image has {len(archive)} bytes after its end (the IEND chunk); a file that "
        "is also something else is refused."
    )


def test_jpeg_with_html_after_its_end_is_refused_as_a_polyglot(tmp_path):
    page = b"<html><script>alert(document.cookie)</script></html>"

    detail = invalid(tmp_path, encoded(picture(50, 50), "JPEG") + page, "polyglot")

    assert detail.startswith(f"The JPEG image has {len(page)} bytes after its end (the EOI")


def test_gif_and_webp_with_data_after_their_end_are_refused(tmp_path):
    for data in (animated_gif(), encoded(picture(20, 20), "WEBP", lossless=True)):
        invalid(tmp_path, data + b"PK\x03\x04 and more", "polyglot")


def test_script_hidden_in_a_png_text_chunk_is_dropped(tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "<script>SECRET()</script>")

    inspected = upload(tmp_path, encoded(picture(20, 20), "PNG", pnginfo=info))

    assert b"<script>" not in inspected.path.read_bytes()
