"""Alembic migrations of the service's schema (run through ``storage.schema``)."""
