"""Membership: the node registry and agent, leader and role leases, circuit breakers, the health score."""
