"""The fleet: provider pools, the autoscaler that launches machines for queued work, and idle shutdown."""
