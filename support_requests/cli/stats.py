"""``supportctl admin stats``: the desk's statistics as a picture (bars, not only numbers)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from support_requests.cli.context import JsonOption, api
from support_requests.cli.render import (
    NOTHING,
    STATUS_STYLES,
    local_time,
    make_console,
    print_json_text,
    status_text,
)

STATS = "/api/admin/stats"
BAR_WIDTH = 30
BAR = "█"
SCORE_STYLES = {1: "red", 2: "red", 3: "yellow", 4: "green", 5: "bold green"}

# -- fetching ------------------------------------------------------------------


def _instant(value: str | None, option: str) -> str | None:
    """``--from``/``--to`` as the API takes it: a UTC Timestamp."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a date (2026-11-01) or a date-time (2026-11-01T09:30)",
            param_hint=f"'{option}'",
        ) from None
    try:
        in_utc = moment.astimezone(UTC)  # a naive moment is this machine's local time
    except (OverflowError, ValueError):
        raise typer.BadParameter(f"{value!r} is out of range", param_hint=f"'{option}'") from None
    return in_utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{in_utc.microsecond // 1000:03d}Z"


# -- rendering -----------------------------------------------------------------


def duration(seconds: float | None) -> str:
    """Seconds as people say them: ``850 ms``, ``43 s``, ``5 min 3 s``, ``2 h 5 min``,
    ``3 d 4 h``; ``-`` when there is nothing measured."""
    if seconds is None:
        return NOTHING
    if seconds < 1:
        return f"{round(seconds * 1000)} ms"
    if seconds < 10:
        return f"{seconds:.1f} s".replace(".0 s", " s")
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    units = [(days, "d"), (hours, "h"), (minutes, "min"), (secs, "s")]
    first = next(index for index, (amount, _) in enumerate(units) if amount)
    shown = [f"{amount} {unit}" for amount, unit in units[first : first + 2] if amount]
    return " ".join(shown)


def bar(count: int, most: int, style: str) -> Text:
    """``count`` as a bar scaled to ``most``; any count above zero shows at least one cell."""
    cells = 0 if most == 0 else max(1 if count else 0, round(count * BAR_WIDTH / most))
    return Text(BAR * cells, style=style)


def _bars(rows: list[tuple[Text, int, str]], title: str) -> RenderableType:
    most = max((count for _, count, _ in rows), default=0)
    table = Table.grid(padding=(0, 1))
    table.add_column(no_wrap=True)
    table.add_column(justify="right", no_wrap=True)
    table.add_column(no_wrap=True)
    for label, count, style in rows:
        table.add_row(label, str(count), bar(count, most, style))
    return Group(Text(title, style="bold"), table)


def _window(data: Mapping[str, Any]) -> Text:
    return Text.assemble(
        ("Window ", "bold"),
        f"{local_time(data['from'])} to {local_time(data['to'])}",
        (" (to excluded)", "dim"),
    )


def _activity(data: Mapping[str, Any]) -> RenderableType:
    grid = Table.grid(padding=(0, 3))
    for _ in range(3):
        grid.add_column(no_wrap=True)
    grid.add_row(
        *(
            Text.assemble((f"{data[name]}", "bold"), f" {name}")
            for name in ("opened", "resolved", "closed")
        )
    )
    return grid


def _times(data: Mapping[str, Any]) -> RenderableType:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left")
    table.add_column("Time to", style="bold", no_wrap=True)
    table.add_column("median", justify="right", no_wrap=True)
    table.add_column("p90", justify="right", no_wrap=True)
    for label, key in (
        ("first staff response", "firstResponseSeconds"),
        ("resolution", "resolutionSeconds"),
    ):
        times = data[key]
        table.add_row(label, duration(times["median"]), duration(times["p90"]))
    return table


def _ratings(ratings: Mapping[str, Any]) -> RenderableType:
    count = ratings["count"]
    average = ratings["average"]
    title = (
        f"Ratings: {count}, average {average:.2f} of 5"
        if average is not None
        else "Ratings: none in this window"
    )
    rows = [
        (Text(f"{score} ★"), ratings["distribution"][str(score)], SCORE_STYLES[score])
        for score in range(5, 0, -1)
    ]
    return _bars(rows, title)


def _backlog(backlog: Mapping[str, int]) -> RenderableType:
    rows = [
        (status_text(status), backlog[status], STATUS_STYLES[status])
        for status in ("open", "in_progress", "resolved")
    ]
    return _bars(rows, "Backlog now")


def stats_picture(data: Mapping[str, Any]) -> RenderableType:
    """The statistics as one panel: the window, its activity, times, ratings and backlog."""
    parts: list[RenderableType] = [
        _window(data),
        _activity(data),
        _times(data),
        _ratings(data["ratings"]),
        Text(""),
        _backlog(data["backlog"]),
    ]
    return Panel(
        Group(*parts),
        title=Text("Support statistics", style="bold"),
        title_align="left",
        expand=False,
    )


# -- the command ---------------------------------------------------------------


def stats(
    ctx: typer.Context,
    from_: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="DATE",
            help="Start of the window, included (default: 30 days before --to). A date "
            "(2026-11-01) or date-time (2026-11-01T09:30, …Z); without an offset, local time.",
        ),
    ] = None,
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            metavar="DATE",
            help="End of the window, excluded (default: now, or 30 days after --from).",
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Statistics: opened, resolved, closed, response times, ratings and the backlog."""
    params = {"from": _instant(from_, "--from"), "to": _instant(to, "--to")}
    with api(ctx, json_output=json_output) as client:
        reply = client.call("GET", STATS, params=params)
    if json_output:
        print_json_text(reply.text)
        return
    make_console().print(stats_picture(reply.data))
