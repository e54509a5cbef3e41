"""support-requests: a contract-first support-ticket API for mobile apps, and ``supportctl``.

Sub-packages: ``openapi`` (the contract), ``handlers`` (HTTP), ``domain`` (rules, no
framework), ``storage`` (SQLAlchemy), ``cli`` (``supportctl``).
"""
