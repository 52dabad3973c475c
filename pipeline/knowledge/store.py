"""Versioned knowledge banks under one root directory (a volume every decode worker can read).

    root/NAME/
      CURRENT                  the current version's id (replaced atomically with os.replace)
      .lock                    flock'ed by a build, add or removal of NAME
      .build-<pid>-<random>/   a version being written; renamed into versions/ when complete
      versions/VERSION/        see bankfiles.py (sentences, vectors, FAISS index, BM25 index, manifest)

A version is built in a temporary directory, renamed into versions/, and only then does CURRENT
switch, so a killed build leaves the previous version serving; the next build removes its
leftovers. The last `keep_versions` versions stay for jobs pinned to them. Built-in banks
(read-only directories shipped with the package) answer for names the root does not hold.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.encoder import EncoderIdentity
from pipeline.errors import BankBusy, BankError, BankExists, BankNotFound, IncompatibleBank, InputError
from pipeline.knowledge import bankfiles as files
from pipeline.knowledge.bankfiles import LoadedBank
from pipeline.knowledge.cache import EmbeddingCache, text_digest
from pipeline.knowledge.documents import ReadReport, Sentence, bank_sentences, read_documents
from pipeline.knowledge.index import IndexKind, build_index, choose_index
from pipeline.knowledge.lexical import LexicalIndex
from pipeline.knowledge.provenance import Provenance

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
Embed = Callable[[list[str]], np.ndarray]
Progress = Callable[[str, int, int], None]  # (stage: read|embed|index|write, done, total; 0 when unknown)
EMBED_BATCH = 1024  # sentences per `embed` call and per cache chunk
KEEP_VERSIONS = 3


@dataclass(frozen=True)
class BankInfo:
    """What `infos` and `show` tell about a bank's current version."""

    name: str
    version: str
    versions: tuple[str, ...]
    sentences: int
    documents: int
    size_bytes: int
    encoder: dict[str, Any]
    index: dict[str, Any]
    built_at: str
    sources: tuple[str, ...]
    samples: tuple[str, ...] = ()
    builtin: bool = False
    path: str = ""
    problem: str | None = None  # set by `infos` for a bank it cannot read
    notes: tuple[str, ...] = ()  # set by `build` and `add`: unsupported files, readers' hints, files skipped
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in self.__dataclass_fields__ if k != "extra"}, **self.extra,
                "versions": list(self.versions), "sources": list(self.sources), "samples": list(self.samples)}


@dataclass(frozen=True)
class VersionInfo:
    """One kept version of a bank, as `versions` lists it."""

    version: str
    current: bool
    sentences: int
    documents: int
    size_bytes: int
    built_at: str
    parent: str | None = None  # the version `add` extended; None for a build


