"""The cluster: node registry and agent, leader and role leases, circuit breakers, health, idle shutdown."""
