"""The named catalogue of store operations, one module per family of tables.

Every persistent operation of zeroloop is one function here, taking an open SQLAlchemy
`Connection` first; managers call these and nothing else touches tables. The contract
suite in tests/store runs each of them on SQLite and on PostgreSQL.
"""
