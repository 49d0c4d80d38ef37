"""Workloads: what the loop runs (selfplay, export, train, evaluate), built-in AlphaZero or user commands."""
