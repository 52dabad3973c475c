"""The checks an uploaded document passes before a bank build (cubeqa.api.uploads), on files in a temporary folder."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from cubeqa.api.bank_schemas import UPLOAD_SUFFIXES
from cubeqa.api.uploads import UploadRefused, check_content, check_file_name
from pipeline.knowledge.documents import SUFFIXES


def test_the_upload_suffixes_are_the_readers() -> None:
    assert sorted(UPLOAD_SUFFIXES) == sorted(SUFFIXES)


@pytest.mark.parametrize("name", ["guide.md", "Guide Book (v2).PDF", "notes.txt", "ünïcode.rst", "a.b.c.jsonl"])
def test_plain_names_of_supported_types_pass(name: str) -> None:
    assert check_file_name(name) == name


@pytest.mark.parametrize(("name", "status"), [
    ("", 422), (None, 422), ("../a.md", 422), ("a/b.md", 422), ("a\\b.md", 422), (".hidden.md", 422), ("..", 422),
    ("tab\there.md", 422), ("x" * 300 + ".md", 422), ("a.exe", 415), ("Makefile", 415), ("a.md.zip", 415),
])
def test_other_names_are_refused(name: str | None, status: int) -> None:
    with pytest.raises(UploadRefused) as refused:
        check_file_name(name)
    assert refused.value.status == status


def test_text_must_be_utf8_throughout(tmp_path: Path) -> None:
    good = tmp_path / "good.md"
    good.write_bytes("é".encode() * 600_000)  # a two-byte character across the 1 MiB chunk boundary
    check_content(good, 1024)
    late = tmp_path / "late.txt"
    late.write_bytes(b"a" * 2_000_000 + b"\xff")
    with pytest.raises(UploadRefused, match="not UTF-8 text at byte 2,000,000"):
        check_content(late, 1024)
    cut = tmp_path / "cut.txt"
    cut.write_bytes("é".encode()[:1])
    with pytest.raises(UploadRefused, match="ends inside a character"):
        check_content(cut, 1024)


def test_a_docx_within_the_limits_passes(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", b"<w:document>" + b"<w:p>text</w:p>" * 1000 + b"</w:document>")
    path = tmp_path / "ok.docx"
    path.write_bytes(buffer.getvalue())
    check_content(path, 1 << 20)
    with pytest.raises(UploadRefused, match="more than the limit"):
        check_content(path, 1024)
