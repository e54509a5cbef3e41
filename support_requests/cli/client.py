"""The one HTTP client of the API, and the one place its failures become messages.

Every failure prints one readable block on stderr and exits 1 (with ``--json``
an API problem document is also printed on stdout, exactly as received):

ApiClient.call, ApiClient.download
├── cannot connect     nothing listens at the API URL
├── timeout            no answer within ``--timeout`` seconds
├── transport error    the connection broke, or the other end does not speak HTTP
├── 401                the token expired or is invalid: how to get a new one
├── 4xx / 5xx          the problem's ``detail`` and every field error
└── not JSON           a success that is not the API's JSON (a wrong ``--api-url``?)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from typing import IO, Any, NoReturn

import httpx
import orjson

from support_requests.cli.render import fail, print_json_text

MOBILE = "/api/mobile/support-requests"
ADMIN = "/api/admin/support-requests"
ADMINS = "/api/admin/admins"
MOBILE_ATTACHMENTS = "/api/mobile/attachments"
MOBILE_UNREAD = "/api/mobile/unread"
ADMIN_ATTACHMENTS = "/api/admin/attachments"


def cli_version() -> str:
    """The installed distribution's version."""
    try:
        return metadata.version("support-requests")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class ApiReply:
    """A successful response: its text as received and the parsed envelope."""

    text: str
    body: dict[str, Any]

    @property
    def data(self) -> Any:
        return self.body["data"]

    @property
    def message(self) -> str:
        return str(self.body.get("message", ""))

    @property
    def next_cursor(self) -> str | None:
        cursor = self.body.get("meta", {}).get("nextCursor")
        return str(cursor) if cursor else None


class ApiClient(httpx.Client):
    """``httpx.Client`` with the API's base URL, a bearer token and a timeout."""

    def __init__(
        self,
        api_url: str,
        token: str,
        *,
        timeout: float,
        renew_hint: str,
        problems_to_stdout: bool = False,
    ) -> None:
        super().__init__(
            base_url=api_url,
            timeout=timeout,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                "User-Agent": f"supportctl/{cli_version()}",
            },
        )
        self.api_url = api_url
        self.token = token
        self._timeout_seconds = timeout
        self._renew_hint = renew_hint
        self._problems_to_stdout = problems_to_stdout

    def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        files: Mapping[str, tuple[str, IO[bytes]]] | None = None,
    ) -> ApiReply:
        """Send one request; return the parsed success, or print the failure and exit 1.

        ``files`` sends ``multipart/form-data``, each file streamed from its handle.
        """
        query = {name: value for name, value in (params or {}).items() if value is not None}
        with self._reaching():
            response = self.request(method, path, params=query, json=body, files=files)
        if response.is_success:
            return self._success(response)
        self._problem(response)

    @contextmanager
    def download(self, path: str) -> Iterator[httpx.Response]:
        """A successful ``GET`` whose body is still to be streamed; else the failure, exit 1."""
        with (
            self._reaching(),
            self.stream("GET", path, headers={"Accept": "*/*"}) as response,
        ):
            if not response.is_success:
                response.read()
                self._problem(response)
            yield response

    @contextmanager
    def _reaching(self) -> Iterator[None]:
        """Transport failures (while sending, or while a body streams in) as messages."""
        try:
            yield
        except httpx.TimeoutException:
            fail(
                f"{self.api_url} did not answer within {self._timeout_seconds:g} s.",
                "The server may be overloaded or stuck; try again, or allow more with --timeout.",
            )
        except httpx.ConnectError as exc:
            fail(
                f"Cannot connect to {self.api_url} ({_reason(exc)}).",
                "Is the server running? Start one with: supportctl serve",
                "or point at another with --api-url / SUPPORT_API_URL.",
            )
        except httpx.HTTPError as exc:
            fail(f"The connection to {self.api_url} failed: {_reason(exc)}.")

    def _success(self, response: httpx.Response) -> ApiReply:
        if response.status_code == 204:  # a removal: no body
            return ApiReply(text="", body={"message": "", "data": None})
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict) or "data" not in body:
            fail(
                f"{response.request.url} answered {response.status_code} "
                "with something that is not the support API's JSON.",
                "Check --api-url / SUPPORT_API_URL.",
            )
        return ApiReply(text=response.text, body=body)

    def _problem(self, response: httpx.Response) -> NoReturn:
        try:
            problem = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            problem = None
        if not isinstance(problem, dict) or "detail" not in problem:
            snippet = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
            fail(
                f"{response.request.url} answered {response.status_code} "
                f"{response.reason_phrase}" + (f": {snippet}" if snippet else "."),
            )
        if self._problems_to_stdout:
            print_json_text(response.text)
        status = response.status_code
        headline = f"{problem['detail']} ({status} {problem.get('code', response.reason_phrase)})"
        details = [
            f"- {error.get('field', '?')}: {error.get('message', '')}"
            for error in problem.get("errors") or []
            if isinstance(error, dict)
        ]
        if status == 401:
            fail(f"Token expired or invalid: {headline}", self._renew_hint)
        if status == 403:
            details.append(
                "Admin commands need an admin token (--as-admin NAME, or token mint --admin)."
                if "/api/admin/" in response.request.url.path
                else "Mobile commands need a customer token (--as NAME, or token mint)."
            )
        if status == 429 and response.headers.get("Retry-After"):
            details.append(f"Retry after {response.headers['Retry-After']} s.")
        if status >= 500 and problem.get("requestId"):
            details.append(f"Request id: {problem['requestId']} (quote it when reporting this).")
        fail(headline, *details)


def _reason(exc: httpx.HTTPError) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__


def fetch_pages(
    client: ApiClient, path: str, params: Mapping[str, Any], *, follow: bool
) -> list[ApiReply]:
    """One page of a listing, or every page from there on when ``follow``."""
    pages = [client.call("GET", path, params=params)]
    while follow and pages[-1].next_cursor is not None:
        pages.append(client.call("GET", path, params={**params, "cursor": pages[-1].next_cursor}))
    return pages


def joined_text(pages: list[ApiReply]) -> str:
    """The pages as the API's JSON: the one page as received, or their data in one envelope."""
    if len(pages) == 1:
        return pages[0].text
    document = {
        "message": pages[0].message,
        "data": [item for page in pages for item in page.data],
        "meta": {"nextCursor": pages[-1].next_cursor},
    }
    return orjson.dumps(document).decode()
