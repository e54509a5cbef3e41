"""Attachments over HTTP, rule by rule (decisions.md "Round 2 / Attachments"), on each database.

Every file is real: images are drawn with Pillow (with EXIF and GPS where metadata matters),
and what the API answers is checked against what is stored.
"""

from __future__ import annotations

import dataclasses
import io
import time
from typing import Any

import pytest
import sqlalchemy as sa
from PIL import Image

from support_requests.handlers.app import create_app
from support_requests.handlers.settings import Settings
from support_requests.storage.models import Base
from tests.helpers import (
    ADMIN,
    MOBILE,
    admin,
    assert_problem,
    create,
    customer,
    error_fields,
    stored_rows,
)

UPLOAD = "/api/mobile/attachments"
ADMIN_UPLOAD = "/api/admin/attachments"
GPS_TAG = 0x8825
DESCRIPTION_TAG = 0x010E


def png(width: int = 640, height: int = 480, *, secret: str = "GPS 48.8583N 2.2945E") -> bytes:
    """A PNG with EXIF (a GPS block and a description) and a text chunk."""
    from PIL import PngImagePlugin

    image = Image.new("RGB", (width, height), (200, 30, 60))
    for x in range(0, width, 7):
        image.putpixel((x, x % height), (x % 256, 90, 10))
    exif = Image.Exif()
    exif[DESCRIPTION_TAG] = secret
    exif[GPS_TAG] = {1: "N", 2: (48.0, 51.0, 29.0)}
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", secret)
    out = io.BytesIO()
    image.save(out, "PNG", exif=exif, pnginfo=info)
    return out.getvalue()


def jpeg(*, secret: str = "GPS 48.8583N 2.2945E") -> bytes:
    image = Image.new("RGB", (800, 600), (20, 120, 220))
    exif = Image.Exif()
    exif[DESCRIPTION_TAG] = secret
    exif[GPS_TAG] = {1: "N", 2: (48.0, 51.0, 29.0)}
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif, quality=90)
    return out.getvalue()


PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 200]>>endobj\n"
    b"xref\n0 4\n0000000000 65535 f \n0000000009 00000 n \n0000000052 00000 n \n"
    b"0000000101 00000 n \ntrailer<</Size 4/Root 1 0 R>>\nstartxref\n165\n%%EOF\n"
)


def upload(
    client: Any,
    headers: dict[str, str],
    data: bytes,
    name: str = "screenshot.png",
    *,
    path: str = UPLOAD,
    content_type: str = "application/octet-stream",
) -> Any:
    return client.post(path, files={"file": (name, data, content_type)}, headers=headers)


def uploaded(
    client: Any, headers: dict[str, str], data: bytes, name: str = "shot.png", **kw: Any
) -> str:
    response = upload(client, headers, data, name, **kw)
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


def attachment_rows(db: Any) -> list[dict[str, Any]]:
    table = Base.metadata.tables["attachments"]
    with db.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(table.select())]


# -- upload ---------------------------------------------------------------------------------


def test_an_uploaded_png_is_typed_from_its_bytes_measured_and_expires_in_24_hours(
    client: Any, db: Any
) -> None:
    me = customer()
    response = upload(client, me, png(), "Screen Shot.txt", content_type="text/plain")
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert response.headers["Location"] == f"{UPLOAD}/{data['id']}"
    assert data["contentType"] == "image/png"  # not the part's header, not the name
    assert (data["fileName"], data["width"], data["height"]) == ("Screen Shot.txt", 640, 480)
    assert len(data["id"]) == 22 and not data["id"].isdigit()
    created = time.strptime(data["createdAt"], "%Y-%m-%dT%H:%M:%S.%fZ")
    expires = time.strptime(data["expiresAt"], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert time.mktime(expires) - time.mktime(created) == 24 * 3600
    [row] = attachment_rows(db)
    assert (row["id"], row["size"], row["message_id"]) == (data["id"], data["size"], None)


@pytest.mark.parametrize("kind", ["png", "jpeg"])
def test_an_image_is_stored_without_its_metadata_and_with_its_pixels(
    client: Any, kind: str
) -> None:
    me = customer()
    original = png() if kind == "png" else jpeg()
    attachment_id = uploaded(client, me, original, f"photo.{kind}")
    stored = client.get(f"{UPLOAD}/{attachment_id}", headers=me).content
    assert b"GPS 48.8583N" not in stored
    cleaned = Image.open(io.BytesIO(stored))
    assert not cleaned.getexif()
    assert "Comment" not in cleaned.info
    source = Image.open(io.BytesIO(original))
    if kind == "png":
        assert cleaned.tobytes() == source.tobytes()
    else:
        assert cleaned.quantization == source.quantization  # type: ignore[attr-defined]


def test_the_path_parts_of_a_file_name_are_stripped(client: Any) -> None:
    response = upload(client, customer(), png(), "../../etc/evil.png")
    assert response.status_code == 201, response.text
    assert response.json()["data"]["fileName"] == "evil.png"


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "a.png"),
        (b"<!doctype html><html><body>hi</body></html>", "page.png"),
        (b"MZ\x90\x00\x03\x00\x00\x00\x04\x00" + bytes(200), "setup.exe"),
    ],
)
def test_a_file_of_another_type_is_415_and_stores_nothing(
    client: Any, db: Any, data: bytes, name: str
) -> None:
    response = upload(client, customer(), data, name, content_type="image/png")
    assert_problem(response, 415, "unsupported_attachment_type")
    assert attachment_rows(db) == []


