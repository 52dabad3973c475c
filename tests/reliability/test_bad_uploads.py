"""Bad uploads to POST /v1/banks/{name}, in process against the real Redis and a SQLite store: zip bombs, a
100 MB file, binary content posing as text, path components in multipart file names... each refused with its
status and a message naming the file, before anything is built: the bank root and the staging area stay as they were."""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from pathlib import Path

import pytest
from single_worker import clean_settings

from tests.conftest import migrated

pytestmark = [pytest.mark.services]
TOKEN = "bad-uploads-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROSE = b"# Title\n\nStarlette is a lightweight ASGI framework. It is well suited to building async web services.\n"


def docx(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def client(broker_url, tmp_path_factory):
    """The API with a token, a bank root of its own and a 64 KiB unpack limit for .docx uploads."""
    from fastapi.testclient import TestClient

    from cubeqa.api import create_app

    work = tmp_path_factory.mktemp("bad-uploads")
    url = f"sqlite:///{work / 'store.db'}"
    migrated(url).kw["bind"].dispose()
    settings = clean_settings(broker_url=broker_url, database_url=url, bank_root=work / "banks", api_token=TOKEN,
                              max_unpacked_bytes=64 * 1024, max_request_bytes=32 * 1024 * 1024)
    with TestClient(create_app(settings)) as test_client:
        yield test_client, work / "banks"


def snapshot(root: Path) -> list[tuple[str, int]]:
    """Every path under the bank root with its size, and the upload folders in the temporary directory."""
    inside = sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*")) if root.exists() else []
    staged = sorted((str(p), 0) for p in Path(tempfile.gettempdir()).glob(f"cubeqa-uploads-{os.getuid()}/*/*"))
    return inside + staged


BOMB = docx({"word/document.xml": b"<w:t>" + b"a" * (20 * 2**20) + b"</w:t>"})  # 20 MiB from about 20 KB
BIG_DOCX = docx({"word/document.xml": os.urandom(80 * 1024)}, zipfile.ZIP_STORED)  # 80 KiB unpacked, over the limit
CASES = [  # (why, files, status, words the message holds)
    ("a parent folder in the file name", [("../escape.md", PROSE)], 422, "without folders"),
    ("a folder in the file name", [("docs/index.md", PROSE)], 422, "without folders"),
    ("a Windows folder in the file name", [("docs\\index.md", PROSE)], 422, "without folders"),
    ("an absolute file name", [("/etc/cron.d/x.md", PROSE)], 422, "without folders"),
    ("a hidden file name", [(".profile.md", PROSE)], 422, "not hidden"),
    ("the same name twice", [("a.md", PROSE), ("a.md", PROSE)], 422, "given twice"),
    ("an empty file", [("empty.md", b"")], 422, "empty.md is empty"),
    ("a PNG posing as Markdown", [("logo.md", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + os.urandom(256))], 415, "binary"),
    ("Latin-1 posing as UTF-8 text", [("notes.txt", "café crème".encode("latin-1"))], 415, "not UTF-8"),
    ("a NUL byte after the first 8 KiB", [("late.md", PROSE * 200 + b"\x00")], 415, "binary"),
    ("an unsupported type", [("archive.zip", docx({"a.md": PROSE}))], 415, "unsupported file type '.zip'"),
    ("no suffix at all", [("README", PROSE)], 415, "unsupported file type"),
    ("a zip bomb as .docx", [("bomb.docx", BOMB)], 413, "zip bomb"),
    ("a .docx unpacking over the limit", [("big.docx", BIG_DOCX)], 413, "more than the limit"),
    ("a .docx that is no zip", [("fake.docx", PROSE)], 415, "not a zip archive"),
    ("a zip without a Word document", [("other.docx", docx({"content.xml": b"<x/>"}))], 415, "no word/document.xml"),
    ("a PDF without its header", [("fake.pdf", PROSE)], 415, "not a PDF"),
]


@pytest.mark.parametrize(("why", "files", "status", "words"), CASES, ids=[c[0] for c in CASES])
def test_a_bad_upload_is_refused_and_nothing_is_written(client, why, files, status, words) -> None:
    api, root = client
    before = snapshot(root)
    response = api.post("/v1/banks/uploads", headers=AUTH, files=[("files", item) for item in files])
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]
    assert snapshot(root) == before


def raw_upload(filename: bytes, content: bytes) -> tuple[bytes, dict[str, str]]:
    """A multipart body with the file name exactly as given (httpx would percent-encode control characters)."""
    body = (b'--x\r\nContent-Disposition: form-data; name="files"; filename="' + filename + b'"\r\n'
            b"Content-Type: text/markdown\r\n\r\n" + content + b"\r\n--x--\r\n")
    return body, {**AUTH, "content-type": "multipart/form-data; boundary=x"}


@pytest.mark.parametrize("filename", [b"a\x01b.md", b"a\x1b[31mb.md", b"../../x.md", b"..", b"C:\\..\\..\\.x.md"])
def test_a_raw_file_name_with_control_characters_or_folders_is_refused(client, filename) -> None:
    api, root = client
    before = snapshot(root)
    body, headers = raw_upload(filename, PROSE)
    response = api.post("/v1/banks/uploads", content=body, headers=headers)
    assert response.status_code == 422, response.text
    assert snapshot(root) == before


def test_a_100_mb_file_is_refused_before_it_is_read(client) -> None:
    api, root = client
    before = snapshot(root)
    response = api.post("/v1/banks/uploads", headers=AUTH, files=[("files", ("huge.txt", b"word " * (20 * 2**20)))])
    assert response.status_code == 413 and "larger than" in response.json()["detail"]
    assert snapshot(root) == before


