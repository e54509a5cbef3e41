"""One attempt at one delivery: check where it goes, sign it, send it, say how it went.

Every attempt resolves the endpoint's host again and checks every address
(``addresses.resolve``), then connects to a checked address itself: the URL's host is
replaced by the IP literal, ``Host`` carries the name, and for https the TLS handshake
sends and verifies the name (httpcore's ``sni_hostname`` request extension, read by
``AsyncHTTPConnection._connect`` in httpcore 1.0). No second lookup happens, so a DNS
answer that changes between the check and the connection cannot steer it. Redirects
are not followed (a 3xx is a failed attempt), proxies from the environment are not used
(a proxy would resolve the name again), and the whole attempt is bounded by
``TIMEOUT_SECONDS``.

Connections are pooled per (scheme, host name, port): httpcore pools by the URL's origin,
here the IP, and would otherwise send one host's request over a TLS connection verified
for another name served from the same address.

Outcomes: ``Outcome.status`` is the response's status (None when there was none) and
``Outcome.error`` why the attempt failed, if it did; an ``UnsafeUrl`` (refused address,
http without the switch, a name that does not resolve) makes no connection at all.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

import httpx
from standardwebhooks import Webhook

from support_requests.domain.webhooks import TIMEOUT_SECONDS
from support_requests.webhooks import addresses
from support_requests.webhooks.addresses import Lookup, UnsafeUrl, system_lookup
from support_requests.webhooks.secrets import SecretBox, SecretUnavailable

# Enough of a response to reuse its connection; a larger body closes it instead.
MAX_RESPONSE_BYTES = 16 * 1024


def _user_agent() -> str:
    try:
        return f"support-requests-webhooks/{version('support-requests')}"
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "support-requests-webhooks"


USER_AGENT = _user_agent()


@dataclass(frozen=True)
class Outcome:
    """How an attempt went: the response's status (if any) and why it failed (if it did)."""

    status: int | None
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        """A 2xx answer."""
        return self.status is not None and 200 <= self.status < 300

    @property
    def gone(self) -> bool:
        """410: the receiver says the endpoint no longer exists."""
        return self.status == 410


@dataclass(frozen=True)
class Message:
    """What one attempt sends: the event's id and exact body, to ``url``, signed with the
    endpoint's stored (possibly sealed) secret."""

    webhook_id: str
    body: str
    url: str
    stored_secret: str


def signed_headers(secret: str, webhook_id: str, body: str, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers of ``body`` sent at ``at``, signed with ``secret``."""
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(webhook_id, at, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


class Sender:
    """Sends messages; one per worker, holding its connection pools. ``verify``: how TLS
    certificates are checked (httpx's default CA bundle; tests give their own CA)."""

    def __init__(
        self,
        *,
        secrets: SecretBox,
        allow_private: bool,
        allow_http: bool,
        lookup: Lookup = system_lookup,
        timeout: float = TIMEOUT_SECONDS,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self._secrets = secrets
        self._verify = verify
        self._allow_private = allow_private
        self._allow_http = allow_http
        self._lookup = lookup
        self._timeout = timeout
        self._clients: dict[tuple[str, str, int], httpx.AsyncClient] = {}

    async def send(self, message: Message) -> Outcome:
        """One attempt; never raises for what the receiver or the network does."""
        try:
            target = addresses.parse(message.url, allow_http=self._allow_http)
            checked = await addresses.resolve(
                target, allow_private=self._allow_private, lookup=self._lookup
            )
        except UnsafeUrl as refused:
            return Outcome(None, f"not sent: the URL {refused}")
        try:
            secret = self._secrets.open(message.stored_secret)
        except SecretUnavailable as unavailable:
            return Outcome(None, f"not sent: {unavailable}")
        headers = signed_headers(secret, message.webhook_id, message.body, datetime.now(UTC))
        try:
            async with asyncio.timeout(self._timeout):
                return await self._post(target, checked, headers, message.body)
        except TimeoutError:
            return Outcome(None, f"no answer within {self._timeout:g} s")

    async def _post(
        self,
        target: addresses.Target,
        checked: list[addresses.IPAddress],
        headers: dict[str, str],
        body: str,
    ) -> Outcome:
        url = httpx.URL(target.url)
        default_port = 443 if target.scheme == "https" else 80
        host = url.host if target.port == default_port else f"{url.host}:{target.port}"
        client = self._client(target)
        failure = "no address to connect to"
        for address in checked:
            request = client.build_request(
                "POST",
                url.copy_with(host=str(address)),
                content=body.encode(),
                headers={**headers, "host": host},
                extensions={"sni_hostname": url.host} if target.scheme == "https" else {},
            )
            try:
                response = await client.send(request, stream=True)
            except httpx.ConnectError as error:
                failure = f"could not connect to {address}: {error or type(error).__name__}"
                continue  # the next checked address, if any
            except httpx.TimeoutException:
                raise TimeoutError from None
            except httpx.HTTPError as error:
                return Outcome(None, f"{type(error).__name__}: {error}"[:500])
            try:
                await _read_some(response)
            except httpx.HTTPError:
                pass  # the status is what counts
            finally:
                await response.aclose()
            if response.is_redirect:
                location = response.headers.get("location", "")
                return Outcome(response.status_code, f"redirect to {location} not followed"[:500])
            if response.is_success:
                return Outcome(response.status_code)
            return Outcome(response.status_code, f"answered {response.status_code}")
        return Outcome(None, failure)

    def _client(self, target: addresses.Target) -> httpx.AsyncClient:
        key = (target.scheme, target.host, target.port)
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = httpx.AsyncClient(
                follow_redirects=False,
                trust_env=False,
                verify=self._verify,
                timeout=httpx.Timeout(self._timeout),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=8),
            )
        return client

    async def close(self) -> None:
        """Close every pooled connection."""
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()


async def _read_some(response: httpx.Response) -> None:
    read = 0
    async for chunk in response.aiter_raw():
        read += len(chunk)
        if read > MAX_RESPONSE_BYTES:
            break