def check_name(name: str) -> str:
    """A bank name: letters, digits, '_', '.', '-' (first a letter or digit), at most 64; no path characters."""
    if not isinstance(name, str) or not NAME.match(name) or name in (".", ".."):
        raise InputError(f"bank name {name!r} is not allowed: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
    return name


class BankStore:
    """Builds, lists, resolves and loads the banks under `root` (plus read-only `builtin` banks)."""

    def __init__(self, root: Path | str, builtin: Mapping[str, Path] | None = None, keep_versions: int = KEEP_VERSIONS) -> None:
        self.root = Path(root)
        self.builtin = {name: Path(path) for name, path in (builtin or {}).items()}
        self.keep_versions = max(1, keep_versions)

    # ---- reading

    def _bank_dir(self, name: str) -> tuple[Path, bool]:
        """(directory, is built-in) of a bank that has a current version."""
        check_name(name)
        own = self.root / name
        if (own / "CURRENT").is_file():
            return own, False
        if name in self.builtin and (self.builtin[name] / "CURRENT").is_file():
            return self.builtin[name], True
        raise BankNotFound(f"no bank named {name!r} in {self.root}")

    def resolve(self, name: str) -> str:
        """The current version of bank `name`."""
        directory, _ = self._bank_dir(name)
        return (directory / "CURRENT").read_text(encoding="utf-8").strip()

    def load(self, name: str, version: str | None = None, *, encoder_identity: EncoderIdentity) -> LoadedBank:
        """Bank `name` at `version` (None: the current one), refusing another encoder's bank."""
        try:
            directory, builtin = self._bank_dir(name)
        except BankNotFound as exc:
            if version is None:
                raise
            raise BankNotFound(f"bank {name!r} (version {version}) no longer exists in {self.root}: it was removed") from exc
        version = version or self.resolve(name)
        vdir = directory / "versions" / version
        if not re.fullmatch(r"[0-9a-f]{1,64}", version) or not (vdir / files.MANIFEST).is_file():
            raise BankNotFound(f"bank {name!r} has no version {version!r} (removed or never built); its current version is {self.resolve(name)}")
        return files.load_version(name, vdir, encoder_identity, trusted=builtin)

    def show(self, name: str, samples: int = 5) -> BankInfo:
        """Counts, version, size on disk, encoder, index and sample sentences of a bank's current version."""
        directory, builtin = self._bank_dir(name)
        version = self.resolve(name)
        vdir = directory / "versions" / version
        manifest = files.read_manifest(vdir)
        texts: list[str] = []
        with open(vdir / files.SENTENCES, encoding="utf-8") as handle:
            for _, line in zip(range(samples), handle):
                texts.append(json.loads(line)["text"])
        size = _version_size(vdir, manifest, builtin)
        versions = tuple(sorted((p.name for p in (directory / "versions").iterdir() if (p / files.MANIFEST).is_file()), key=lambda v: (v != version, v)))
        return BankInfo(
            name=name, version=version, versions=versions, sentences=int(manifest["sentences"]), documents=int(manifest["documents"]),
            size_bytes=size, encoder=dict(manifest["encoder"]), index=dict(manifest["index"]), built_at=str(manifest["built_at"]),
            sources=tuple(manifest.get("sources", ())), samples=tuple(texts), builtin=builtin, path=str(vdir),
            extra={"build_seconds": manifest.get("build_seconds"), "content_hash": manifest.get("content_hash")},
        )

    def versions(self, name: str) -> list[VersionInfo]:
        """Every kept version of bank `name`, newest first, with its counts, size on disk and build time."""
        directory, builtin = self._bank_dir(name)
        current = self.resolve(name)
        kept = []
        for vdir in (directory / "versions").iterdir():
            if not (vdir / files.MANIFEST).is_file():
                continue  # a version being pruned or never completed
            manifest = files.read_manifest(vdir)
            kept.append(VersionInfo(
                version=vdir.name, current=vdir.name == current, sentences=int(manifest["sentences"]),
                documents=int(manifest["documents"]), size_bytes=_version_size(vdir, manifest, builtin),
                built_at=str(manifest["built_at"]), parent=manifest.get("parent"),
            ))
        return sorted(kept, key=lambda v: v.built_at, reverse=True)

    def infos(self) -> list[BankInfo]:
        """Every bank with a current version, by name (own banks shadow built-in ones of the same name)."""
        names = set(self.builtin)
        if self.root.is_dir():
            names |= {p.name for p in self.root.iterdir() if NAME.match(p.name) and (p / "CURRENT").is_file()}
        infos = []
        for name in sorted(names):
            try:
                infos.append(self.show(name, samples=0))
            except BankNotFound:
                continue
            except (BankError, OSError, KeyError, ValueError) as exc:  # one broken bank must not hide the others
                infos.append(BankInfo(name=name, version="", versions=(), sentences=0, documents=0, size_bytes=0, encoder={},
                                      index={}, built_at="", sources=(), problem=f"{type(exc).__name__}: {exc}"))
        return infos

    # ---- writing

    @contextmanager
    def _locked(self, name: str) -> Iterator[Path]:
        """Holds root/NAME/.lock (flock, released by the kernel even on SIGKILL); a second holder is refused."""
        directory = self.root / check_name(name)
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        owner = False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
                raise BankBusy(f"bank {name!r} is being built, added to or removed by another process (pid {holder}); try again when it finishes") from exc
            owner = True
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            yield directory
        finally:
            if owner and not (directory / "CURRENT").is_file():  # a failed first build leaves no empty bank folder
                shutil.rmtree(directory, ignore_errors=True)  # while the lock is held: no other writer is inside
            os.close(fd)

    def build(
        self, name: str, paths: Sequence[Path | str], *, embed: Embed, encoder_identity: EncoderIdentity, replace: bool = False,
        kind: IndexKind | None = None, index_params: dict[str, Any] | None = None, split: bool = True,
        cache_dir: Path | None = None, progress: Progress | None = None, skip_bad: bool = False,
    ) -> BankInfo:
        """A new bank (or, with `replace`, a new version) from files and folders; `skip_bad` leaves out unreadable files."""
        with self._locked(name):
            exists = self._has_current(name)
            if exists and not replace:
                raise BankExists(f"bank {name!r} already exists; use --replace to rebuild it or add to extend it")
            sentences, report = self._read(paths, split, progress, skip_bad=skip_bad)
            request = {"kind": kind, "params": index_params}
            info = self._commit(name, sentences, embed, encoder_identity, request, [str(Path(p).resolve()) for p in paths],
                                split, cache_dir, progress, reuse=self._previous(name, encoder_identity) if exists else None)
            return dataclasses.replace(info, notes=tuple(report.notes()))

    def add(
        self, name: str, paths: Sequence[Path | str], *, embed: Embed, encoder_identity: EncoderIdentity,
        kind: IndexKind | None = None, index_params: dict[str, Any] | None = None, split: bool = True,
        cache_dir: Path | None = None, progress: Progress | None = None, skip_bad: bool = False,
    ) -> BankInfo:
        """A new version of bank `name`: its sentences plus those of `paths` (exact duplicates dropped)."""
        with self._locked(name):
            if not self._has_current(name):
                raise BankNotFound(f"no bank named {name!r} in {self.root}; build it first")
            previous = self._previous(name, encoder_identity)
            if previous is None:
                raise IncompatibleBank(f"bank {name!r} was embedded with another encoder than the running one; rebuild it with --replace")
            old = [json.loads(line) for line in previous[2]]
            old_sentences = [Sentence(r["text"], Provenance.from_dict(r["provenance"])) for r in old]
            new, report = self._read(paths, split, progress, seen={s.text for s in old_sentences}, skip_bad=skip_bad)
            if not new:
                raise InputError(f"every sentence of {', '.join(map(str, paths))} is already in bank {name!r}")
            manifest = previous[3]
            request = {"kind": kind, "params": index_params} if kind or index_params else manifest.get("index_request", {})
            sources = [*manifest.get("sources", ()), *(str(Path(p).resolve()) for p in paths)]
            info = self._commit(name, old_sentences + new, embed, encoder_identity, request, sources, split, cache_dir, progress,
                                reuse=previous, parent=manifest["version"])
            return dataclasses.replace(info, notes=tuple(report.notes()))

    def texts_to_embed(self, name: str, paths: Sequence[Path | str], *, encoder_identity: EncoderIdentity, split: bool = True,
                       skip_bad: bool = False) -> list[str]:
        """Texts a build or add of `paths` into bank `name` must embed: its sentences minus those the current version holds."""
        previous = self._previous(name, encoder_identity) if self._has_current(name) else None
        seen = {json.loads(line)["text"] for line in previous[2]} if previous else None
        return [s.text for s in self._read(paths, split, None, seen=seen, skip_bad=skip_bad)[0]]

    def remove(self, name: str) -> None:
        """Removes bank `name` and all its versions (a built-in bank cannot be removed)."""
        directory = self.root / check_name(name)
        for stale in self.root.glob(".removed-*"):  # a removal killed mid-way
            shutil.rmtree(stale, ignore_errors=True)
        if not directory.is_dir():
            if name in self.builtin:
                raise BankError(f"bank {name!r} is built in and cannot be removed")
            raise BankNotFound(f"no bank named {name!r} in {self.root}")
        with self._locked(name):
            trash = self.root / f".removed-{name}-{secrets.token_hex(4)}"
            os.rename(directory, trash)  # readers now see no bank at all, never half of one
        shutil.rmtree(trash, ignore_errors=True)

    # ---- internals

    def _has_current(self, name: str) -> bool:
        try:
            self._bank_dir(name)
        except BankNotFound:
            return False
        return True

    def _previous(self, name: str, encoder: EncoderIdentity) -> tuple[Path, bool, list[str], dict[str, Any]] | None:
        """(version dir, built-in, sentence lines, manifest) of the current version, when embedded by `encoder`."""
        directory, builtin = self._bank_dir(name)
        vdir = directory / "versions" / self.resolve(name)
        manifest = files.read_manifest(vdir)
        if not EncoderIdentity.from_dict(manifest["encoder"]).same_model(encoder):
            return None
        lines = (vdir / files.SENTENCES).read_text(encoding="utf-8").splitlines()
        return vdir, builtin, lines, manifest

    def _read(
        self, paths: Sequence[Path | str], split: bool, progress: Progress | None, seen: set[str] | None = None, skip_bad: bool = False,
    ) -> tuple[list[Sentence], ReadReport]:
        """The sentences of `paths` not in `seen`, and what the read left out or noticed."""
        if not paths:
            raise InputError("no files or folders given")
        sentences: list[Sentence] = []
        report = ReadReport()
        for sentence in bank_sentences(read_documents(paths, split=split, skip_bad=skip_bad, report=report), seen=seen):
            sentences.append(sentence)
            if progress and len(sentences) % 1000 == 0:
                progress("read", len(sentences), 0)
        if progress:
            progress("read", len(sentences), len(sentences))
        if not sentences and seen is None:
            raise InputError(f"no sentences in {', '.join(map(str, paths))}")
        return sentences, report

    def _commit(
        self, name: str, sentences: list[Sentence], embed: Embed, encoder: EncoderIdentity, request: dict[str, Any],
        sources: list[str], split: bool, cache_dir: Path | None, progress: Progress | None,
        reuse: tuple[Path, bool, list[str], dict[str, Any]] | None, parent: str | None = None,
    ) -> BankInfo:
        """Embeds, indexes and writes a version in a temporary directory, renames it into place, switches CURRENT."""
        started = time.perf_counter()
        directory = self.root / name
        for stale in [*directory.glob(".build-*"), *directory.glob(".CURRENT.*.tmp")]:  # a killed build's: we hold the lock
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        lines = [files.sentence_line(s) for s in sentences]
        try:
            spec = choose_index(len(lines), request.get("kind"), request.get("params"))
        except ValueError as exc:
            raise InputError(str(exc)) from exc
        content = files.content_hash(lines)
        version = files.version_id(content, encoder, spec)
        final = directory / "versions" / version
        if not (final / files.MANIFEST).is_file():
            vectors = embed_sentences([s.text for s in sentences], embed, encoder, cache_dir, progress, reuse)
            index = build_index(vectors, spec, _index_progress(progress, len(vectors))) if spec.kind != "flat" else None
            lexical = LexicalIndex.of_sentences(sentences)
            temp = directory / f".build-{os.getpid()}-{secrets.token_hex(4)}"
            temp.mkdir(parents=True)
            manifest = {
                "format_version": files.FORMAT_VERSION, "name": name, "version": version, "parent": parent,
                "encoder": encoder.to_dict(), "sentences": len(lines), "documents": len({s.provenance.doc_id for s in sentences}),
                "content_hash": content, "index": {**spec.to_dict(), "file": files.INDEX if index is not None else None},
                "index_request": request, "split": split, "sources": sources,
                "files": {"sentences": files.SENTENCES, "vectors": files.VECTORS},
                "built_at": datetime.now(UTC).isoformat(timespec="microseconds"), "build_seconds": round(time.perf_counter() - started, 3),
            }
            files.write_version(temp, lines, vectors, index, manifest, progress, lexical)
            final.parent.mkdir(exist_ok=True)
            if (final / files.MANIFEST).is_file():
                shutil.rmtree(temp)
            else:
                shutil.rmtree(final, ignore_errors=True)  # a partial directory of the same version (never renamed complete)
                os.rename(temp, final)
        current = directory / "CURRENT"
        temp_current = directory / f".CURRENT.{os.getpid()}.tmp"
        temp_current.write_text(version + "\n", encoding="utf-8")
        os.replace(temp_current, current)
        self._prune(directory, version)
        return self.show(name)

    def _prune(self, directory: Path, current: str) -> None:
        """Keeps the newest `keep_versions` versions (the current one always)."""
        dated = []
        for vdir in (directory / "versions").iterdir():
            try:
                built = files.read_manifest(vdir).get("built_at", "")
            except BankError:
                built = ""
            dated.append((vdir.name == current, built, vdir))
        dated.sort(key=lambda item: (item[0], item[1]), reverse=True)
        for _, _, vdir in dated[self.keep_versions :]:
            shutil.rmtree(vdir, ignore_errors=True)


def _version_size(vdir: Path, manifest: dict[str, Any], builtin: bool) -> int:
    """Bytes on disk of a version: its files, and its vectors when they live outside it (a built-in bank)."""
    size = sum(p.stat().st_size for p in vdir.iterdir() if p.is_file())
    external = files.vectors_path(vdir, manifest, trusted=builtin)
    if external.parent != vdir.resolve() and external.is_file():
        size += external.stat().st_size
    return size


def _index_progress(progress: Progress | None, total: int) -> Callable[[int], None] | None:
    if progress is None:
        return None
    done = [0]

    def step(count: int) -> None:
        done[0] += count
        progress("index", done[0], total)

    return step


def embed_sentences(
    texts: list[str], embed: Embed, encoder: EncoderIdentity, cache_dir: Path | None, progress: Progress | None,
    reuse: tuple[Path, bool, list[str], dict[str, Any]] | None = None,
) -> np.ndarray:
    """(N, D) vectors: reused from the previous version and the cache where the text matches, the rest embedded in batches."""
    vectors = np.empty((len(texts), encoder.dim), np.float32)
    have = np.zeros(len(texts), bool)
    if reuse is not None:
        vdir, builtin, lines, manifest = reuse
        row_of = {json.loads(line)["text"]: row for row, line in enumerate(lines)}
        hits = [(i, row_of[t]) for i, t in enumerate(texts) if t in row_of]
        if hits:
            old = files.read_vectors(vdir, manifest, trusted=builtin)
            new_rows, old_rows = map(list, zip(*hits))
            vectors[new_rows] = old[old_rows]
            have[new_rows] = True
    cache = EmbeddingCache(cache_dir, encoder)
    digests = [text_digest(t) for t in texts]
    missing = np.flatnonzero(~have)
    for position, vector in cache.lookup([digests[i] for i in missing]).items():
        vectors[missing[position]] = vector
        have[missing[position]] = True
    todo = np.flatnonzero(~have)
    done = len(texts) - len(todo)
    if progress:
        progress("embed", done, len(texts))
    for start in range(0, len(todo), EMBED_BATCH):
        rows = todo[start : start + EMBED_BATCH]
        batch = np.asarray(embed([texts[i] for i in rows]), dtype=np.float32)
        check_vectors(batch, len(rows), encoder.dim)
        vectors[rows] = batch
        cache.put([digests[i] for i in rows], batch)
        done += len(rows)
        if progress:
            progress("embed", done, len(texts))
    return vectors


def check_vectors(batch: np.ndarray, count: int, dim: int) -> None:
    """`embed` must return (count, dim) finite unit vectors."""
    if batch.shape != (count, dim):
        raise BankError(f"embed returned vectors of shape {batch.shape} for {count} sentences; expected ({count}, {dim})")
    norms = np.linalg.norm(batch, axis=1)
    if not np.all(np.isfinite(norms)) or np.any(np.abs(norms - 1) > 1e-3):
        raise BankError("embed returned vectors that are not finite unit vectors; the bank searches by inner product")