def test_requests_the_route_cannot_take_are_refused(client) -> None:
    api, root = client
    before = snapshot(root)

    def chunks():
        yield b"--x\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.md\"\r\n\r\n" + PROSE + b"\r\n--x--\r\n"

    chunked = api.post("/v1/banks/uploads", headers={**AUTH, "content-type": "multipart/form-data; boundary=x"},
                       content=chunks())
    assert chunked.status_code == 411
    assert api.post("/v1/banks/uploads", headers=AUTH, files=[]).status_code in (400, 422)
    fields = api.post("/v1/banks/uploads", headers=AUTH, data={"files": "not a file"}, files=[("files", ("a.md", PROSE))])
    assert fields.status_code == 422 and "only files" in fields.json()["detail"]
    other = api.post("/v1/banks/uploads", headers=AUTH, data={"note": "x"},
                     files=[("files", ("a.md", PROSE)), ("files", ("b.md", PROSE))])
    assert other.status_code == 422 and "only files" in other.json()["detail"]
    bad_name = api.post("/v1/banks/..", headers=AUTH, files=[("files", ("a.md", PROSE))])
    assert bad_name.status_code in (404, 422)  # `..` is resolved by the client or refused by the name rule
    assert api.post("/v1/banks/-x", headers=AUTH, files=[("files", ("a.md", PROSE))]).status_code == 422
    missing = api.post("/v1/banks/nothing-here", params={"add": "true"}, headers=AUTH, files=[("files", ("a.md", PROSE))])
    assert missing.status_code == 404 and "no bank named 'nothing-here'" in missing.json()["detail"]
    exists = api.post("/v1/banks/default", headers=AUTH, files=[("files", ("a.md", PROSE))])
    assert exists.status_code == 409 and "replace=true" in exists.json()["detail"]
    both = api.post("/v1/banks/x", params={"add": "true", "replace": "true"}, headers=AUTH, files=[("files", ("a.md", PROSE))])
    assert both.status_code == 422
    assert api.post("/v1/banks/x", params={"index": "bogus"}, headers=AUTH, files=[("files", ("a.md", PROSE))]).status_code == 422
    assert snapshot(root) == before


def test_every_bank_route_needs_the_token(client) -> None:
    api, root = client
    before = snapshot(root)
    for method, path in (("GET", "/v1/banks"), ("GET", "/v1/banks/default"), ("DELETE", "/v1/banks/default"),
                         ("GET", f"/v1/banks/default/builds/{'0' * 32}")):
        assert api.request(method, path).status_code == 401, path
        assert api.request(method, path, headers={"Authorization": "Bearer wrong"}).status_code == 401, path
    assert api.post("/v1/banks/fresh", files=[("files", ("a.md", PROSE))]).status_code == 401
    assert api.get("/dashboard/banks", follow_redirects=False).status_code == 303  # to the login form
    assert snapshot(root) == before
    assert api.get("/v1/banks", headers=AUTH).json()["banks"][0]["name"] == "default"


def test_unknown_banks_and_builds_are_404_and_builtin_banks_stay(client) -> None:
    api, _ = client
    assert api.get("/v1/banks/nope", headers=AUTH).status_code == 404
    assert api.delete("/v1/banks/nope", headers=AUTH).status_code == 404
    assert api.get("/v1/banks/default/builds/not-an-id", headers=AUTH).status_code == 404
    assert api.get(f"/v1/banks/default/builds/{'a' * 32}", headers=AUTH).status_code == 404
    removed = api.delete("/v1/banks/default", headers=AUTH)
    assert removed.status_code == 409 and "built in" in removed.json()["detail"]
    detail = api.get("/v1/banks/default", headers=AUTH).json()
    assert detail["builtin"] and detail["kept"][0]["current"] and detail["kept"][0]["version"] == detail["version"]


def test_a_build_of_a_bank_being_built_is_refused_and_a_dead_build_reads_failed(client, broker_url) -> None:
    import redis

    from cubeqa.api.bank_builds import ACTIVE, LOST, RECORD

    api, root = client
    broker = redis.Redis.from_url(broker_url)
    build_id = "b" * 32
    record = {"id": build_id, "bank": "held", "state": "running", "stage": "embed", "done": "10", "total": "40",
              "files": '["a.md"]', "version": "", "sentences": "", "notes": "[]", "error": "", "created_at": "x",
              "finished_at": ""}
    broker.hset(RECORD.format(build_id), mapping=record)
    broker.set(ACTIVE.format("held"), build_id, ex=30)  # as another API process holds it while building
    before = snapshot(root)
    refused = api.post("/v1/banks/held", headers=AUTH, files=[("files", ("a.md", PROSE))])
    assert refused.status_code == 409 and build_id in refused.json()["detail"]
    assert api.delete("/v1/banks/held", headers=AUTH).status_code == 409
    running = api.get(f"/v1/banks/held/builds/{build_id}", headers=AUTH).json()
    assert (running["state"], running["stage"], running["done"], running["total"]) == ("running", "embed", 10, 40)
    assert api.get(f"/v1/banks/other/builds/{build_id}", headers=AUTH).status_code == 404  # another bank's build
    broker.delete(ACTIVE.format("held"))  # its process died: the lease lapsed
    lost = api.get(f"/v1/banks/held/builds/{build_id}", headers=AUTH).json()
    assert (lost["state"], lost["error"]) == ("failed", LOST)
    assert snapshot(root) == before
