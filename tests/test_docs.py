"""The documentation holds together: links resolve, the configuration table matches the code.

- Every relative link in ``README.md``, ``docs/*.md`` and ``bench/README.md`` names a file or
  folder that exists, and a ``#anchor`` into a Markdown file names one of its headings
  (GitHub's slugs).
- The ``SUPPORT_*`` variables the code under ``support_requests/`` reads are exactly the
  names in the first column of the configuration table in ``docs/operations.md``, each once.
  A name counts as read when a string literal in the code is that name and nothing else
  (``env.get("SUPPORT_DATA_DIR")``, ``envvar="SUPPORT_TOKEN"``); names inside messages and
  docstrings do not count. Variables only tests, benchmarks or CI read are not scanned: they
  belong in ``docs/testing.md``.
- ``README.md`` is a door, at most 150 lines.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "bench" / "README.md",
]
OPERATIONS = ROOT / "docs" / "operations.md"
PACKAGE = ROOT / "support_requests"
README_MAX_LINES = 150

# Pages written on other branches: a link to one that is missing says so instead of
# failing as a mere typo. No placeholder is committed for them.
WRITTEN_ELSEWHERE = {
    "docs/architecture.md": (
        "docs/architecture.md (request flow, middleware stack, framework overrides) is "
        "written on another branch; this clears when that branch is merged"
    ),
}

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(<[^>]*>|[^\s)]+)(?:\s+\"[^\"]*\")?\s*\)"
)
_REFERENCE_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_VARIABLE = re.compile(r"^SUPPORT_[A-Z0-9_]+$")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    lines = []
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: markup gone, lower case, punctuation dropped."""
    text = _CODE_SPAN.sub(lambda m: m.group(2), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor; repeated headings get ``-1``, ``-2``, … as on GitHub."""
    seen: dict[str, int] = {}
    result = set()
    for _, line in prose_lines(text):
        match = _HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every inline link and reference definition, code aside."""
    found = []
    for number, line in prose_lines(text):
        definition = _REFERENCE_DEFINITION.match(line)
        if definition:
            found.append((number, definition.group(1).strip("<>")))
            continue
        for match in _INLINE_LINK.finditer(_CODE_SPAN.sub("", line)):
            found.append((number, match.group(1).strip("<>")))
    return found


def broken_links(document: Path, root: Path = ROOT) -> list[str]:
    """One message per relative link in ``document`` (under ``root``) that does not resolve."""
    text = document.read_text(encoding="utf-8")
    name = document.relative_to(root).as_posix()
    problems = []
    for number, target in links(text):
        if _SCHEME.match(target) or target.startswith("//"):
            continue  # absolute URL: not ours to check
        path_part, _, fragment = target.partition("#")
        resolved = (document.parent / unquote(path_part)).resolve() if path_part else document
        where = f"{name}:{number}: ({target})"
        if not resolved.exists():
            try:
                relative = resolved.relative_to(root).as_posix()
            except ValueError:
                relative = str(resolved)
            reason = WRITTEN_ELSEWHERE.get(relative, f"{relative} does not exist")
            problems.append(f"{where} {reason}")
            continue
        if fragment and resolved.suffix == ".md":
            available = anchors(resolved.read_text(encoding="utf-8"))
            if unquote(fragment) not in available:
                problems.append(
                    f"{where} no heading in {resolved.relative_to(root).as_posix()} has the "
                    f"anchor #{fragment}; it has: {', '.join(sorted(available))}"
                )
    return problems


def variables_read_by_code() -> dict[str, list[str]]:
    """Each ``SUPPORT_*`` name a string literal under support_requests/ is, and where."""
    found: dict[str, list[str]] = {}
    for source in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and _VARIABLE.match(node.value)
            ):
                where = f"{source.relative_to(ROOT).as_posix()}:{node.lineno}"
                found.setdefault(node.value, []).append(where)
    return found


