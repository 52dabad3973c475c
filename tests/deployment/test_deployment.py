"""The deployment files (docker-compose.yml, ops/) name real commands, options, settings, queues and services.

No Docker or Kubernetes here: the files are parsed and checked against the code they start —
the typer app, `Settings`, `tasks.app.STAGES`, the API's routes and the metrics it exports.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer.main
import yaml
from typer.testing import CliRunner

from cubeqa.cli import app
from cubeqa.settings import Settings
from tasks.app import STAGES

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "ops" / "Dockerfile"
DOCKERIGNORE = ROOT / "ops" / "Dockerfile.dockerignore"
PROMETHEUS = ROOT / "ops" / "prometheus.yml"
K8S = ROOT / "ops" / "k8s"
KEDA = K8S / "keda.yaml"
MODEL_STAGES = ("encode", "cube")  # the stages that run a network: they get a GPU
SETTING_NAMES = {f"CUBEQA_{name.upper()}" for name in Settings.model_fields}
TASK_TIME_LIMIT = Settings.model_fields["task_time_limit"].default


# ---------------------------------------------------------------- loading


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def is_cubeqa_service(service: dict[str, Any]) -> bool:
    return isinstance(service.get("build"), dict) and service["build"].get("dockerfile") == "ops/Dockerfile"


def cubeqa_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services().items() if is_cubeqa_service(s)}


def worker_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in cubeqa_services().items() if s["command"][0] == "worker"}


@cache
def k8s_objects() -> tuple[tuple[str, dict[str, Any]], ...]:
    """(file name, object) for every document in ops/k8s/*.yaml."""
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        found.extend((path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return tuple(found)


def k8s(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in k8s_objects_of(kind)}


def k8s_objects_of(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in k8s_objects() if doc["kind"] == kind]


def pod_specs() -> dict[str, dict[str, Any]]:
    """Pod spec of every workload (a CronJob's is in its job template), keyed kind/name."""
    specs = {
        f"{doc['kind']}/{name}": doc["spec"]["template"]["spec"]
        for kind in ("Deployment", "StatefulSet", "Job")
        for name, doc in k8s(kind).items()
    }
    specs.update({f"CronJob/{name}": doc["spec"]["jobTemplate"]["spec"]["template"]["spec"] for name, doc in k8s("CronJob").items()})
    return specs


def is_cubeqa(container: dict[str, Any]) -> bool:
    return container["image"].split(":")[0] == "cubeqa"


def cubeqa_containers() -> dict[str, dict[str, Any]]:
    """Every container and init container running the cubeqa image, keyed kind/name/container."""
    return {
        f"{workload}/{c['name']}": c
        for workload, spec in pod_specs().items()
        for c in [*spec.get("initContainers", []), *spec["containers"]]
        if is_cubeqa(c)
    }


def worker_deployment(stage: str) -> dict[str, Any]:
    return k8s("Deployment")[f"worker-{stage}"]


def only_container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return container


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """The environment a container gets, resolving envFrom and valueFrom against configmap.yaml and secret.yaml."""
    maps = {name: doc.get("data", {}) for name, doc in k8s("ConfigMap").items()}
    secrets = {name: doc.get("stringData", {}) for name, doc in k8s("Secret").items()}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(maps[source["configMapRef"]["name"]])
        else:
            env.update(secrets[source["secretRef"]["name"]])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        ref = var["valueFrom"]
        if "secretKeyRef" in ref:
            table, key = secrets[ref["secretKeyRef"]["name"]], ref["secretKeyRef"]["key"]
        else:
            table, key = maps[ref["configMapKeyRef"]["name"]], ref["configMapKeyRef"]["key"]
        assert key in table, f"{var['name']} refers to missing key {key}"
        env[var["name"]] = table[key]
    return {name: str(value) for name, value in env.items()}


def interpolate(value: Any) -> str:
    """Compose's ${VAR:-default} / ${VAR:?error} / ${VAR} with nothing set: the default, else a stand-in."""

    def one(match: re.Match[str]) -> str:
        kind, default = match.group(2), match.group(3)
        return default if kind == "-" else "user:placeholder"

    return re.sub(r"\$\{(\w+)(?::?([-?])([^}]*))?\}", one, str(value))


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment with nothing set in the shell: a variable given no value is left unset."""
    return {name: interpolate(value) for name, value in (service.get("environment") or {}).items() if value is not None}


def passed_through(service: dict[str, Any]) -> list[str]:
    """Variables given no value: Compose takes them from the shell, or leaves them unset."""
    return [name for name, value in (service.get("environment") or {}).items() if value is None]


def option(args: list[str], name: str) -> str | None:
    """The value of `--name VALUE` or `--name=VALUE` in an argument list."""
    for i, arg in enumerate(args):
        if arg == name:
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def cubeqa_invocations() -> dict[str, list[str]]:
    """Every argument list handed to the `cubeqa` entry point, by where it is written."""
    found = {f"compose:{name}": [str(a) for a in s["command"]] for name, s in cubeqa_services().items()}
    found.update({f"k8s:{where}": [str(a) for a in c["args"]] for where, c in cubeqa_containers().items()})
    for instruction, arguments in dockerfile_instructions():
        if instruction == "CMD":
            found["Dockerfile:CMD"] = json.loads(arguments)
    return found


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No CUBEQA_* variables from the developer's shell."""
    for name in list(os.environ):
        if name.upper().startswith("CUBEQA_"):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    from storage.db import upgrade

    url = f"sqlite:///{tmp_path_factory.mktemp('store') / 'jobs.db'}"
    upgrade(url)
    return url


# ---------------------------------------------------------------- the command line


def is_group(command: Any) -> bool:
    """Typer ships its own click, so groups are told by their subcommands, not by click.Group."""
    return isinstance(getattr(command, "commands", None), dict)


def resolve(args: list[str]) -> tuple[list[str], list[str], Any]:
    """Splits arguments into the command path and the rest, and finds the click command."""
    command: Any = typer.main.get_command(app)
    path: list[str] = []
    rest = list(args)
    while is_group(command) and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        assert name in command.commands, f"`cubeqa {' '.join([*path, name])}` is not a command"
        command = command.commands[name]
        path.append(name)
    return path, rest, command


@pytest.mark.parametrize("where", sorted(cubeqa_invocations()))
def test_every_cubeqa_invocation_is_a_real_command_with_real_options(where: str) -> None:
    args = cubeqa_invocations()[where]
    path, rest, command = resolve(args)
    if args == ["--help"]:
        assert CliRunner().invoke(app, ["--help"]).exit_code == 0
        return
    assert not is_group(command), f"{where}: `cubeqa {' '.join(path)}` needs a subcommand"
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    for arg in rest:
        if arg.startswith("--"):
            assert arg.split("=", 1)[0] in result.output, f"{where}: {arg} is not an option of `cubeqa {' '.join(path)}`"
    # Parse without running: unknown options, bad values (--stage gpu) and missing required options fail here.
    command.make_context(" ".join(path), list(rest))


def test_every_container_and_service_uses_the_image_entry_point() -> None:
    for name, service in cubeqa_services().items():
        assert "entrypoint" not in service, name
        assert isinstance(service["command"], list), f"{name}: use the list form, no shell"
    for where, container in cubeqa_containers().items():
        assert "command" not in container, f"{where}: `command` would replace ENTRYPOINT [\"cubeqa\"]; use args"


# ---------------------------------------------------------------- settings


def test_every_cubeqa_variable_is_a_setting() -> None:
    named: dict[str, set[str]] = {}
    for name, service in services().items():
        named[f"compose:{name}"] = set(service.get("environment") or {})
    for name, doc in k8s("ConfigMap").items():
        named[f"configmap:{name}"] = set(doc["data"])
    for name, doc in k8s("Secret").items():
        named[f"secret:{name}"] = set(doc["stringData"])
    for where, container in cubeqa_containers().items():
        named[f"k8s:{where}"] = set(container_env(container))
    for where, names in named.items():
        unknown = {n for n in names if n.upper().startswith("CUBEQA_")} - SETTING_NAMES
        assert not unknown, f"{where}: {sorted(unknown)} are not fields of Settings (the CLI refuses to start)"


def assert_read_as_settings(env: dict[str, str], clean_env: pytest.MonkeyPatch) -> None:
    """`env` validates as Settings (which raises on a bad or unknown value) and every CUBEQA_* in it reaches its field."""
    for key, value in env.items():
        clean_env.setenv(key, value)
    expected = {key.removeprefix("CUBEQA_").lower() for key in env if key.startswith("CUBEQA_")}
    assert Settings().model_fields_set == expected


@pytest.mark.parametrize("name", sorted(cubeqa_services()))
def test_compose_environment_validates_as_settings(name: str, clean_env: pytest.MonkeyPatch) -> None:
    env = compose_env(services()[name])
    assert_read_as_settings(env, clean_env)
    # A pass-through variable may be absent (checked above) or set in the shell.
    for key in passed_through(services()[name]):
        assert not Settings.model_fields[key.removeprefix("CUBEQA_").lower()].is_required(), key
    assert_read_as_settings(env | {key: "from-the-shell:placeholder" for key in passed_through(services()[name])}, clean_env)


@pytest.mark.parametrize("where", sorted(cubeqa_containers()))
def test_k8s_environment_validates_as_settings(where: str, clean_env: pytest.MonkeyPatch) -> None:
    assert_read_as_settings(container_env(cubeqa_containers()[where]), clean_env)


def test_compose_urls_point_at_the_compose_services() -> None:
    postgres = services()["postgres"]["environment"]
    for name, service in cubeqa_services().items():
        env = compose_env(service)
        broker = urlsplit(env["CUBEQA_BROKER_URL"])
        assert broker.scheme == "redis" and broker.hostname == "redis" and broker.port == 6379, name
        if "CUBEQA_DATABASE_URL" in env:
            db = urlsplit(env["CUBEQA_DATABASE_URL"])
            assert db.scheme == "postgresql+psycopg" and db.hostname == "postgres" and db.port == 5432, name
            assert (db.username, db.password, db.path) == (
                postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"], "/" + postgres["POSTGRES_DB"]
            ), name


def test_only_the_services_that_need_a_secret_get_it() -> None:
    for where, container in cubeqa_containers().items():
        env = container_env(container)
        assert ("CUBEQA_API_TOKEN" in env) == (container["args"] == ["api"]), where
        assert ("CUBEQA_FLOWER_BASIC_AUTH" in env) == (container["args"] == ["flower"]), where
    assert "CUBEQA_FLOWER_BASIC_AUTH" in services()["flower"]["environment"]


# ---------------------------------------------------------------- compose


def test_compose_has_the_services_of_the_job_system() -> None:
    expected = {"redis", "postgres", "migrate", "api", "flower", "reconciler", *(f"worker-{s}" for s in STAGES)}
    assert expected <= set(services())
    commands = {name: s["command"] for name, s in cubeqa_services().items()}
    assert commands["migrate"] == ["db", "upgrade"]
    assert commands["api"] == ["api"] and commands["flower"] == ["flower"]
    assert commands["reconciler"][0] == "reconcile" and option(commands["reconciler"], "--every")
    env = compose_env(services()["api"])
    assert env["CUBEQA_API_HOST"] == "0.0.0.0" and compose_env(services()["flower"])["CUBEQA_FLOWER_HOST"] == "0.0.0.0"


def test_all_cubeqa_services_share_one_image() -> None:
    images = {(s["image"], s["build"]["context"], json.dumps(s["build"].get("args"), sort_keys=True)) for s in cubeqa_services().values()}
    assert len(images) == 1
    assert (ROOT / next(iter(cubeqa_services().values()))["build"]["context"] / "ops" / "Dockerfile").is_file()


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_has_its_own_compose_worker(stage: str) -> None:
    service = services()[f"worker-{stage}"]
    command = service["command"]
    assert command[0] == "worker" and option(command, "--stage") == stage
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    if stage in MODEL_STAGES:
        assert option(command, "--device") == "cuda"
        assert any(d["driver"] == "nvidia" and d["count"] == 1 and "gpu" in d["capabilities"] for d in devices)
    else:
        assert option(command, "--device") == "cpu" and not devices
    assert [option(s["command"], "--stage") for s in worker_services().values()].count(stage) == 1


@pytest.mark.parametrize("name", sorted(worker_services()))
def test_compose_workers_can_be_scaled(name: str) -> None:
    service = services()[name]
    # container_name, hostname or a host port would collide between replicas of `--scale`.
    assert not {"container_name", "hostname", "ports"} & set(service), name
    grace = int(str(service["stop_grace_period"]).rstrip("s"))
    assert grace > TASK_TIME_LIMIT, "a stopped worker must be able to finish its running task"


def test_compose_start_order() -> None:
    for name, service in cubeqa_services().items():
        depends = service.get("depends_on", {})
        assert depends.get("redis", {}).get("condition") == "service_healthy" or name == "migrate", name
        if "CUBEQA_DATABASE_URL" in compose_env(service):
            assert depends["postgres"]["condition"] == "service_healthy", name
            if name != "migrate":
                assert depends["migrate"]["condition"] == "service_completed_successfully", name
        for target, condition in depends.items():
            if condition.get("condition") == "service_healthy":
                assert "healthcheck" in services()[target], f"{name} waits for {target}, which has no healthcheck"
    assert services()["migrate"].get("restart") == "no"


def redis_flags(args: list[str]) -> dict[str, str]:
    return {arg: args[i + 1] for i, arg in enumerate(args) if arg.startswith("--")}


def test_redis_is_configured_as_a_broker() -> None:
    """noeviction (never drop a queued task) and AOF (survive a restart), in compose and in Kubernetes."""
    redis = services()["redis"]
    assert redis["image"].split(":")[0] == "redis" and redis["command"][0] == "redis-server"
    assert any(v.endswith(":/data") for v in redis["volumes"])
    (container,) = k8s("StatefulSet")["redis"]["spec"]["template"]["spec"]["containers"]
    for args in (redis["command"], container["args"]):
        flags = redis_flags(args)
        assert flags["--appendonly"] == "yes" and flags["--maxmemory-policy"] == "noeviction"


def test_postgres_has_a_volume_and_a_healthcheck() -> None:
    postgres = services()["postgres"]
    assert postgres["image"] == "postgres:16"
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    named = {v.split(":")[0] for s in services().values() for v in s.get("volumes", []) if not v.startswith(".")}
    assert named <= set(compose()["volumes"])


BANK_READERS = ("api", "worker-encode", "worker-decode")  # intake resolves bank names; decode loads versions; builds embed


def test_compose_bank_readers_share_one_bank_volume_at_the_bank_root() -> None:
    mounts = set()
    for name in BANK_READERS:
        root = compose_env(services()[name])["CUBEQA_BANK_ROOT"]
        (volume,) = [v.split(":")[0] for v in services()[name].get("volumes", []) if v.split(":")[1] == root]
        mounts.add((volume, root))
    ((volume, root),) = mounts  # one named volume, one path: a version pinned at intake is the one decode loads
    assert volume in compose()["volumes"]
    assert f"chown 10001:10001 {root}" in DOCKERFILE.read_text(), "a fresh named volume takes its owner from the image"


def test_k8s_bank_readers_mount_one_read_write_many_claim_at_the_bank_root() -> None:
    claims = k8s("PersistentVolumeClaim")
    deployments = k8s("Deployment")
    mounts = set()
    for name in BANK_READERS:
        spec = deployments[name]["spec"]["template"]["spec"]
        container = only_container(deployments[name])
        root = container_env(container)["CUBEQA_BANK_ROOT"]
        (mount,) = [m for m in container.get("volumeMounts", []) if m["mountPath"] == root]
        (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        claim = volume["persistentVolumeClaim"]["claimName"]
        assert claims[claim]["spec"]["accessModes"] == ["ReadWriteMany"], "pods on several nodes share it"
        assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsGroup"], name
        mounts.add((claim, root))
    assert len(mounts) == 1


# ---------------------------------------------------------------- Dockerfile


def test_dockerfile_installs_the_project_and_runs_cubeqa() -> None:
    steps = dockerfile_instructions()
    values = {instruction: arguments for instruction, arguments in steps}
    assert steps[0] == ("FROM", "python:3.11-slim")
    assert json.loads(values["ENTRYPOINT"]) == ["cubeqa"]
    assert re.search(r"\bHF_HUB_OFFLINE=1\b", " ".join(a for i, a in steps if i == "ENV"))
    user = [a for i, a in steps if i == "USER"][-1].split(":")[0]
    assert user not in {"root", "0"}
    runs = [a for i, a in steps if i == "RUN"]
    torch_step = next(i for i, a in enumerate(runs) if "${TORCH_SPEC}" in a)
    project_step = next(i for i, a in enumerate(runs) if re.search(r"pip install \.(\s|$)", a))
    assert torch_step < project_step, "torch first, so `pip install .` keeps the chosen build"


def test_torch_pin_is_the_same_everywhere() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (pin,) = [d for d in pyproject["project"]["dependencies"] if re.match(r"torch\b", d)]
    args = dict(a.split("=", 1) for i, a in dockerfile_instructions() if i == "ARG" and "=" in a)
    assert args["TORCH_SPEC"] == pin
    assert next(iter(cubeqa_services().values()))["build"]["args"]["TORCH_SPEC"] == pin


def test_dockerfile_copies_every_package_it_installs() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = set()
    for instruction, arguments in dockerfile_instructions():
        if instruction == "COPY":
            copied.update(arguments.split()[:-1])
    assert packages | {"pyproject.toml", pyproject["project"]["readme"]} <= copied
    ignore = DOCKERIGNORE.read_text().splitlines()
    for source in copied:
        assert (ROOT / source).exists(), source
        assert f"!{source}" in ignore, f"{source} is excluded from the build context"


# ---------------------------------------------------------------- Kubernetes


def test_k8s_files_parse_into_one_namespace() -> None:
    (namespace,) = k8s("Namespace")
    for file, doc in k8s_objects():
        assert doc.get("apiVersion") and doc.get("kind"), file
        if doc["kind"] not in {"Namespace", "Kustomization"}:
            assert doc["metadata"]["namespace"] == namespace, f"{file}: {doc['kind']}/{doc['metadata']['name']}"
    (kustomization,) = k8s_objects_of("Kustomization")
    assert set(kustomization["resources"]) == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


def test_k8s_has_the_workloads_of_the_job_system() -> None:
    deployments = k8s("Deployment")
    assert {"api", "flower", "reconciler", *(f"worker-{s}" for s in STAGES)} <= set(deployments)
    assert only_container(k8s("Job")["migrate"])["args"] == ["db", "upgrade"]
    assert only_container(deployments["reconciler"])["args"][0] == "reconcile"
    for name, doc in deployments.items():
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items(), name


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_has_its_own_k8s_worker(stage: str) -> None:
    deployment = worker_deployment(stage)
    container = only_container(deployment)
    spec = deployment["spec"]["template"]["spec"]
    assert container["args"][0] == "worker" and option(container["args"], "--stage") == stage
    gpus = {str(container["resources"].get(part, {}).get("nvidia.com/gpu")) for part in ("requests", "limits")}
    if stage in MODEL_STAGES:
        assert option(container["args"], "--device") == "cuda" and gpus == {"1"}
    else:
        assert option(container["args"], "--device") == "cpu" and gpus == {"None"}
    limit = int(container_env(container).get("CUBEQA_TASK_TIME_LIMIT", TASK_TIME_LIMIT))
    assert spec["terminationGracePeriodSeconds"] > limit, "scale-down must let the running task finish"


def test_the_hooks_worker_runs_beside_the_stages_with_the_signing_secret_and_no_other() -> None:
    """Webhooks are posted by their own worker, which alone gets CUBEQA_WEBHOOK_SECRET (compose: from the shell)."""
    container = only_container(k8s("Deployment")["worker-hooks"])
    assert container["args"] == ["worker", "--stage", "hooks"] and container_env(container)["CUBEQA_WEBHOOK_SECRET"]
    for where, other in cubeqa_containers().items():
        assert ("CUBEQA_WEBHOOK_SECRET" in container_env(other)) == (other["args"] == container["args"]), where
    service = services()["worker-hooks"]
    assert service["command"] == ["worker", "--stage", "hooks"] and "webhooks" in service["profiles"]
    assert "CUBEQA_WEBHOOK_SECRET" in passed_through(service)


def test_pods_get_no_service_links() -> None:
    """No Service's FOO_PORT=tcp://... variables in any pod (Flower, for one, reads FLOWER_* as its options)."""
    assert "flower" in k8s("Service")
    for workload, spec in pod_specs().items():
        assert spec.get("enableServiceLinks") is False, workload


def test_cubeqa_flower_drops_inherited_flower_variables(clean_env: pytest.MonkeyPatch) -> None:
    """What flower.yaml's comment relies on: the service-link variables never reach Flower, the secret does."""
    from cubeqa.services_cli import flower_command_line

    clean_env.setenv("FLOWER_PORT", "tcp://10.0.0.7:5555")
    clean_env.setenv("FLOWER_SERVICE_HOST", "10.0.0.7")
    (flower,) = [c for c in cubeqa_containers().values() if c["args"] == ["flower"]]
    for key, value in container_env(flower).items():
        clean_env.setenv(key, value)
    argv, env = flower_command_line(Settings())
    assert {k: v for k, v in env.items() if k.startswith("FLOWER_")} == {"FLOWER_BASIC_AUTH": container_env(flower)["CUBEQA_FLOWER_BASIC_AUTH"]}
    assert f"--port={container_env(flower)['CUBEQA_FLOWER_PORT']}" in argv


def test_database_workloads_wait_for_the_schema_in_an_init_container() -> None:
    """Every pod that opens the SQL store first runs `cubeqa db check --wait N` with the same image and settings."""
    checked = set()
    for workload, spec in pod_specs().items():
        main = [c for c in spec["containers"] if is_cubeqa(c)]
        checks = [c for c in spec.get("initContainers", []) if is_cubeqa(c) and resolve(c["args"])[0] == ["db", "check"]]
        uses_db = any("CUBEQA_DATABASE_URL" in container_env(c) for c in main)
        if workload == "Job/migrate" or not uses_db:
            # migrate creates the schema the check waits for; Flower and the health CronJob need only the broker.
            assert not checks, workload
            continue
        (check,) = checks
        _, rest, command = resolve(check["args"])
        assert command.make_context("check", list(rest)).params["wait"] > 0, workload
        for container in main:
            assert check["image"] == container["image"], f"{workload}: the check must run this image's schema version"
            # The same settings as the container it guards (a subset: it needs no API token).
            assert container_env(check).items() <= container_env(container).items(), workload
        checked.add(workload)
    assert checked == {f"Deployment/{name}" for name in ("api", "reconciler", "worker-hooks", *(f"worker-{s}" for s in STAGES))}


def test_db_check_passes_only_at_the_current_schema(sqlite_url: str, tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    """The init container's command: 0 on a migrated store, 1 on one the migrate Job has not reached."""
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert CliRunner().invoke(app, ["db", "check", "--wait", "0"], env={"CUBEQA_DATABASE_URL": sqlite_url}).exit_code == 0
    assert CliRunner().invoke(app, ["db", "check", "--wait", "0"], env={"CUBEQA_DATABASE_URL": fresh}).exit_code == 1


def minutes_between_runs(schedule: str) -> int:
    """The period of a `*/N * * * *` (or `M * * * *`: hourly) cron schedule, in minutes."""
    minute, *rest = schedule.split()
    assert len(rest) == 4 and all(field == "*" for field in rest), schedule
    return int(minute.removeprefix("*/")) if minute.startswith("*/") else 60


def test_a_cronjob_checks_that_every_stage_consumes() -> None:
    """`cubeqa health` runs on a schedule, and a silent stage is a failed Job, not a retried or hidden one."""
    (cron,) = [doc for doc in k8s("CronJob").values() if only_container(doc["spec"]["jobTemplate"])["args"][0] == "health"]
    job = cron["spec"]["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    container = only_container(cron["spec"]["jobTemplate"])
    path, rest, command = resolve(container["args"])
    params = command.make_context("health", list(rest)).params
    stages = {str(getattr(s, "value", s)) for s in params["stage"] or ()}
    assert not stages or "all" in stages or stages == set(STAGES), "every stage is checked"
    assert option(rest, "--timeout") is not None, "say how long a stage may stay silent"
    assert pod["restartPolicy"] == "Never" and job["backoffLimit"] == 0, "a failure must end the Job as failed"
    assert cron["spec"].get("failedJobsHistoryLimit", 1) >= 1, "failed Jobs stay visible"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert params["timeout"] < job["activeDeadlineSeconds"] < 60 * minutes_between_runs(cron["spec"]["schedule"])
    assert "CUBEQA_BROKER_URL" in container_env(container)


def test_no_probe_restarts_a_pod_on_a_stage_health_check() -> None:
    """`cubeqa health` proves a stage consumes, not that this pod does: never a liveness or startup probe."""
    for workload, spec in pod_specs().items():
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            for probe in ("livenessProbe", "startupProbe"):
                command = container.get(probe, {}).get("exec", {}).get("command", [])
                assert "health" not in command, f"{workload}/{container['name']} {probe}"
    for name, service in cubeqa_services().items():
        assert "health" not in [str(a) for a in service.get("healthcheck", {}).get("test", [])], name


def test_api_probes_and_service_use_the_api_port(sqlite_url: str, clean_env: pytest.MonkeyPatch) -> None:
    """Liveness on /livez (up while the process serves), readiness on /readyz (503 without broker or database; not
    /healthz, which also fails while a stage has no worker: KEDA may scale workers to zero)."""
    from fastapi.testclient import TestClient

    from cubeqa.api import create_app

    container = only_container(k8s("Deployment")["api"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == int(container_env(container)["CUBEQA_API_PORT"])
    # No broker on port 1: the outage a liveness probe must ride out and readiness must report.
    api = create_app(Settings(database_url=sqlite_url, broker_url="redis://127.0.0.1:1/0"))
    routes = set(api.openapi()["paths"])  # the routers are included lazily: api.routes holds them, not their paths
    probes = {probe: container[probe]["httpGet"] for probe in ("readinessProbe", "livenessProbe")}
    assert probes["livenessProbe"]["path"] == "/livez" and probes["readinessProbe"]["path"] == "/readyz"
    client = TestClient(api)
    assert client.get(probes["livenessProbe"]["path"]).status_code == 200
    assert client.get(probes["readinessProbe"]["path"]).status_code == 503
    for probe, get in probes.items():
        assert get["path"] in routes and get["port"] in ports, probe
    service = k8s("Service")["api"]
    assert service["spec"]["ports"][0]["targetPort"] in ports
    assert service["metadata"]["annotations"]["prometheus.io/path"] in routes
    # The compose healthcheck asks the same API for /readyz on its own port.
    compose_api = services()["api"]
    port, path = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", " ".join(compose_api["healthcheck"]["test"])).groups()
    assert path in routes and int(port) == int(compose_env(compose_api)["CUBEQA_API_PORT"])


# ---------------------------------------------------------------- KEDA and Prometheus


def scaled_objects() -> dict[str, dict[str, Any]]:
    return k8s("ScaledObject")


def test_one_scaled_object_per_stage_worker() -> None:
    targets = [doc["spec"]["scaleTargetRef"]["name"] for doc in scaled_objects().values()]
    assert sorted(targets) == sorted(f"worker-{s}" for s in STAGES)


@pytest.mark.parametrize("name", sorted(scaled_objects()))
def test_scaled_object_scales_on_its_stage_backlog(name: str) -> None:
    """Each stage worker scales on its stage's true backlog, read through Prometheus: KEDA's redis trigger reads one
    list, and a stage queue is one list per priority level (tasks.priority)."""
    spec = scaled_objects()[name]["spec"]
    target = k8s("Deployment")[spec["scaleTargetRef"]["name"]]
    assert spec["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]  # never to zero: it keeps the model loaded
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus" and float(trigger["metadata"]["threshold"]) > 0
    assert urlsplit(trigger["metadata"]["serverAddress"]).scheme == "http"
    stage = re.fullmatch(r'max\(cubeqa_stage_backlog\{stage="(\w+)"\}\)', trigger["metadata"]["query"]).group(1)
    assert stage == option(only_container(target)["args"], "--stage")


def collected(sqlite_url: str, waiting: dict[str, int] | None = None, unacked: tuple[str, ...] = ()) -> dict[str, Any]:
    """The metric families the API's /metrics exports, by name, with a broker holding `waiting`
    messages per Redis list and one delivered-but-unacknowledged message per entry of `unacked`."""
    from cubeqa.metrics import StoreCollector
    from storage.db import make_engine, session_factory

    class Broker:
        def llen(self, name: str) -> int:
            return (waiting or {}).get(name, 0)

        def scan_iter(self, match: str, count: int) -> Iterator[bytes]:  # heartbeat keys of live workers: none
            return iter(())

        def hvals(self, name: str) -> list[bytes]:
            # The Redis transport's `unacked` hash: JSON [message, exchange, routing key] per delivery tag.
            return [json.dumps([{}, "", queue]).encode() for queue in unacked] if name == "unacked" else []

    collector = StoreCollector(session_factory(make_engine(sqlite_url)), Broker())
    return {family.name: family for family in collector.collect()}


def test_stage_backlog_counts_every_priority_level_and_the_unacknowledged(sqlite_url: str) -> None:
    """What the ScaledObjects scale on: 2 interactive and 3 bulk messages waiting in the stage's queue and 1 reserved
    (one more reserved in another stage) read 6; cubeqa_queue_length reads the 5 waiting."""
    from tasks.priority import queue_keys

    stage, other = STAGES[0], STAGES[1]
    interactive, bulk = queue_keys(stage)[0], queue_keys(stage)[4]
    families = collected(sqlite_url, waiting={interactive: 2, bulk: 3}, unacked=(stage, other))
    backlog = {s.labels["stage"]: s.value for s in families["cubeqa_stage_backlog"].samples}
    waiting = {s.labels["queue"]: s.value for s in families["cubeqa_queue_length"].samples}
    assert (backlog[stage], waiting[stage], backlog[other], waiting[other]) == (6, 5, 1, 0)


def test_metrics_named_in_the_deployment_files_are_exported(sqlite_url: str) -> None:
    """Every cubeqa_* metric the k8s files mention (comments too) exists, with the label it is selected by."""
    families = collected(sqlite_url, waiting=dict.fromkeys(STAGES, 1))
    mentioned = 0
    for path in K8S.glob("*.yaml"):
        for name, label in re.findall(r"\b(cubeqa_[a-z_]+)(?:\{(\w+)=)?", path.read_text()):
            mentioned += 1
            assert name in families, f"{path.name}: {name} is not exported"
            if label:
                assert any(label in s.labels for s in families[name].samples), f"{path.name}: {name} has no label {label}"
    assert mentioned
    keda = KEDA.read_text()
    assert "cubeqa_stage_backlog" in keda and "acknowledged" in keda and "priority level" in keda


def test_prometheus_scrapes_the_api() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "cubeqa-api"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    (target,) = [t for group in job["static_configs"] for t in group["targets"]]
    host, port = target.split(":")
    api = services()[host]
    assert int(port) == int(compose_env(api)["CUBEQA_API_PORT"])
    assert any(str(p).endswith(f":{port}") for p in api["ports"])
    assert any(v.startswith("./ops/prometheus.yml:") for v in services()["prometheus"]["volumes"])
