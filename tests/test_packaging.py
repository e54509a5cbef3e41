"""The installed distribution: one import name, and it serves from a wheel outside the checkout.

The wheel is built from this checkout and installed into a fresh virtualenv in a temporary
folder. Its dependencies come from the test environment (a ``.pth`` line: no network), the
package itself only from the wheel; everything runs with the temporary folder as the working
directory, so nothing can be imported from the checkout by accident.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.helpers import SECRET, run_ok
from tests.servers import PROJECT_ROOT, supportctl_server

pytestmark = pytest.mark.slow

BARE_NAMES = ("handlers", "storage", "domain", "cli", "openapi")


def _run(*command: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    return run_ok(*command, cwd=cwd, env=env).stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    _run(
        sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, PROJECT_ROOT, cwd=dist
    )
    (built,) = dist.glob("support_requests-*.whl")
    return built


def test_the_wheel_installs_one_import_name(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert {name.split("/", 1)[0] for name in names} == {
        "support_requests",
        next(n.split("/", 1)[0] for n in names if ".dist-info/" in n),
    }
    assert "support_requests/openapi/support-requests.yaml" in names
    assert "support_requests/storage/migrations/script.py.mako" in names


def test_the_installed_wheel_migrates_serves_and_answers_outside_the_checkout(
    wheel: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    bin_ = venv / "bin"
    _run(bin_ / "pip", "install", "-q", "--no-deps", "--no-index", wheel, cwd=tmp_path)
    purelib = _run(
        bin_ / "python",
        "-c",
        "import sysconfig; print(sysconfig.get_path('purelib'))",
        cwd=tmp_path,
    ).strip()
    Path(purelib, "test-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")

    probe = _run(
        bin_ / "python",
        "-c",
        "import importlib.util, support_requests; print(support_requests.__file__); "
        f"print([n for n in {BARE_NAMES!r} if importlib.util.find_spec(n)])",
        cwd=tmp_path,
    ).splitlines()
    assert Path(probe[0]).is_relative_to(venv), probe
    assert probe[1] == "[]", "bare top-level packages are importable"

    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORT_")}
    env.update(
        SUPPORT_DATA_DIR=str(tmp_path / "data"),
        SUPPORT_JWT_SECRET=SECRET,
        PYTHONUNBUFFERED="1",
        PYTHONWARNINGS="default",
    )
    upgraded = _run(bin_ / "supportctl", "db", "upgrade", cwd=tmp_path, env=env)
    assert "is at revision" in upgraded

    with supportctl_server(env, tmp_path, supportctl=bin_ / "supportctl") as server:
        token = _run(
            bin_ / "supportctl",
            "token",
            "mint",
            "--sub",
            "alice",
            "--name",
            "Alex",
            cwd=tmp_path,
            env=env,
        ).strip()
        headers = {"Authorization": f"Bearer {token}"}
        body = {"category": "account", "subject": "Unable to log in", "message": "Help."}
        url = f"{server.url}/api/mobile/support-requests"
        created = httpx.post(url, json=body, headers=headers)
        assert created.status_code == 201, created.text
        detail = httpx.get(server.url + created.headers["Location"], headers=headers)
        assert detail.status_code == 200
        assert detail.json()["data"]["subject"] == "Unable to log in"
        assert [m["body"] for m in detail.json()["data"]["messages"]] == ["Help."]
        assert httpx.get(f"{server.url}/readyz").status_code == 200
        log = server.log()
    assert "Warning" not in log, log
    assert (tmp_path / "data" / "support.db").exists()


def test_bare_sub_package_imports_are_refused_by_the_linter(tmp_path: Path) -> None:
    offender = tmp_path / "offender.py"
    offender.write_text("import handlers.app\nfrom storage import schema\n")
    result = subprocess.run(
        [
            Path(sys.executable).with_name("ruff"),
            "check",
            "--no-cache",
            "--config",
            PROJECT_ROOT / "pyproject.toml",
            "--select",
            "TID251",
            offender,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout.count("TID251") == 2, result.stdout
