"""Connexion's multipart body validator, with the raw body kept on disk instead of in memory.

Replaces: ``connexion.validators.abstract.AbstractRequestBodyValidator.wrap_receive``
(connexion 3.3.0), as inherited by ``MultiPartFormDataValidator``. Upstream keeps every
``http.request`` message of the body in a list while it parses and validates, then replays
the list to the handler: a 10 MiB upload is a 10 MiB list per request, and sixteen at
once are 160 MiB. Here the messages' bytes go to a ``SpooledTemporaryFile`` (in memory
up to ``SPOOL_IN_MEMORY``, on disk past it) and are replayed from it in pieces, through
upstream's own ``_insert_messages``. The form is parsed with Starlette's
``MultiPartParser`` as upstream's ``FormDataValidator._parse`` does, and closed once
validated (upstream leaves its spooled files to the garbage collector); the contract's
errors (a body that is not multipart, schema violations) are the subclass's business
(``handlers.validation.ContractMultipartValidator``).

Guarded by ``tests/test_framework_multipart.py``: the same forms through stock
``MultiPartFormDataValidator`` and this one reach the handler byte for byte the same, and
the memory a 10 MiB body holds while it is validated stays under a megabyte here.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncGenerator, Iterator, MutableMapping
from typing import IO, Any

from connexion.validators import MultiPartFormDataValidator
from starlette.datastructures import FormData, Headers, UploadFile
from starlette.formparsers import MultiPartParser
from starlette.types import Receive, Scope

SPOOL_IN_MEMORY = 256 * 1024
REPLAY_PIECE = 64 * 1024


class SpooledMultipartValidator(MultiPartFormDataValidator):  # type: ignore[misc]
    """``multipart/form-data`` validated from the stream, replayed from a spool file."""

    async def wrap_receive(self, receive: Receive, *, scope: Scope) -> tuple[Receive, Scope]:
        """Parse and validate the body as it arrives, keeping its bytes in a spool file."""
        if not int(Headers(scope=scope).get("content-length", 0)):
            result: tuple[Receive, Scope] = await super().wrap_receive(receive, scope=scope)
            return result
        spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115

        async def stream() -> AsyncGenerator[bytes, None]:
            more_body = True
            while more_body:
                message = await receive()
                chunk = message.get("body", b"")
                spool.write(chunk)
                more_body = message.get("more_body", False)
                yield chunk
            yield b""

        try:
            form = await MultiPartParser(Headers(scope=scope), stream()).parse()
            try:
                body = _as_validated(form)
            finally:
                await form.close()
            self._validate(body)
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        return self._insert_messages(receive, messages=_replay(spool)), scope


def _as_validated(form: FormData) -> dict[str, Any]:
    """The form as upstream's ``FormDataValidator._parse`` hands it to validation: a file is
    an empty string (a list of them when repeated), other parts their text (a list when
    repeated). Parsed here, not by ``_parse``, so that the parsed files are closed."""
    data: dict[str, Any] = {}
    for key in form:
        values = [("" if isinstance(v, UploadFile) else v) for v in form.getlist(key)]
        data[key] = values[0] if len(values) == 1 else values
    return data


def _replay(spool: IO[bytes]) -> Iterator[MutableMapping[str, Any]]:
    """The spooled body as ``http.request`` messages, a piece at a time; closed at the end."""
    try:
        piece = spool.read(REPLAY_PIECE)
        while True:
            following = spool.read(REPLAY_PIECE)
            yield {"type": "http.request", "body": piece, "more_body": bool(following)}
            if not following:
                return
            piece = following
    finally:
        spool.close()
