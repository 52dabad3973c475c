"""The Celery app (queues, routing, serializers), the stage tasks, and producer helpers."""
