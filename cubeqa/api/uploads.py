"""Documents uploaded for a bank build, checked and staged before anything is built.

Each file needs a plain name (no folder, not hidden) of a supported type; text formats must be UTF-8 without NUL
bytes (no binary posing as .md), a PDF must start as one, and a .docx must be a zip archive that unpacks to at most
the limit (no zip bombs). A refusal is an `UploadRefused` carrying the HTTP status and one line naming the file.
"""

from __future__ import annotations

import codecs
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path

from starlette.datastructures import UploadFile

from cubeqa.api.bank_schemas import UPLOAD_SUFFIXES

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst", ".rest", ".html", ".htm", ".jsonl", ".csv"}
MAX_NAME_BYTES = 255  # the longest file name most file systems store
MAX_RATIO = 200  # unpacked/packed size of a large .docx member beyond which it is a zip bomb whatever the limit
CHUNK = 1 << 20  # bytes copied and checked at a time


class UploadRefused(Exception):
    """An upload refused before anything is built: the HTTP status and the reason."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def check_file_name(name: str | None) -> str:
    """The multipart file name, if it is a plain name of a supported type (422 or 415 otherwise)."""
    if not name:
        raise UploadRefused(422, "an uploaded file has no file name")
    if "/" in name or "\\" in name or name.startswith(".") or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise UploadRefused(422, f"file name {name!r} is not allowed: give the name alone, without folders, not hidden, "
                                 "without control characters")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise UploadRefused(422, f"file name {name[:40]!r}... is longer than {MAX_NAME_BYTES} bytes")
    suffix = Path(name).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise UploadRefused(415, f"{name}: unsupported file type {suffix or '(none)'!r}; supported: {', '.join(UPLOAD_SUFFIXES)}")
    return name


def stage_uploads(uploads: Sequence[UploadFile], staging: Path, max_unpacked: int) -> list[str]:
    """Copies each upload into `staging` under its checked name and checks its content; the names in order."""
    if not uploads:
        raise UploadRefused(422, "no files: send the documents as multipart form fields named 'files'")
    names: list[str] = []
    for upload in uploads:
        name = check_file_name(upload.filename)
        if name in names:
            raise UploadRefused(422, f"file name {name!r} is given twice")
        target = staging / name
        upload.file.seek(0)
        with target.open("wb") as out:
            shutil.copyfileobj(upload.file, out, CHUNK)
        check_content(target, max_unpacked)
        names.append(name)
    return names


def check_content(path: Path, max_unpacked: int) -> None:
    """Refuses an empty file, binary content in a text format, a PDF that is none, a .docx that is no zip or a bomb."""
    if path.stat().st_size == 0:
        raise UploadRefused(422, f"{path.name} is empty")
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        check_text(path)
    elif suffix == ".pdf":
        with path.open("rb") as handle:
            if not handle.read(1024).lstrip().startswith(b"%PDF-"):
                raise UploadRefused(415, f"{path.name} is not a PDF file (no %PDF- header)")
    elif suffix == ".docx":
        check_docx(path, max_unpacked)


def check_text(path: Path) -> None:
    """UTF-8 text without NUL bytes, read a chunk at a time."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            if b"\x00" in chunk:
                raise UploadRefused(415, f"{path.name} is a binary file, not {path.suffix} text (it holds NUL bytes)")
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                raise UploadRefused(415, f"{path.name}: not UTF-8 text at byte {offset + exc.start:,}; save it as UTF-8") from exc
            offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise UploadRefused(415, f"{path.name}: not UTF-8 text (it ends inside a character)") from exc


def check_docx(path: Path, max_unpacked: int) -> None:
    """A zip archive holding word/document.xml whose members' sizes, as declared (and enforced when reading), stay
    within `max_unpacked` bytes in all and `MAX_RATIO` times their packed size each."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise UploadRefused(415, f"{path.name} is not a .docx file (not a zip archive: {exc})") from exc
    for member in members:
        if member.file_size > CHUNK and member.file_size > MAX_RATIO * max(member.compress_size, 1):
            raise UploadRefused(413, f"{path.name}: {member.filename} unpacks {member.file_size // max(member.compress_size, 1):,}"
                                     f" times its packed size (a zip bomb?); refused")
    unpacked = sum(m.file_size for m in members)
    if unpacked > max_unpacked:
        raise UploadRefused(413, f"{path.name} unpacks to {unpacked:,} bytes, more than the limit of {max_unpacked:,}")
    if "word/document.xml" not in {m.filename for m in members}:
        raise UploadRefused(415, f"{path.name} is not a .docx file (no word/document.xml in the archive)")