@pytest.mark.parametrize(
    ("data", "name", "why"),
    [
        (b"", "empty.txt", "empty"),
        (png()[:900], "cut.png", "truncated"),
        (png() + b"PK\x03\x04" + bytes(64), "zip.png", "polyglot"),
        (png(), "invoice\u202egnp.exe", "bidirectional override"),
    ],
)
def test_an_empty_damaged_disguised_or_badly_named_file_is_422_and_stores_nothing(
    client: Any, db: Any, data: bytes, name: str, why: str
) -> None:
    response = upload(client, customer(), data, name)
    body = assert_problem(response, 422, "validation_failed")
    assert error_fields(body) == ["file"], why
    assert attachment_rows(db) == []


def test_a_file_over_the_limit_is_413_and_stores_nothing(settings: Settings, db: Any) -> None:
    small = dataclasses.replace(settings, attachment_max_bytes=100 * 1024)
    with create_app(small).test_client() as client:
        response = upload(client, customer(), bytes(150 * 1024), "big.txt")
        assert_problem(response, 413, "payload_too_large")
        assert "100 KiB" in response.json()["detail"]
    assert attachment_rows(db) == []


def test_the_64_kib_json_limit_does_not_apply_to_uploads(client: Any) -> None:
    text = ("A log line of a phone app.\n" * 8000).encode()  # about 210 KiB
    response = upload(client, customer(), text, "app.log")
    assert response.status_code == 201, response.text
    assert response.json()["data"]["contentType"] == "text/plain; charset=utf-8"


def test_an_upload_that_is_not_multipart_is_415(client: Any) -> None:
    response = client.post(UPLOAD, json={"file": "x"}, headers=customer())
    body = assert_problem(response, 415, "unsupported_media_type")
    assert "multipart/form-data" in body["detail"]


def test_an_upload_without_its_file_part_or_with_another_part_is_422(client: Any) -> None:
    me = customer()
    missing = client.post(UPLOAD, files={"other": ("a.txt", b"a")}, headers=me)
    assert "file" in error_fields(assert_problem(missing, 422, "validation_failed"))
    extra = client.post(UPLOAD, files={"file": ("a.txt", b"a")}, data={"x": "1"}, headers=me)
    assert_problem(extra, 422, "validation_failed")


def test_uploads_need_the_right_token(client: Any) -> None:
    assert_problem(upload(client, {}, png()), 401, "unauthenticated")
    assert_problem(upload(client, admin(), png()), 403, "forbidden")
    assert_problem(upload(client, customer(), png(), path=ADMIN_UPLOAD), 403, "forbidden")


# -- attaching ------------------------------------------------------------------------------


def test_create_with_attachments_shows_them_on_the_first_message_for_both_sides(
    client: Any,
) -> None:
    me = customer()
    shot = uploaded(client, me, png(), "shot.png")
    log = uploaded(client, me, b"line one\nline two\n", "app.log")
    detail = create(client, me, attachments=[shot, log])
    [message] = detail["messages"]
    assert [a["id"] for a in message["attachments"]] == [shot, log]
    image, text = message["attachments"]
    assert image == {
        "id": shot,
        "fileName": "shot.png",
        "contentType": "image/png",
        "size": image["size"],
        "width": 640,
        "height": 480,
        "url": f"{UPLOAD}/{shot}",
        "thumbnailUrl": f"{UPLOAD}/{shot}/thumbnail",
        "removed": False,
    }
    assert (text["url"], text["thumbnailUrl"], text["width"]) == (f"{UPLOAD}/{log}", None, None)
    staff = client.get(f"{ADMIN}/{detail['id']}", headers=admin()).json()["data"]
    assert staff["messages"][0]["attachments"][0]["url"] == f"{ADMIN_UPLOAD}/{shot}"


