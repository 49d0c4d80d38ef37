"""The loop per config key: stages, triggers, promotion, model registry, selfplay scheduling, job execution."""