def configuration_table(text: str) -> list[str]:
    """The first column's ``SUPPORT_*`` names, in order, of the table under "Configuration"."""
    lines = [line for _, line in prose_lines(text)]
    start = next(
        (
            index
            for index, line in enumerate(lines)
            if (match := _HEADING.match(line)) and match.group(2).strip() == "Configuration"
        ),
        None,
    )
    assert start is not None, "docs/operations.md has no heading 'Configuration'"
    table = []
    for line in lines[start + 1 :]:
        if _HEADING.match(line):
            break
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
    assert len(table) > 2, "no table under the 'Configuration' heading of docs/operations.md"
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    assert header[0] == "variable", f"the configuration table's first column is {header[0]!r}"
    names = []
    for row in table[2:]:
        first_cell = row.strip().strip("|").split("|")[0]
        names.extend(re.findall(r"SUPPORT_[A-Z0-9_]+", first_cell))
    return names


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(document: Path) -> None:
    assert document.exists(), f"{document.relative_to(ROOT)} is missing"

    problems = broken_links(document)

    assert not problems, "broken links:\n" + "\n".join(problems)


def test_the_configuration_table_lists_every_variable_the_code_reads_once() -> None:
    read = variables_read_by_code()
    documented = configuration_table(OPERATIONS.read_text(encoding="utf-8"))

    assert read, "found no SUPPORT_* name in support_requests/: the scanner is broken"
    repeated = sorted({name for name in documented if documented.count(name) > 1})
    assert not repeated, f"listed more than once in docs/operations.md: {repeated}"
    undocumented = sorted(set(read) - set(documented))
    assert not undocumented, "read by the code but missing from docs/operations.md's table:\n" + (
        "\n".join(f"{name} (read at {', '.join(read[name])})" for name in undocumented)
    )
    unread = sorted(set(documented) - set(read))
    assert not unread, (
        f"in docs/operations.md's table but read by no code under support_requests/: {unread} "
        "(variables only tests or CI read belong in docs/testing.md)"
    )


def test_the_readme_is_a_door_of_at_most_150_lines() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()

    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move detail to docs/"
    )


# -- the checkers themselves catch what they are for ------------------------------------------


def test_github_slugs_drop_markup_and_punctuation() -> None:
    assert github_slug("Safe retries: `Idempotency-Key`") == "safe-retries-idempotency-key"
    assert github_slug("Who you are: tokens, profiles, servers") == (
        "who-you-are-tokens-profiles-servers"
    )
    assert github_slug("3. Configure") == "3-configure"


def test_a_broken_link_or_anchor_is_reported(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "there.md").write_text("# There\n\n## A heading\n", encoding="utf-8")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "[ok](there.md#a-heading) [gone](missing.md) [bad anchor](there.md#nowhere)\n"
        "[arch](architecture.md) `[in code](nowhere.md)` [web](https://example.com/x.md)\n"
        "```\n[fenced](nowhere.md)\n```\n",
        encoding="utf-8",
    )

    problems = broken_links(page, root=tmp_path)

    assert len(problems) == 3, problems
    assert "docs/missing.md does not exist" in problems[0]
    assert "#nowhere" in problems[1]
    assert "written on another branch" in problems[2]


def test_only_whole_literals_count_as_reading_a_variable() -> None:
    read = variables_read_by_code()

    assert "SUPPORT_DATABASE_URL" in read
    assert not any(name.endswith("_") for name in read)


def test_no_file_keeps_a_merge_conflict_marker() -> None:
    """A conflict left in Markdown still renders and passes every other check."""
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    markers = re.compile(r"^(<{7} |>{7} |={7}$)", re.MULTILINE)
    left = [
        name
        for name in tracked
        if name.endswith((".md", ".py", ".yaml", ".toml", ".json", ".lua"))
        and (ROOT / name).is_file()
        and markers.search((ROOT / name).read_text(errors="replace"))
    ]
    assert left == []
