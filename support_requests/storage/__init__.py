"""SQLAlchemy storage: models, engine set-up and the transactional operations."""
