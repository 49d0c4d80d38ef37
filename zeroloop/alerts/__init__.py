"""Alerting: the rules that turn events into alerts, webhooks, the periodic checks, and job activity."""
