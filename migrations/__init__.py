"""Alembic migrations, installed as ``litegate.migrations``."""
