"""The service starts without printing a warning, even with every warning shown.

(With two workers, uvicorn's supervisor leaves its listening socket for the interpreter
to close when it exits, a ``ResourceWarning`` shown under ``-W default``: that is at
stop, not start, and uvicorn's.)

``PYTHONWARNINGS=default`` is ``-W default`` for the server and each worker it starts:
deprecation warnings from every module are shown, not only from ``__main__``. The
warnings connexion's own imports raise are silenced precisely
(``support_requests.framework.import_warnings``); anything else fails this test.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import httpx
import pytest

from support_requests.framework.import_warnings import ignore_connexion_import_warnings
from tests.helpers import SECRET
from tests.servers import clean_environment, supportctl_server


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_prints_no_warning(tmp_path: Path, workers: str) -> None:
    env = clean_environment(
        SUPPORT_DATA_DIR=str(tmp_path / "data"), SUPPORT_JWT_SECRET=SECRET, PYTHONWARNINGS="default"
    )
    with supportctl_server(env, tmp_path, "--workers", workers) as server:
        assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
        log = server.log()
    assert "Application startup complete" in log
    assert "Warning" not in log, log


def test_the_filters_leave_the_same_warning_from_elsewhere_shown() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        ignore_connexion_import_warnings()
        warnings.warn("jsonschema.RefResolver is deprecated", DeprecationWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["jsonschema.RefResolver is deprecated"]
