"""Files on messages: ``--attach`` uploads, ``attachments get``, ``admin attachments remove``.

Upload first, then reference: each ``--attach FILE`` is opened before anything is
sent, streamed from disk as one multipart part ``file`` (with a progress bar on a
terminal for files over 1 MiB), and the ids the API returns go in the create or
reply's ``attachments``. A download streams to a file (or stdout) the same way.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import IO, Annotated, Any, BinaryIO
from urllib.parse import quote

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from support_requests.cli.client import ADMIN_ATTACHMENTS, MOBILE_ATTACHMENTS, ApiClient
from support_requests.cli.context import JsonOption, acts_as_admin, api, spec_schema
from support_requests.cli.render import (
    attachment_facts,
    fail,
    human_size,
    make_console,
    print_json_text,
)

PROGRESS_FROM_BYTES = 1024 * 1024

app = typer.Typer(
    help="Files on messages (as a customer or as staff, by the token).", no_args_is_help=True
)
admin_app = typer.Typer(help="Files on messages: remove one.", no_args_is_help=True)

AttachmentId = Annotated[
    str,
    typer.Argument(metavar="ID", help="The attachment's id (after -- when it starts with -)."),
]
AttachOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--attach",
        metavar="FILE",
        help="Attach FILE (a screenshot, a log); repeat for more.",
        show_default=False,
    ),
]


@dataclass(frozen=True)
class LocalFile:
    """A file to attach, opened for reading."""

    path: Path
    handle: BinaryIO
    size: int


# -- uploading -----------------------------------------------------------------


@contextmanager
def opened(paths: list[Path] | None) -> Iterator[list[LocalFile]]:
    """Every ``--attach`` file open for reading, or a message and exit 1 before any is sent."""
    paths = paths or []
    if paths:
        limit = int(spec_schema("AttachmentIds")["maxItems"])
        if len(paths) > limit:
            fail(f"{len(paths)} files given with --attach; a message takes at most {limit}.")
    with ExitStack() as stack:
        files = []
        for path in paths:
            try:
                handle = stack.enter_context(path.open("rb"))
                size = os.fstat(handle.fileno()).st_size
            except OSError as exc:
                fail(f"Cannot attach {path}: {exc.strerror or exc}.")
            files.append(LocalFile(path, handle, size))
        yield files


def upload_all(client: ApiClient, path: str, files: list[LocalFile]) -> list[str]:
    """Upload each file to ``path`` (the mobile or the admin side); their ids, in order."""
    return [_upload(client, path, file) for file in files]


def _upload(client: ApiClient, path: str, file: LocalFile) -> str:
    console = make_console(stderr=True)
    with ExitStack() as stack:
        source: IO[bytes] = file.handle
        if file.size > PROGRESS_FROM_BYTES and console.is_terminal:
            progress = stack.enter_context(_transfer_progress(console))
            source = progress.wrap_file(file.handle, total=file.size, description=file.path.name)
        reply = client.call("POST", path, files={"file": (file.path.name, source)})
    return str(reply.data["id"])


def _transfer_progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def with_attachments(body: dict[str, Any], ids: list[str]) -> dict[str, Any]:
    """The create or reply body, naming the uploads when there are any."""
    return {**body, "attachments": ids} if ids else body


# -- downloading ---------------------------------------------------------------


def safe_file_name(name: str | None) -> str:
    """A name to save under in the current directory: no path parts, control
    characters or leading dots (so never ``..`` or a hidden file); ``""`` if nothing is left."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(char for char in base if char.isprintable()).strip().lstrip(".")
    return base[:255]


def _disposition_name(header: str | None) -> str | None:
    if not header:
        return None
    parsed = Message()
    parsed["Content-Disposition"] = header
    return parsed.get_filename()


def _target(output: Path | None, header: str | None, attachment_id: str) -> Path:
    name = (
        safe_file_name(_disposition_name(header))
        or safe_file_name(f"attachment-{attachment_id}")
        or "attachment"
    )
    if output is None:
        return Path(name)
    return output / name if output.is_dir() else output


@app.command()
def get(
    ctx: typer.Context,
    attachment_id: AttachmentId,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="Save as FILE (or into a directory; '-': stdout). "
            "Default: the file's name, in the current directory.",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Download an attachment (from the staff side with an admin token)."""
    to_stdout = output is not None and str(output) == "-"
    with api(ctx, json_output=False) as client:
        base = ADMIN_ATTACHMENTS if acts_as_admin(client) else MOBILE_ATTACHMENTS
        with client.download(f"{base}/{quote(attachment_id, safe='')}") as response:
            if to_stdout:
                for chunk in response.iter_bytes():
                    sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
                return
            target = _target(output, response.headers.get("Content-Disposition"), attachment_id)
            if target.exists() and not force:
                fail(f"{target} exists; pass --force to overwrite it, or -o another file.")
            try:
                size = _save(response.iter_bytes(), target)
            except OSError as exc:
                fail(f"Cannot write {target}: {exc.strerror or exc}.")
    kind = response.headers.get("Content-Type", "").split(";")[0]
    facts = ", ".join(fact for fact in (kind, human_size(size)) if fact)
    make_console().print(Text(f"Saved {target} ({facts})."))


def _save(chunks: Iterator[bytes], target: Path) -> int:
    """Write beside ``target`` first, so a broken download never leaves half a file."""
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed or removed below)
        dir=target.parent.absolute(), prefix=f".{target.name}.", suffix=".part", delete=False
    )
    size = 0
    try:
        with handle:
            for chunk in chunks:
                handle.write(chunk)
                size += len(chunk)
        os.replace(handle.name, target)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return size


# -- staff ---------------------------------------------------------------------


@admin_app.command()
def remove(
    ctx: typer.Context, attachment_id: AttachmentId, json_output: JsonOption = False
) -> None:
    """Remove an attachment's bytes for good (its message keeps a 'removed' entry)."""
    with api(ctx, json_output=json_output) as client:
        reply = client.call("DELETE", f"{ADMIN_ATTACHMENTS}/{quote(attachment_id, safe='')}")
    if json_output:
        print_json_text(reply.text)
        return
    removed = reply.data
    make_console().print(
        Text(
            f"Removed {attachment_facts(removed)}, id {removed['id']}; "
            "its message now lists it as removed."
        )
    )
