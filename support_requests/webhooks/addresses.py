"""Where a webhook may go: the URL's rules, and every address its host resolves to.

Server-side request forgery is refused twice: at registration (422) and at each
delivery, where the host is resolved again, every address is checked, and the
connection is made to a checked address (``resolve``'s answer), never through a
second lookup that an attacker's DNS could answer differently.

Refused unless ``SUPPORT_WEBHOOK_ALLOW_PRIVATE=1``: any address that is not globally
routable (loopback, RFC 1918 and unique-local, link-local including the cloud metadata
address 169.254.169.254, CGNAT 100.64.0.0/10, unspecified, reserved, documentation),
multicast, and IPv6 forms that carry such an IPv4 address (IPv4-mapped, NAT64
64:ff9b::/96, 6to4, Teredo). Plain ``http`` is refused unless
``SUPPORT_WEBHOOK_ALLOW_HTTP=1``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port -> the addresses it resolves to (as strings); raises OSError when it does not.
Lookup = Callable[[str, int], Awaitable[list[str]]]
LOOKUP_TIMEOUT_SECONDS = 3.0
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UnsafeUrl(ValueError):
    """A webhook URL the service will not call; the message says why."""


@dataclass(frozen=True)
class Target:
    """A URL's parts as the delivery uses them."""

    url: str
    scheme: str
    host: str
    port: int


def parse(url: str, *, allow_http: bool) -> Target:
    """``url``'s scheme, host and port, or ``UnsafeUrl``."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise UnsafeUrl(f"not a valid URL: {error}") from None
    if parts.scheme not in ("https", "http"):
        raise UnsafeUrl("must be an https URL")
    if parts.scheme == "http" and not allow_http:
        raise UnsafeUrl(
            "must be https (plain http is allowed only with SUPPORT_WEBHOOK_ALLOW_HTTP=1)"
        )
    if not parts.hostname:
        raise UnsafeUrl("has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("must not carry a user name or password")
    if parts.fragment:
        raise UnsafeUrl("must not have a fragment")
    default = 443 if parts.scheme == "https" else 80
    return Target(url, parts.scheme, parts.hostname, port or default)


def refusal(address: IPAddress) -> str | None:
    """Why ``address`` is not a place to deliver to, or None."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        reason = refusal(embedded)
        return None if reason is None else f"{reason} (inside {address})"
    if address.is_loopback:
        return f"{address} is a loopback address"
    if address.is_link_local:
        return f"{address} is a link-local address (cloud metadata lives there)"
    if address.is_multicast:
        return f"{address} is a multicast address"
    if address.is_unspecified:
        return f"{address} is unspecified"
    if address.is_private:
        return f"{address} is a private address"
    if not address.is_global:
        return f"{address} is not a public address"
    return None


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


async def system_lookup(host: str, port: int) -> list[str]:
    """The system resolver's addresses for ``host`` (``getaddrinfo``, as a connection would)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


async def resolve(
    target: Target, *, allow_private: bool, lookup: Lookup = system_lookup
) -> list[IPAddress]:
    """Every address ``target``'s host resolves to, all of them checked; ``UnsafeUrl``
    if any is refused (a host with one private address among public ones is refused:
    the connection could be steered to it) or if the host does not resolve."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(target.host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT_SECONDS):
                found = await lookup(target.host, target.port)
        except (OSError, UnicodeError) as error:
            raise UnsafeUrl(f"host {target.host} does not resolve ({error})") from None
        except TimeoutError:
            raise UnsafeUrl(f"host {target.host} did not resolve in time") from None
        addresses = []
        for text in found:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise UnsafeUrl(f"host {target.host} does not resolve")
    if not allow_private:
        for address in addresses:
            reason = refusal(address)
            if reason is not None:
                raise UnsafeUrl(f"host {target.host} resolves to a refused address: {reason}")
    return addresses
