"""The Celery app `cubeqa flower` runs Flower with (`celery -A cubeqa.flower_app flower`).

Flower imports its app by name, so this module configures one when imported; it is imported only by the
Flower process `cubeqa flower` starts, which passes the broker in CELERY_BROKER_URL. It accepts what the
workers send (msgpack and JSON, never pickle): with Celery's default JSON-only app Flower could not read
the workers' msgpack replies to `inspect`, and showed no worker and no stage queue.
"""

from __future__ import annotations

import os

from tasks.app import configure

app = configure(os.environ["CELERY_BROKER_URL"])
