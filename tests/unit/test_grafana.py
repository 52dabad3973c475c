"""The Grafana dashboard and its provisioning: every query names a metric that /metrics exports (the API's
or Flower's), and compose wires Grafana to Prometheus with these files."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "ops" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "cubeqa.json"
METRIC = re.compile(r"\b((?:cubeqa|flower)_[a-zA-Z0-9_]+)\b")
PROMQL_WORDS = {"sum", "by", "rate", "deriv", "increase", "avg", "max", "min", "count", "without", "histogram_quantile"}


def queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def exported(exposition: str) -> set[str]:
    """Metric names in a Prometheus exposition, with the sample names a histogram or counter adds."""
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            if kind == "counter":
                names |= {f"{name}_total", f"{name}_created"}
    return names


@pytest.fixture(scope="module")
def api_metrics(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Names the API's /metrics exports (a migrated SQLite store; no broker, whose gauges keep their names)."""
    from fastapi.testclient import TestClient

    from cubeqa.api import create_app
    from cubeqa.settings import Settings
    from storage.db import upgrade

    url = f"sqlite:///{tmp_path_factory.mktemp('grafana') / 'store.db'}"
    upgrade(url)
    with pytest.MonkeyPatch.context() as patch:
        for name in [k for k in os.environ if k.upper().startswith("CUBEQA_")]:
            patch.delenv(name)
        app = create_app(Settings(database_url=url, broker_url="redis://127.0.0.1:1/0"))
    response = TestClient(app).get("/metrics")
    assert response.status_code == 200
    return exported(response.text)


@pytest.fixture(scope="module")
def flower_metrics() -> set[str]:
    """Names Flower's /metrics exports: the metrics Flower's events state registers in the default registry."""
    from flower.events import get_prometheus_metrics
    from prometheus_client import REGISTRY, generate_latest

    get_prometheus_metrics()  # what Flower's EventsState does at start-up
    return exported(generate_latest(REGISTRY).decode())


def test_dashboard_parses_with_panels_that_query() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "cubeqa-prometheus", panel["title"]
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]


def test_every_query_names_an_exported_metric(api_metrics: set[str], flower_metrics: set[str]) -> None:
    assert {"cubeqa_jobs", "cubeqa_stage_backlog", "cubeqa_stage_latency_ms", "cubeqa_queue_length"} <= api_metrics
    for expr in queries():
        names = set(METRIC.findall(expr)) - PROMQL_WORDS
        assert names, f"query names no cubeqa_ or flower_ metric: {expr}"
        for name in names:
            source = api_metrics if name.startswith("cubeqa_") else flower_metrics
            assert name in source, f"{name} in {expr!r} is not exported"


def test_dashboard_covers_the_issue_views() -> None:
    """Per-stage backlog, stage latency quantiles, jobs by status and throughput, queue lengths, worker count."""
    text = " ".join(queries())
    for needed in ("cubeqa_stage_backlog", "cubeqa_stage_latency_ms", "cubeqa_jobs", "deriv(", "cubeqa_queue_length", "flower_worker_online"):
        assert needed in text, needed


def test_compose_wires_grafana_to_prometheus() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    grafana = compose["services"]["grafana"]
    assert "prometheus" in grafana["depends_on"]
    mounts = {volume.split(":")[1]: ROOT / volume.split(":")[0] for volume in grafana["volumes"]}
    assert mounts["/etc/grafana/provisioning"] == GRAFANA / "provisioning"
    datasource = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    prometheus = compose["services"]["prometheus"]
    port = prometheus["ports"][0].rsplit(":", 1)[1]
    assert datasource["url"] == f"http://prometheus:{port}"
    assert datasource["uid"] == json.loads(DASHBOARD.read_text())["panels"][0]["datasource"]["uid"]
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "cubeqa.yml").read_text())["providers"][0]
    assert (mounts[provider["options"]["path"]] / DASHBOARD.name).is_file()
    scraped = yaml.safe_load((ROOT / "ops" / "prometheus.yml").read_text())
    targets = {t for job in scraped["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    assert {"api:8000", "flower:5555"} <= targets
