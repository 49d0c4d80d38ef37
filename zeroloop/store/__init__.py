"""The state store: one schema on SQLite or PostgreSQL, its migrations and its named operations."""