def test_a_message_without_attachments_lists_none(client: Any) -> None:
    detail = create(client, customer())
    assert detail["messages"][0]["attachments"] == []


def test_replies_of_both_sides_take_attachments(client: Any) -> None:
    me, staff = customer(), admin()
    request_id = create(client, me)["id"]
    mine = uploaded(client, me, png(), "more.png")
    detail = client.post(
        f"{MOBILE}/{request_id}/messages",
        json={"body": "Here it is.", "attachments": [mine]},
        headers=me,
    ).json()["data"]
    assert [a["id"] for a in detail["messages"][-1]["attachments"]] == [mine]
    theirs = uploaded(client, staff, PDF, "steps.pdf", path=ADMIN_UPLOAD)
    answered = client.post(
        f"{ADMIN}/{request_id}/messages",
        json={"body": "Follow these steps.", "attachments": [theirs]},
        headers=staff,
    )
    assert answered.status_code == 201, answered.text
    shown = client.get(f"{MOBILE}/{request_id}", headers=me).json()["data"]["messages"][-1]
    assert shown["attachments"][0]["contentType"] == "application/pdf"
    assert shown["attachments"][0]["url"] == f"{UPLOAD}/{theirs}"
    pdf = client.get(f"{UPLOAD}/{theirs}", headers=me)
    assert pdf.status_code == 200 and pdf.content == PDF


def test_a_sixth_attachment_is_422(client: Any) -> None:
    me = customer()
    ids = [uploaded(client, me, f"note {i}\n".encode(), f"n{i}.txt") for i in range(6)]
    response = client.post(
        MOBILE,
        json={"category": "other", "subject": "Six", "message": "Six files.", "attachments": ids},
        headers=me,
    )
    assert error_fields(assert_problem(response, 422, "validation_failed")) == ["attachments"]


def test_someone_elses_upload_is_422_and_the_create_stores_nothing(client: Any, db: Any) -> None:
    me, other = customer(), customer()
    mine = uploaded(client, me, png(), "mine.png")
    theirs = uploaded(client, other, png(), "theirs.png")
    response = client.post(
        MOBILE,
        json={
            "category": "other",
            "subject": "Mixed",
            "message": "Two files.",
            "attachments": [mine, theirs],
        },
        headers=me,
    )
    body = assert_problem(response, 422, "validation_failed")
    assert error_fields(body) == ["attachments[1]"]
    with db.connect() as connection:
        assert connection.scalar(sa.text("SELECT count(*) FROM support_requests")) == 0
    assert {r["id"]: r["message_id"] for r in attachment_rows(db)} == {mine: None, theirs: None}
    # the failed create attached nothing: the upload is still there to attach
    assert create(client, me, attachments=[mine])["messages"][0]["attachments"][0]["id"] == mine


def test_an_upload_attached_once_cannot_be_attached_again(client: Any, db: Any) -> None:
    me = customer()
    shot = uploaded(client, me, png())
    request_id = create(client, me, attachments=[shot])["id"]
    before = stored_rows(db, "messages", request_id)
    response = client.post(
        f"{MOBILE}/{request_id}/messages", json={"body": "Again", "attachments": [shot]}, headers=me
    )
    assert error_fields(assert_problem(response, 422, "validation_failed")) == ["attachments[0]"]
    assert stored_rows(db, "messages", request_id) == before


def test_an_expired_upload_cannot_be_attached(client: Any, db: Any) -> None:
    me = customer()
    shot = uploaded(client, me, png())
    table = Base.metadata.tables["attachments"]
    with db.begin() as connection:
        connection.execute(
            table.update().where(table.c.id == shot).values(expires_at=table.c.created_at)
        )
    response = client.post(
        MOBILE,
        json={"category": "other", "subject": "Late", "message": "Late.", "attachments": [shot]},
        headers=me,
    )
    assert error_fields(assert_problem(response, 422, "validation_failed")) == ["attachments[0]"]


