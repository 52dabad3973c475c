"""The HTTP API fuzzed from its own OpenAPI schema (schemathesis): at least 2,000 generated requests, valid
and invalid, in process against PostgreSQL and the session's Redis database; none may get a 5xx."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from jobsystem import postgres_database
from single_worker import clean_settings

from tests.conftest import migrated

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.timeout(900)]
REQUESTS = 2000
PER_MODE = 1010  # positive and negative examples each: 2,020 requests


@pytest.fixture(scope="module")
def api(broker_url: str):
    """The API on a fresh PostgreSQL database (it refuses NUL bytes and overlong keys, where SQLite does not)."""
    import redis

    from cubeqa.api import create_app

    redis.Redis.from_url(broker_url).flushdb()
    with postgres_database() as url:
        migrated(url).kw["bind"].dispose()
        app = create_app(clean_settings(broker_url=broker_url, database_url=url))
        yield app
    redis.Redis.from_url(broker_url).flushdb()  # no worker runs here: drop the chains the fuzzing queued


def test_no_generated_request_gets_a_server_error(api) -> None:
    import schemathesis
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_asgi("/openapi.json", api)
    statuses: Counter[tuple[str, int]] = Counter()
    errors: list[str] = []

    def send(case) -> None:
        if case.path == "/healthz" and "timeout" not in (case.query or {}):
            case.query = {**(case.query or {}), "timeout": 0.01}  # its default, 5 s, would be waited out on every call
        for name in ("wait", "timeout"):  # /v1/jobs?wait, /healthz?timeout
            value = (case.query or {}).get(name)
            if isinstance(value, int | float) and 0 < value <= 60:
                case.query[name] = 0.01  # valid, but no worker answers here: a real wait would only sleep
        try:
            response = case.call()
            status = response.status_code
            unhealthy = case.path == "/healthz" and status == 503  # its verdict: no worker runs in this test
            if status >= 500 and not unhealthy:
                errors.append(f"{status} {response.text[:200]}\n    {case.as_curl_command()}")
        except Exception as exc:
            status = 599
            errors.append(f"{type(exc).__name__}: {str(exc)[:200]}\n    {case.as_curl_command()}")
        statuses[(f"{case.method} {case.path}", status)] += 1

    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        run = settings(
            max_examples=PER_MODE, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )(given(case=schema.as_strategy(generation_mode=mode))(send))
        run()

    total = sum(statuses.values())
    operations = {operation for operation, _ in statuses}
    print(f"\nschemathesis: {total} requests over {len(operations)} operations, {len(errors)} with a 5xx;",
          dict(sorted(Counter(status for _, status in statuses.elements()).items())))
    assert total >= REQUESTS
    assert len(operations) == 15  # every path and method of the schema was exercised
    assert errors == [], "\n".join(errors[:20])
