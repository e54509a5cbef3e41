"""Every reach into a third-party framework's internals, fenced here.

Each module names the upstream code it replaces or depends on (connexion 3.3.0,
Starlette 1.10), and is guarded by a test that compares it with the stock behaviour
(``tests/test_framework_*.py``), so a release that changes what a module replaces
fails a guard test; ``pyproject.toml`` keeps connexion below 4. Nothing outside this
package imports a framework's private names. ``docs/architecture.md`` lists the
pieces and what upstream would need for each to go.
"""
