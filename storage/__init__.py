"""The SQL store: the source of truth for batches, jobs, results and model versions (no torch here)."""
