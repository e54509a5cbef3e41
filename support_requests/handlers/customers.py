"""Customers' data (tag ``admin``): erase a customer's personal data on their request."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from support_requests.handlers.auth import caller
from support_requests.handlers.render import envelope
from support_requests.storage.customers import CustomerData


async def erase_customer(customers: CustomerData, sub: str, token_info: dict[str, Any]) -> Response:
    """Erase the customer ``sub``'s personal data; ``data`` counts what was erased."""
    erasure = await customers.erase(caller(token_info), sub)
    return envelope("Customer erased successfully", erasure.document())