# -- downloads ------------------------------------------------------------------------------


def test_a_download_is_for_the_owner_and_staff_only(client: Any) -> None:
    me = customer()
    shot = uploaded(client, me, png())
    create(client, me, attachments=[shot])
    assert client.get(f"{UPLOAD}/{shot}", headers=me).status_code == 200
    assert client.get(f"{ADMIN_UPLOAD}/{shot}", headers=admin()).status_code == 200
    foreign = client.get(f"{UPLOAD}/{shot}", headers=customer())
    missing = client.get(f"{UPLOAD}/{'A' * 22}", headers=me)
    assert_problem(foreign, 404, "not_found")
    assert_problem(missing, 404, "not_found")
    assert_problem(client.get(f"{UPLOAD}/{shot}", headers=admin()), 403, "forbidden")


def test_an_unattached_upload_is_seen_only_by_its_uploader(client: Any) -> None:
    me = customer()
    shot = uploaded(client, me, png())
    assert client.get(f"{UPLOAD}/{shot}", headers=me).status_code == 200
    assert_problem(client.get(f"{ADMIN_UPLOAD}/{shot}", headers=admin()), 404, "not_found")


def test_a_bad_attachment_id_is_400(client: Any) -> None:
    assert_problem(client.get(f"{UPLOAD}/not-an-id", headers=customer()), 400, "invalid_path_param")


def test_a_download_says_what_it_is_and_how_to_keep_it(client: Any) -> None:
    me = customer()
    shot = uploaded(client, me, png(), "Écran d'accueil.png")
    response = client.get(f"{UPLOAD}/{shot}", headers=me)
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "private"
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["content-length"] == str(len(response.content))
    disposition = response.headers["content-disposition"]
    assert disposition.startswith(
        'inline; filename="_cran d_accueil.png"'
    ) or disposition.startswith("inline; filename=")
    assert "filename*=UTF-8''%C3%89cran%20d%27accueil.png" in disposition
    assert response.headers["etag"].startswith('"') and not response.headers["etag"].startswith(
        "W/"
    )
    pdf = uploaded(client, me, PDF, "report.pdf")
    assert (
        client.get(f"{UPLOAD}/{pdf}", headers=me)
        .headers["content-disposition"]
        .startswith('attachment; filename="report.pdf"')
    )


def test_a_download_revalidates_with_its_etag(client: Any) -> None:
    me = customer()
    shot = uploaded(client, me, png())
    etag = client.get(f"{UPLOAD}/{shot}", headers=me).headers["etag"]
    again = client.get(f"{UPLOAD}/{shot}", headers={**me, "If-None-Match": etag})
    assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)


def test_a_range_is_206_and_a_range_past_the_end_is_416(client: Any) -> None:
    me = customer()
    # Letters: Connexion's response validation (on in tests) reads a text body as JSON when
    # it parses as JSON, so a slice of digits would fail it as a number.
    data = ("abcdefghij" * 100).encode()
    log = uploaded(client, me, data, "letters.txt")
    part = client.get(f"{UPLOAD}/{log}", headers={**me, "Range": "bytes=10-19"})
    assert (part.status_code, part.content) == (206, data[10:20])
    assert part.headers["content-range"] == f"bytes 10-19/{len(data)}"
    tail = client.get(f"{UPLOAD}/{log}", headers={**me, "Range": "bytes=-5"})
    assert (tail.status_code, tail.content) == (206, data[-5:])
    several = client.get(f"{UPLOAD}/{log}", headers={**me, "Range": "bytes=0-1,5-6"})
    assert (several.status_code, several.content) == (200, data)
    past = client.get(f"{UPLOAD}/{log}", headers={**me, "Range": f"bytes={len(data)}-"})
    assert_problem(past, 416, "range_not_satisfiable")
    assert past.headers["content-range"] == f"bytes */{len(data)}"


def test_an_image_has_a_thumbnail_of_at_most_320_pixels_and_other_files_none(client: Any) -> None:
    me = customer()
    shot = uploaded(client, me, png(1170, 2532), "tall.png")
    thumbnail = client.get(f"{UPLOAD}/{shot}/thumbnail", headers=me)
    assert thumbnail.status_code == 200
    image = Image.open(io.BytesIO(thumbnail.content))
    assert max(image.size) <= 320 and image.size[1] == 320
    assert abs(image.size[0] / image.size[1] - 1170 / 2532) < 0.01
    log = uploaded(client, me, b"text\n", "a.txt")
    assert_problem(client.get(f"{UPLOAD}/{log}/thumbnail", headers=me), 404, "not_found")


