"""Membership: the node list and agent, leader and role leases, circuit breakers, the health score."""
