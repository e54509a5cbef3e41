"""Push devices (tag ``mobile``): the signed-in customer registers, lists and removes the
push tokens of their phones. Tokens are shown to their customer only."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from support_requests.handlers.auth import caller
from support_requests.handlers.render import envelope
from support_requests.storage.devices import DeviceRegistry, shown

PATH = "/api/mobile/devices"


async def register_device(
    devices: DeviceRegistry, body: dict[str, Any], token_info: dict[str, Any]
) -> Response:
    """Register a push token for the caller (201), or move a known one to them (200)."""
    registered = await devices.register(
        caller(token_info), platform=body["platform"], token=body["token"], app_id=body.get("appId")
    )
    device = shown(registered.device)
    if registered.created:
        return envelope(
            "Device registered successfully",
            device,
            status=201,
            headers={"Location": f"{PATH}/{device['id']}"},
        )
    return envelope("Device registration updated successfully", device)


async def list_devices(devices: DeviceRegistry, token_info: dict[str, Any]) -> Response:
    """The caller's devices, the most recently registered first."""
    rows = await devices.list_for(caller(token_info))
    return envelope("Devices fetched successfully", [shown(row) for row in rows])


async def remove_device(
    devices: DeviceRegistry, device_id: str, token_info: dict[str, Any]
) -> Response:
    """Remove one of the caller's devices."""
    await devices.remove(caller(token_info), device_id)
    return Response(status_code=204)
