"""Guard of ``framework.connexion_multipart``: the spooled multipart validator against stock.

The same multipart bodies go through Connexion's ``MultiPartFormDataValidator`` and through
``SpooledMultipartValidator``: the messages replayed to the handler carry the same bytes,
invalid bodies are refused by both, and a 10 MiB body costs stock its size in memory while
the spooled one stays under a few MiB.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import tracemalloc
import warnings
from collections.abc import MutableMapping
from typing import Any

import pytest
from connexion.exceptions import BadRequestProblem
from connexion.uri_parsing import OpenAPIURIParser
from connexion.validators import MultiPartFormDataValidator

from support_requests.framework.connexion_multipart import SpooledMultipartValidator

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["file"],
    "properties": {"file": {"type": "string", "format": "binary"}},
}
BOUNDARY = "guard-boundary-7f3a"


def _multipart(parts: list[tuple[str, str | None, bytes]]) -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += (
            (
                f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    return out + f"--{BOUNDARY}--\r\n".encode()


def _scope(body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": "/upload",
        "headers": [
            (b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode()),
            (b"content-length", str(len(body)).encode()),
        ],
    }


def _validator(cls: type) -> Any:
    return cls(
        schema=SCHEMA,
        required=True,
        nullable=False,
        encoding="utf-8",
        strict_validation=True,
        uri_parser=OpenAPIURIParser([], {}),
    )


def through(cls: type, body: bytes) -> str:
    """``_through``, with stock's spooled parts left to the collector (the leak ours fixes)
    collected here, where their ``ResourceWarning`` is expected."""
    if cls is SpooledMultipartValidator:
        return asyncio.run(_through(cls, body))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            return asyncio.run(_through(cls, body))
        finally:
            gc.collect()


async def _through(cls: type, body: bytes, piece: int = 64 * 1024) -> str:
    """``body`` sent in pieces through the validator; the digest of what the handler's side
    reads back (hashed as it comes, so the test itself keeps no copy of a large body)."""
    count = max(1, -(-len(body) // piece))
    messages = (
        {
            "type": "http.request",
            "body": body[i * piece : (i + 1) * piece],
            "more_body": i < count - 1,
        }
        for i in range(count)
    )

    async def receive() -> MutableMapping[str, Any]:
        return next(messages)

    replay, _scope_out = await _validator(cls).wrap_receive(receive, scope=_scope(body))
    received = hashlib.sha256()
    more_body = True
    while more_body:
        message = await replay()
        received.update(message.get("body", b""))
        more_body = message.get("more_body", False)
    return received.hexdigest()


@pytest.mark.parametrize("size", [0, 1, 70_000, 1_500_000])
def test_the_handler_reads_the_same_bytes_as_through_stock(size: int) -> None:
    body = _multipart([("file", "shot.png", os.urandom(size))])
    stock = through(MultiPartFormDataValidator, body)
    ours = through(SpooledMultipartValidator, body)
    assert stock == ours == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize(
    "parts",
    [
        [("other", "x.txt", b"x")],  # the required part is missing
        [("file", "a.txt", b"a"), ("extra", None, b"b")],  # a part the schema does not have
    ],
)
def test_a_body_stock_refuses_is_refused_too(parts: list[tuple[str, str | None, bytes]]) -> None:
    body = _multipart(parts)
    for cls in (MultiPartFormDataValidator, SpooledMultipartValidator):
        with pytest.raises(BadRequestProblem):
            through(cls, body)


def _peak_mib(cls: type, body: bytes) -> float:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        through(cls, body)
        return tracemalloc.get_traced_memory()[1] / (1024 * 1024)
    finally:
        tracemalloc.stop()


def test_a_ten_mib_body_is_not_held_in_memory_while_it_is_validated() -> None:
    body = _multipart([("file", "log.txt", os.urandom(10 * 1024 * 1024))])
    stock, ours = (
        _peak_mib(MultiPartFormDataValidator, body),
        _peak_mib(SpooledMultipartValidator, body),
    )
    # ``body`` itself is allocated before tracing starts; stock keeps the messages (its size)
    assert stock > 10
    assert ours < 3, f"{ours:.1f} MiB"
