"""Saved connections: named profiles (API URL and token) in one JSON file, mode 0600.

The file is ``$SUPPORT_CONFIG_FILE`` when set, otherwise ``config.json`` in the
platform's config directory for ``supportctl`` (``~/.config/supportctl`` on Linux).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

CONFIG_FILE_ENV = "SUPPORT_CONFIG_FILE"
DEFAULT_PROFILE = "default"


class ProfileFileError(Exception):
    """The profile file cannot be read or written; the message says why."""


@dataclass(frozen=True)
class Profile:
    """Where the API is and the token to call it with."""

    api_url: str
    token: str


def config_path() -> Path:
    """The profile file's location."""
    configured = os.environ.get(CONFIG_FILE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path(typer.get_app_dir("supportctl")) / "config.json"


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"profiles": {}}
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ProfileFileError(f"Cannot read the profile file {path}: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("profiles"), dict):
        raise ProfileFileError(f"The profile file {path} is not a supportctl profile file")
    return document


def load_profile(name: str, path: Path | None = None) -> Profile | None:
    """The profile called ``name``, or None when there is none."""
    entry = _read(path or config_path())["profiles"].get(name)
    if not isinstance(entry, dict):
        return None
    api_url, token = entry.get("apiUrl"), entry.get("token")
    if not isinstance(api_url, str) or not isinstance(token, str):
        return None
    return Profile(api_url=api_url, token=token)


def save_profile(name: str, profile: Profile, path: Path | None = None) -> Path:
    """Store ``profile`` as ``name``; the file is written whole, readable by its owner only."""
    target = path or config_path()
    document = _read(target)
    document["profiles"][name] = {"apiUrl": profile.api_url, "token": profile.token}
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkstemp creates the file with mode 0600; the rename keeps it.
        fd, temporary = tempfile.mkstemp(prefix=".config-", dir=target.parent)
        with os.fdopen(fd, "w") as handle:
            json.dump(document, handle, indent=2)
            handle.write("\n")
        os.chmod(temporary, 0o600)
        os.replace(temporary, target)
    except OSError as exc:
        raise ProfileFileError(f"Cannot write the profile file {target}: {exc}") from None
    return target
