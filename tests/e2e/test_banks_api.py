"""Banks over HTTP from the outside: `cubeqa api` and one worker per stage (real Redis, SQLite), driven through the
Python client: list, build from uploaded Markdown (embedded on the encode workers) with progress to done, answer a
question from the new bank, add a version, remove it; a document without a sentence fails its build with the
CLI's error and leaves no bank folder."""

from __future__ import annotations

import asyncio
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from jobsystem import BANK_ROOT, service_env, stage_workers, start, stop

from tests.conftest import ROOT, migrated
from tests.e2e.test_job_system_cli import serve_api

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.timeout(900)]
TOKEN = "banks-api-token"
DOCS = ROOT / "tests" / "data" / "docs" / "starlette"


@pytest.fixture(scope="module")
def api(broker_url, tmp_path_factory):
    """Base URL of a token-protected `cubeqa api` with a SQLite store and a worker per stage."""
    work = tmp_path_factory.mktemp("banks-api")
    url = f"sqlite:///{work / 'cubeqa.db'}"
    migrated(url).kw["bind"].dispose()
    with stage_workers(broker_url, url, work):
        process, base = serve_api({"env": service_env(broker_url, url)}, work / "api.log", CUBEQA_API_TOKEN=TOKEN)
        try:
            yield base
        finally:
            stop([process])


def test_build_answer_add_and_remove_a_bank_through_the_client(api, tmp_path) -> None:
    from cubeqa.client import Client, ClientError

    name = "starlette-http"
    folder = tmp_path / "docs"
    folder.mkdir()
    for doc in ("testclient.md", "staticfiles.md"):
        shutil.copy(DOCS / doc, folder / doc)
    (folder / "logo.png").write_bytes(b"\x89PNG")  # not a document: the client leaves it out of a folder
    with Client(api, token=TOKEN) as client:
        assert name not in {b.name for b in client.banks().banks}
        seen = []
        build = client.build_bank(name, [folder], poll=0.2, timeout=300, progress=seen.append)
        assert build.state == "done" and build.error is None and build.files == ["staticfiles.md", "testclient.md"]
        assert seen[0].state in ("queued", "running") and seen[-1] == build
        assert build.stage == "write" and build.done == build.total > 0  # the last stage, complete
        listed = {b.name: b for b in client.banks().banks}[name]
        assert (listed.version, listed.versions, listed.sentences) == (build.version, [build.version], build.sentences)
        assert listed.documents == 2 and listed.size_bytes > 0 and listed.built_at and not listed.builtin

        job = client.ask("What does the test client let you make requests against?", bank=name, min_confidence=0.0)
        assert job.status == "done" and (job.bank, job.bank_version) == (name, build.version)
        assert job.evidence is not None and job.evidence["source"].endswith("testclient.md")
        assert "ASGI application" in job.answer

        with pytest.raises(ClientError) as exists:
            client.build_bank(name, [DOCS / "background.md"])
        assert exists.value.status == 409 and "replace=true" in str(exists.value.detail)
        added = client.build_bank(name, [DOCS / "background.md"], add=True, poll=0.2, timeout=300)
        detail = client.bank(name)
        assert detail.version == added.version != build.version and detail.sentences > build.sentences
        assert [(v.version, v.current, v.parent) for v in detail.kept] == [
            (added.version, True, build.version), (build.version, False, None)]
        assert detail.samples and detail.encoder["dim"] == 384
        again = client.build_bank(name, [folder], replace=True, poll=0.2, timeout=300)
        assert again.version == build.version == client.bank(name).version  # the same documents, the same version

        client.remove_bank(name)
        with pytest.raises(ClientError) as gone:
            client.bank(name)
        assert gone.value.status == 404
    assert not (Path(BANK_ROOT) / name).exists()

    async def through_async() -> tuple[str, list[str]]:
        from cubeqa.client import AsyncClient

        async with AsyncClient(api, token=TOKEN) as aclient:
            built = await aclient.build_bank("async-bank", [DOCS / "threadpool.md"], poll=0.2, timeout=300)
            names = [b.name for b in (await aclient.banks()).banks]
            await aclient.remove_bank("async-bank")
            return built.state, names

    with ThreadPoolExecutor(1) as thread:  # its own event loop
        state, names = thread.submit(asyncio.run, through_async()).result()
    assert state == "done" and "async-bank" in names and not (Path(BANK_ROOT) / "async-bank").exists()


def test_a_document_without_a_sentence_fails_its_build_with_the_cli_error(api, tmp_path) -> None:
    from cubeqa.client import BankBuildFailed, Client

    headings = tmp_path / "headings.md"
    headings.write_text("# Only a heading\n\n```python\nprint('code is no sentence')\n```\n", encoding="utf-8")
    with Client(api, token=TOKEN) as client, pytest.raises(BankBuildFailed) as failed:
        client.build_bank("no-sentences", [headings], poll=0.2, timeout=300)
    build = failed.value.build
    assert build.state == "failed" and build.finished_at and build.error.startswith("headings.md")  # not the server's folder
    cli = start(["bank", "build", "no-sentences-cli", str(headings)], service_env("redis://", "sqlite://"),
                tmp_path / "cli.log")
    cli.wait(timeout=300)
    assert build.error.split("headings.md", 1)[1] in (tmp_path / "cli.log").read_text()  # the same message
    assert not (Path(BANK_ROOT) / "no-sentences").exists()
