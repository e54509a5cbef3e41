"""requirements/lock.txt, what CI installs, matches pyproject.toml's bounds.

Refresh the lock after changing a bound (the command is also in the lock's header):
``uv pip compile pyproject.toml --extra test --generate-hashes --universal --python-version 3.11
-o requirements/lock.txt``.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "lock.txt"


def _declared() -> list[Requirement]:
    """The runtime dependencies and the ``test`` extra's: what the lock covers."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [
        Requirement(text)
        for text in project["dependencies"] + project["optional-dependencies"]["test"]
    ]


def _locked() -> dict[str, tuple[Requirement, list[str]]]:
    """Each locked requirement by canonical name, with its hashes."""
    logical_lines = re.sub(r"\\\n", " ", LOCK.read_text()).splitlines()
    entries = {}
    for line in logical_lines:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement, *hashes = line.split(" --hash=")
        parsed = Requirement(requirement)
        entries[canonicalize_name(parsed.name)] = (parsed, [h.strip() for h in hashes])
    return entries


def test_every_dependency_has_an_upper_bound():
    unbounded = [
        str(requirement)
        for requirement in _declared()
        if not any(spec.operator in ("<", "<=", "==", "~=") for spec in requirement.specifier)
    ]
    assert unbounded == []


def test_every_dependency_is_locked_at_a_version_inside_its_bounds():
    locked = _locked()
    for requirement in _declared():
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is not in {LOCK.name}: refresh the lock"
        (pin,) = locked[name][0].specifier
        assert requirement.specifier.contains(pin.version), (
            f"{name}=={pin.version} is outside {requirement.specifier}: refresh the lock"
        )


def test_every_locked_entry_is_pinned_with_hashes():
    for name, (requirement, hashes) in _locked().items():
        assert [spec.operator for spec in requirement.specifier] == ["=="], name
        assert hashes, f"{name} has no hash"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), name
