"""The durable work queue: jobs with leases and fencing tokens, retries, priorities and backpressure."""