# -- removal and expiry ---------------------------------------------------------------------


def test_staff_remove_an_attachments_bytes_and_the_message_keeps_a_removed_entry(
    client: Any, db: Any
) -> None:
    me, staff = customer(), admin()
    shot = uploaded(client, me, png(), "password.png")
    request_id = create(client, me, attachments=[shot])["id"]
    etag = client.get(f"{MOBILE}/{request_id}", headers=me).headers["etag"]
    removed = client.delete(f"{ADMIN_UPLOAD}/{shot}", headers=staff)
    assert removed.status_code == 200, removed.text
    entry = removed.json()["data"]
    assert (entry["removed"], entry["url"], entry["thumbnailUrl"]) == (True, None, None)
    shown = client.get(f"{MOBILE}/{request_id}", headers={**me, "If-None-Match": etag})
    assert shown.status_code == 200  # the detail changed
    assert shown.json()["data"]["messages"][0]["attachments"][0]["removed"] is True
    assert_problem(client.get(f"{UPLOAD}/{shot}", headers=me), 404, "not_found")
    assert_problem(client.get(f"{ADMIN_UPLOAD}/{shot}", headers=staff), 404, "not_found")
    events = client.get(f"{ADMIN}/{request_id}/events", headers=staff).json()["data"]
    assert events[-1]["type"] == "attachment_removed"
    assert events[-1]["changes"] == {"attachmentId": {"from": shot, "to": None}}
    again = client.delete(f"{ADMIN_UPLOAD}/{shot}", headers=staff)
    assert (again.status_code, again.json()["data"]) == (200, entry)
    assert len(client.get(f"{ADMIN}/{request_id}/events", headers=staff).json()["data"]) == len(
        events
    )


def test_removing_an_unknown_attachment_is_404(client: Any) -> None:
    assert_problem(client.delete(f"{ADMIN_UPLOAD}/{'B' * 22}", headers=admin()), 404, "not_found")


def test_the_server_deletes_uploads_that_expired_unattached(settings: Settings, db: Any) -> None:
    quick = dataclasses.replace(settings, attachment_cleanup_seconds=0.05)
    table = Base.metadata.tables["attachments"]
    with create_app(quick).test_client() as client:
        me = customer()
        kept = uploaded(client, me, png(), "kept.png")
        gone = uploaded(client, me, png(), "gone.png")
        create(client, me, attachments=[kept])
        with db.begin() as connection:
            connection.execute(
                table.update().where(table.c.id == gone).values(expires_at=table.c.created_at)
            )
        deadline = time.monotonic() + 10
        while {r["id"] for r in attachment_rows(db)} != {kept} and time.monotonic() < deadline:
            time.sleep(0.05)
    assert {r["id"] for r in attachment_rows(db)} == {kept}


def test_uploads_expired_while_no_server_ran_are_gone_before_the_first_request(
    settings: Settings, db: Any
) -> None:
    """The first cleanup round runs at start, before the server answers anything: it
    never lands inside a request's transaction, and an expired upload is gone already."""
    table = Base.metadata.tables["attachments"]
    with create_app(settings).test_client() as client:
        me = customer()
        gone = uploaded(client, me, png(), "gone.png")
    with db.begin() as connection:
        connection.execute(
            table.update().where(table.c.id == gone).values(expires_at=table.c.created_at)
        )
    assert {r["id"] for r in attachment_rows(db)} == {gone}
    with create_app(settings).test_client():
        assert attachment_rows(db) == []


def test_removing_an_upload_never_attached_deletes_it_and_answers_removed(
    client: Any, db: Any
) -> None:
    staff = admin()
    upload_id = uploaded(client, staff, PDF, "draft.pdf", path=ADMIN_UPLOAD)
    removed = client.delete(f"{ADMIN_UPLOAD}/{upload_id}", headers=staff)
    assert removed.status_code == 200, removed.text
    entry = removed.json()["data"]
    assert (entry["id"], entry["removed"], entry["url"], entry["thumbnailUrl"]) == (
        upload_id,
        True,
        None,
        None,
    )
    assert attachment_rows(db) == []
    assert_problem(client.delete(f"{ADMIN_UPLOAD}/{upload_id}", headers=staff), 404, "not_found")
