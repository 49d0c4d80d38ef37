"""Fixtures of the provider tests: the real single-host Slurm."""

from tests.fleet.providers.slurm_cluster import slurm_cluster

__all__ = ["slurm_cluster"]
