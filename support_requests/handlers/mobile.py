"""Mobile operations (tag ``mobile``): the signed-in customer's own requests."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from support_requests.handlers import conditional
from support_requests.handlers.auth import caller
from support_requests.handlers.idempotency import once
from support_requests.handlers.render import (
    badge,
    envelope,
    mobile_detail,
    mobile_summary,
    read_state,
)
from support_requests.storage.idempotency import IdempotencyStore, Keeper
from support_requests.storage.support_desk import RequestRecord, SupportDesk

PATH = "/api/mobile/support-requests"


async def create_request(
    desk: SupportDesk,
    idempotency: IdempotencyStore,
    body: dict[str, Any],
    token_info: dict[str, Any],
) -> Response:
    """Open a support request with its first message (once per Idempotency-Key)."""
    customer = caller(token_info)

    async def act(keeper: Keeper | None) -> RequestRecord:
        return await desk.create_request(
            customer,
            category=body["category"],
            subject=body["subject"].strip(),
            message=body["message"].strip(),
            attachments=body.get("attachments", ()),
            device=_device(body.get("device")),
            keeper=keeper,
        )

    def render(record: RequestRecord) -> Response:
        return envelope(
            "Support request created successfully",
            mobile_detail(record),
            status=201,
            headers={"Location": f"{PATH}/{record.row.id}"},
        )

    return await once(idempotency, customer, body, act, render)


def _device(device: dict[str, str] | None) -> dict[str, str] | None:
    """The device context as sent, its text fields trimmed like every other text field."""
    if device is None:
        return None
    return {name: value.strip() for name, value in device.items()}


async def list_requests(
    desk: SupportDesk,
    token_info: dict[str, Any],
    limit: int,
    cursor: str | None = None,
    status: str | None = None,
) -> Response:
    """The caller's requests, newest first, one page (304 while it is unchanged)."""
    customer = caller(token_info)
    query = {"customer": customer.sub, "limit": limit, "cursor": cursor, "status": status}
    return await conditional.listing(
        conditional.View.MOBILE,
        query,
        lambda: desk.page_versions_for_customer(
            customer, limit=limit, cursor=cursor, status=status
        ),
        lambda: desk.list_for_customer(customer, limit=limit, cursor=cursor, status=status),
        mobile_summary,
    )


async def get_request(desk: SupportDesk, id_: int, token_info: dict[str, Any]) -> Response:
    """One of the caller's requests with its thread.

    A poll whose ``If-None-Match`` is current never gets here: ``conditional.Revalidation``
    answers it with a ``304``.
    """
    record = await desk.get_for_customer(caller(token_info), id_)
    return conditional.detail(conditional.View.MOBILE, record, mobile_detail(record))


async def reply(
    desk: SupportDesk,
    idempotency: IdempotencyStore,
    id_: int,
    body: dict[str, Any],
    token_info: dict[str, Any],
) -> Response:
    """Append the caller's reply (once per Idempotency-Key)."""
    customer = caller(token_info)

    async def act(keeper: Keeper | None) -> RequestRecord:
        return await desk.reply_as_customer(
            customer,
            id_,
            body["body"].strip(),
            attachments=body.get("attachments", ()),
            before_commit=None if keeper is None else keeper.before_commit,
        )

    def render(record: RequestRecord) -> Response:
        return envelope("Reply added successfully", mobile_detail(record), status=201)

    return await once(idempotency, customer, body, act, render)


async def rate(
    desk: SupportDesk, id_: int, body: dict[str, Any], token_info: dict[str, Any]
) -> Response:
    """Rate one of the caller's requests, or rate it again (the new rating replaces it)."""
    comment = body.get("comment")
    record = await desk.rate(
        caller(token_info), id_, body["score"], None if comment is None else comment.strip()
    )
    return envelope("Support request rated successfully", mobile_detail(record))


async def mark_read(
    desk: SupportDesk, id_: int, body: dict[str, Any], token_info: dict[str, Any]
) -> Response:
    """Move the caller's read marker forward (to the latest message without an id)."""
    state = await desk.mark_read(caller(token_info), id_, body.get("lastReadMessageId"))
    return envelope("Read state updated successfully", read_state(state))


async def get_unread(desk: SupportDesk, token_info: dict[str, Any]) -> Response:
    """The caller's badge over all their requests (304 while it is unchanged)."""
    shown = await desk.badge(caller(token_info))
    return conditional.badge(shown, badge(shown))
