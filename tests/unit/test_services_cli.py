"""`cubeqa api` and `cubeqa flower` options, and the Celery app Flower runs with."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cubeqa.services_cli import flower_command_line, with_address
from cubeqa.settings import Settings


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in [k for k in os.environ if k.startswith("CUBEQA_")]:
        monkeypatch.delenv(name)
    return Settings(api_port=8000, flower_host="127.0.0.1")


def test_host_and_port_options_override_the_settings(settings: Settings) -> None:
    assert with_address(settings, "api", None, None) is settings
    moved = with_address(settings, "api", "0.0.0.0", 9001)
    assert (moved.api_host, moved.api_port) == ("0.0.0.0", 9001) and moved.flower_port == settings.flower_port
    assert with_address(settings, "flower", None, 5600).flower_port == 5600


def test_flower_runs_an_app_that_reads_the_workers_replies(settings: Settings) -> None:
    argv, env = flower_command_line(with_address(settings, "flower", "0.0.0.0", 5600))
    assert argv[argv.index("-A") + 1] == "cubeqa.flower_app" and "--port=5600" in argv and "--address=0.0.0.0" in argv
    probe = "import json, cubeqa.flower_app as f; c = f.app.conf; print(json.dumps([c.accept_content, c.result_accept_content, c.broker_url]))"
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
    accept, result_accept, broker = json.loads(out)
    assert set(accept) == set(result_accept) == {"msgpack", "json"}
    assert broker == settings.broker_url
