"""Every reach into a third-party framework's internals, fenced here.

Each module names the upstream code it replaces or depends on, and is guarded by a
test that compares it with the stock behaviour (``tests/test_framework_*.py``); the
dependencies are bounded to the versions tested (``pyproject.toml``). Nothing outside
this package imports a framework's private names. ``docs/architecture.md`` lists the
pieces and what upstream would need for each to go.
"""
