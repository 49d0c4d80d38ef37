"""Tests of the workload: built-in AlphaZero and the command adapter."""
