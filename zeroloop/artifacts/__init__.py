"""Content-addressed artifacts: game batches, training windows, models, match results."""
