"""Supervised daemons: the daemon protocol, the declarative registry and profiles, the manager."""
