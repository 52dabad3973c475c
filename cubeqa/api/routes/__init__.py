"""The API's routers: jobs, batches, and operations (health, metrics)."""
