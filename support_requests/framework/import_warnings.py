"""The warnings connexion 3.3.0 raises while it is imported, and only those, silenced.

None of them has a cause in this project, and none can be removed from here:

- ``connexion/apps/abstract.py`` imports ``starlette.testclient`` (for ``AsyncApp.
  test_client``), and Starlette 1.10 warns (``StarletteDeprecationWarning``) whenever
  that module is imported with ``httpx`` rather than ``httpx2`` installed. ``httpx`` is
  a dependency of ``supportctl``'s HTTP client; the service never uses the test client.
- ``connexion/json_schema.py`` imports ``jsonschema.RefResolver`` and
  ``RefResolutionError``, deprecated since jsonschema 4.18 (``DeprecationWarning``).

Each filter names the message and the connexion module the warning is attributed
to, so the same warning raised from anywhere else still shows. ``handlers`` installs
them before anything imports connexion; ``tests/test_framework_warnings.py`` starts
the service with ``-W default`` and checks that nothing is printed.
"""

from __future__ import annotations

import warnings

_FROM_CONNEXION_IMPORTS = (
    (r"Using `httpx` with `starlette\.testclient` is deprecated", UserWarning, "apps.abstract"),
    (r"jsonschema\.RefResolver is deprecated", DeprecationWarning, "json_schema"),
    (
        r"jsonschema\.exceptions\.RefResolutionError is deprecated",
        DeprecationWarning,
        "json_schema",
    ),
)


def ignore_connexion_import_warnings() -> None:
    """Install the filters for the warnings connexion's own imports raise."""
    for message, category, module in _FROM_CONNEXION_IMPORTS:
        warnings.filterwarnings(
            "ignore", message=message, category=category, module=rf"connexion\.{module}\Z"
        )
