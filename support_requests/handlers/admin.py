"""Admin operations (tag ``admin``): the support staff's queue."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from support_requests.domain.clock import iso_ms
from support_requests.handlers import conditional
from support_requests.handlers.auth import caller
from support_requests.handlers.idempotency import once
from support_requests.handlers.render import admin_detail, admin_summary, envelope
from support_requests.storage.idempotency import IdempotencyStore, Keeper
from support_requests.storage.support_desk import (
    QueueFilters,
    RequestRecord,
    SupportDesk,
)

_TEXT_FIELDS = ("resolutionNote",)


async def list_queue(
    desk: SupportDesk,
    token_info: dict[str, Any],
    limit: int,
    sort: str,
    cursor: str | None = None,
    status: str | None = None,
    category: str | None = None,
    assigned: bool | None = None,
    assignee_id: str | None = None,
    platform: str | None = None,
    app_version: str | None = None,
    tag: str | None = None,
    rated: bool | None = None,
    max_score: int | None = None,
) -> Response:
    """One page of the queue (304 while it is unchanged)."""
    admin = caller(token_info)
    filters = QueueFilters(
        status=status,
        category=category,
        assigned=assigned,
        assignee_id=assignee_id,
        platform=platform,
        app_version=app_version,
        tag=tag,
        rated=rated,
        max_score=max_score,
        sort=sort,
    )
    # The queue looks the same to every admin: the tag does not depend on the caller.
    query = {"limit": limit, "cursor": cursor, **vars(filters)}
    return await conditional.listing(
        conditional.View.ADMIN,
        query,
        lambda: desk.queue_page_versions(admin, filters, limit=limit, cursor=cursor),
        lambda: desk.list_queue(admin, filters, limit=limit, cursor=cursor),
        admin_summary,
    )


async def get_request(desk: SupportDesk, id_: int, token_info: dict[str, Any]) -> Response:
    """Any request with its thread, customer and assignee.

    A poll whose ``If-None-Match`` is current never gets here: ``conditional.Revalidation``
    answers it with a ``304``.
    """
    record = await desk.get_for_admin(caller(token_info), id_)
    return conditional.detail(conditional.View.ADMIN, record, admin_detail(record))


async def reply(
    desk: SupportDesk,
    idempotency: IdempotencyStore,
    id_: int,
    body: dict[str, Any],
    token_info: dict[str, Any],
) -> Response:
    """Append a staff reply, or an internal note the customer never sees (``internal``),
    once per Idempotency-Key."""
    admin = caller(token_info)
    add = desk.add_internal_note if body.get("internal") else desk.reply_as_admin

    async def act(keeper: Keeper | None) -> RequestRecord:
        return await add(
            admin,
            id_,
            body["body"].strip(),
            attachments=body.get("attachments", ()),
            before_commit=None if keeper is None else keeper.before_commit,
        )

    def render(record: RequestRecord) -> Response:
        return envelope("Reply added successfully", admin_detail(record), status=201)

    return await once(idempotency, admin, body, act, render)


async def update_request(
    desk: SupportDesk, id_: int, body: dict[str, Any], token_info: dict[str, Any]
) -> Response:
    """Change status, assignee or resolution note."""
    requested = {
        name: value.strip() if name in _TEXT_FIELDS else value for name, value in body.items()
    }
    record = await desk.update(caller(token_info), id_, requested)
    return envelope("Support request updated successfully", admin_detail(record))


async def list_admins(desk: SupportDesk, token_info: dict[str, Any]) -> Response:
    """The admins seen so far."""
    rows = await desk.list_admins(caller(token_info))
    return envelope(
        "Admins fetched successfully",
        [{"id": row.id, "name": row.name, "image": row.image} for row in rows],
    )


async def list_events(desk: SupportDesk, id_: int, token_info: dict[str, Any]) -> Response:
    """The request's history, oldest first."""
    rows = await desk.list_events(caller(token_info), id_)
    return envelope(
        "Support request events fetched successfully",
        [
            {
                "id": row.id,
                "type": row.type,
                "actor": {"type": row.actor_type, "id": row.actor_id},
                "at": iso_ms(row.at),
                "changes": row.changes,
            }
            for row in rows
        ],
    )
