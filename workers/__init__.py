"""Worker process runtime: load a stage's model once per process, pick the device, run Celery."""
