"""The typed, durable event bus: catalogue, publishing, consumers, dead letters, replay."""
