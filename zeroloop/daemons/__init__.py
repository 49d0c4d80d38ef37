"""Supervised daemons: the daemon protocol, the declarative table and profiles, the manager."""
