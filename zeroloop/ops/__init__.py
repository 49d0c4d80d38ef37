"""Operations: backups and restore, retention and garbage collection, and the maintenance daemons."""
