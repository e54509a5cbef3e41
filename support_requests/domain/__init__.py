"""Pure domain rules of support requests: no framework, no database."""
