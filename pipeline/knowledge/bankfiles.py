"""One bank version on disk: writing its files, reading them back as a searchable `LoadedBank`.

    VERSION/
      manifest.json        format version, name, version, encoder identity, counts, content hash,
                           index kind + parameters, build time, source paths, file names
      sentences.jsonl      {"text": ..., "provenance": {...}} per row, in row order
      vectors.safetensors  "vectors" (N, D) float32 unit embeddings, row order
      index.faiss          the FAISS index (HNSW, IVF-PQ); none for a flat index, which is the vectors
      lexical.safetensors  the BM25 index (pipeline.knowledge.lexical), with lexical.json its vocabulary

A flat index is rebuilt from the vectors at load (a copy, milliseconds) instead of being stored:
on disk it would be the vectors a second time. A version written before banks held a lexical index
loads dense-only, with a warning: rebuilding it (`cubeqa bank build --replace`) adds the index.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from pipeline.encoder import EncoderIdentity
from pipeline.errors import BankCorrupt, IncompatibleBank, InputError
from pipeline.knowledge.documents import Sentence
from pipeline.knowledge.fusion import Fusion, Hits, Ranking, hybrid
from pipeline.knowledge.index import IndexSpec, build_index, load_index, save_index
from pipeline.knowledge.lexical import PARAMS as LEXICAL_PARAMS
from pipeline.knowledge.lexical import LexicalIndex
from pipeline.knowledge.provenance import Provenance

if TYPE_CHECKING:
    import faiss

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SENTENCES = "sentences.jsonl"
VECTORS = "vectors.safetensors"
INDEX = "index.faiss"
log = logging.getLogger(__name__)


def sentence_line(sentence: Sentence) -> str:
    """A sentence's JSONL line; provenance fields at their defaults are left out."""
    prov = {k: v for k, v in sentence.provenance.to_dict().items() if k == "doc_id" or v not in (None, [], 0)}
    return json.dumps({"text": sentence.text, "provenance": prov}, ensure_ascii=False)


def content_hash(lines: Iterable[str]) -> str:
    """sha256 of the sentence lines (text and provenance), in order."""
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def version_id(content: str, encoder: EncoderIdentity, spec: IndexSpec) -> str:
    """A version: the content hash with the encoder's weights, the index and the lexical index's parameters (all change
    what a search returns)."""
    key = json.dumps([content, encoder.weights_hash, encoder.dim, spec.to_dict(), LEXICAL_PARAMS], sort_keys=True)
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_version(
    directory: Path, lines: Sequence[str], vectors: np.ndarray | None, index: faiss.Index | None,
    manifest: dict[str, Any], progress: Callable[[str, int, int], None] | None = None,
    lexical: LexicalIndex | None = None,
) -> None:
    """Writes a version's files into an existing (temporary) directory; the manifest last, naming the lexical index's
    files with their sha256."""
    with open(directory / SENTENCES, "w", encoding="utf-8") as handle:
        for line in lines:
            handle.write(line + "\n")
    if vectors is not None:
        save_file({"vectors": np.ascontiguousarray(vectors, dtype=np.float32)}, str(directory / VECTORS), metadata={"format_version": str(FORMAT_VERSION)})
    if index is not None:
        save_index(index, directory / INDEX)
    if lexical is not None:
        lexical.save(directory)
        files = manifest.setdefault("files", {})
        files["lexical"] = {name: file_sha256(directory / name) for name in lexical.files()}
        files["lexical_params"] = dict(lexical.params)
    for path in directory.iterdir():
        path.chmod(0o644)  # safetensors writes 0600; every decode worker on the shared volume reads these
    if progress:
        progress("write", len(lines), len(lines))
    write_json(directory / MANIFEST, manifest)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """A JSON file written to a temporary name and renamed, so readers see the old file or the new one."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(temp, path)


def read_manifest(directory: Path) -> dict[str, Any]:
    """A version's manifest, checked for its format version."""
    path = directory / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BankCorrupt(f"{directory} is not a bank version: {MANIFEST} is missing") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BankCorrupt(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        raise BankCorrupt(f"{path} has bank format {data.get('format_version') if isinstance(data, dict) else None!r}; this code reads format {FORMAT_VERSION}")
    return data


def vectors_path(directory: Path, manifest: dict[str, Any], trusted: bool) -> Path:
    """The vectors file; only a trusted (built-in) bank may name a file outside its own directory."""
    name = manifest.get("files", {}).get("vectors", VECTORS)
    if not trusted and (Path(name).name != name or name in ("", ".", "..")):
        raise BankCorrupt(f"{directory / MANIFEST} names vectors file {name!r} outside its directory")
    return (directory / name).resolve()


def read_vectors(directory: Path, manifest: dict[str, Any], trusted: bool = False) -> np.ndarray:
    """The (N, D) vectors of a version, checked against the manifest (and its recorded sha256 when it has one)."""
    path = vectors_path(directory, manifest, trusted)
    expected = manifest.get("files", {}).get("vectors_sha256")
    if expected and file_sha256(path) != expected:
        raise BankCorrupt(f"{path} changed since bank {manifest['name']!r} version {manifest['version']} was made (sha256 differs); rebuild the bank")
    try:
        vectors = load_file(str(path))["vectors"]
    except (SafetensorError, OSError, KeyError) as exc:
        raise BankCorrupt(f"cannot read the vectors of bank {manifest['name']!r} version {manifest['version']} from {path}: {exc!r}") from exc
    shape = (int(manifest["sentences"]), int(manifest["encoder"]["dim"]))
    if vectors.shape != shape or vectors.dtype != np.float32:
        raise BankCorrupt(f"{path} holds {vectors.dtype} {vectors.shape} vectors; the manifest says float32 {shape}")
    return vectors


def read_sentence_lines(directory: Path) -> tuple[list[str], np.ndarray]:
    """(texts, byte offsets (N + 1,) of each line) of `sentences.jsonl`."""
    texts: list[str] = []
    offsets = [0]
    try:
        with open(directory / SENTENCES, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    texts.append(json.loads(raw)["text"])
                except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
                    raise BankCorrupt(f"{directory / SENTENCES}:{number}: not a sentence record ({exc})") from exc
                offsets.append(offsets[-1] + len(raw))
    except FileNotFoundError as exc:
        raise BankCorrupt(f"{directory} has no {SENTENCES}") from exc
    return texts, np.asarray(offsets, dtype=np.int64)


@dataclass(eq=False)
class LoadedBank:
    """A bank version in memory: texts, vectors and index; provenance read from disk row by row."""

    name: str
    version: str
    path: Path
    manifest: dict[str, Any]
    texts: list[str]
    spec: IndexSpec
    index: faiss.Index
    _offsets: np.ndarray = field(repr=False)
    _vectors: np.ndarray | None = field(default=None, repr=False)
    _vectors_loader: Callable[[], np.ndarray] | None = field(default=None, repr=False)
    _handle: Any = field(default=None, repr=False)
    lexical: LexicalIndex | None = None  # None: a version written before banks held one (dense search only)

    def __post_init__(self) -> None:
        # kept open: a version removed while this process serves it stays readable (POSIX unlink semantics)
        self._handle = open(self.path / SENTENCES, "rb")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def encoder(self) -> EncoderIdentity:
        return EncoderIdentity.from_dict(self.manifest["encoder"])

    @property
    def vectors(self) -> np.ndarray:
        """(N, D) float32 unit vectors, row order (for flat and HNSW indexes a view of the index's own copy)."""
        if self._vectors is None and self._vectors_loader is not None:
            self._vectors = self._vectors_loader()
        assert self._vectors is not None
        return self._vectors

    def provenance(self, row: int) -> Provenance:
        """Where row `row`'s sentence comes from."""
        if not 0 <= row < len(self.texts):
            raise IndexError(f"bank {self.name!r} has rows 0..{len(self.texts) - 1}, not {row}")
        start, end = int(self._offsets[row]), int(self._offsets[row + 1])
        record = json.loads(os.pread(self._handle.fileno(), end - start, start))
        return Provenance.from_dict(record["provenance"])

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores (N, k), rows (N, k)) by inner product for unit queries (N, D); k is cut to the bank's size."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        dim = int(self.manifest["encoder"]["dim"])
        if queries.ndim != 2 or queries.shape[1] != dim:
            raise InputError(f"queries must be (N, {dim}), got {queries.shape}")
        return self.index.search(queries, max(1, min(int(k), len(self.texts))))

    def hybrid(
        self, queries: np.ndarray, texts: Sequence[str] | None, k: int, fusion: Fusion, ranking: Ranking = "fused"
    ) -> Hits:
        """Fused top-k (pipeline.knowledge.fusion) for unit queries and their questions; dense alone without texts."""
        dim = int(self.manifest["encoder"]["dim"])
        if np.ndim(queries) != 2 or np.shape(queries)[1] != dim:
            raise InputError(f"queries must be (N, {dim}), got {np.shape(queries)}")
        return hybrid(self, queries, texts, k, fusion, ranking)

    @property
    def nbytes(self) -> int:
        """Approximate memory held: vectors (or codes), graph, texts and row offsets."""
        n, dim = len(self.texts), int(self.manifest["encoder"]["dim"])
        size = self._offsets.nbytes + sys.getsizeof(self.texts) + sum(sys.getsizeof(t) for t in self.texts)
        if self.spec.kind == "ivfpq":
            size += n * (int(self.index.code_size) + 8) + (self._vectors.nbytes if self._vectors is not None else 0)
        else:
            size += n * dim * 4
        if self.spec.kind == "hnsw":
            size += int(self.index.hnsw.neighbors.size()) * 4 + int(self.index.hnsw.levels.size()) * 4
        return size + (self.lexical.nbytes if self.lexical is not None else 0)

    def close(self) -> None:
        if self._handle is not None and not self._handle.closed:
            self._handle.close()

    def __del__(self) -> None:
        self.close()


class _KeepsAlive:
    """Exposes an array while holding the object that owns its memory (numpy keeps it as the view's base)."""

    def __init__(self, array: np.ndarray, owner: object) -> None:
        self.__array_interface__ = array.__array_interface__
        self.owner = owner


def index_storage(index: faiss.Index, n: int, dim: int) -> np.ndarray:
    """A read-only (N, D) view of a flat or HNSW index's stored vectors; the view keeps the index alive."""
    import faiss

    flat = faiss.downcast_index(index.storage) if hasattr(index, "storage") else index
    raw = faiss.rev_swig_ptr(flat.get_xb(), n * dim).reshape(n, dim)
    view = np.asarray(_KeepsAlive(raw, index))
    view.flags.writeable = False  # writing would change the index behind FAISS's back
    return view


def load_version(name: str, directory: Path, encoder: EncoderIdentity, *, trusted: bool = False) -> LoadedBank:
    """Loads a version directory, refusing one embedded by another encoder."""
    manifest = read_manifest(directory)
    built_with = EncoderIdentity.from_dict(manifest["encoder"])
    if not built_with.same_model(encoder):
        raise IncompatibleBank(
            f"bank {name!r} version {manifest['version']} was embedded with encoder {built_with.to_dict()} "
            f"but the running encoder is {encoder.to_dict()}; rebuild the bank with this encoder"
        )
    spec = IndexSpec.from_dict(manifest["index"])
    texts, offsets = read_sentence_lines(directory)
    n, dim = len(texts), built_with.dim
    if n != int(manifest["sentences"]):
        raise BankCorrupt(f"{directory / SENTENCES} has {n} sentences; the manifest says {manifest['sentences']} (truncated?)")
    vectors: np.ndarray | None = None
    loader = None
    if spec.kind == "flat":
        index = build_index(read_vectors(directory, manifest, trusted), spec)
        vectors = index_storage(index, n, dim)
    else:
        try:
            index = load_index(directory / INDEX, spec)
        except RuntimeError as exc:  # FAISS reports unreadable files as RuntimeError
            raise BankCorrupt(f"cannot read the index of bank {name!r} version {manifest['version']}: {exc}") from exc
        if int(index.ntotal) != n:
            raise BankCorrupt(f"{directory / INDEX} holds {index.ntotal} vectors; the bank has {n} sentences")
        if spec.kind == "hnsw":
            vectors = index_storage(index, n, dim)
        else:
            loader = lambda: read_vectors(directory, manifest, trusted)  # noqa: E731 - IVF-PQ keeps only codes: load on demand
    return LoadedBank(
        name=name, version=str(manifest["version"]), path=directory, manifest=manifest, texts=texts, spec=spec,
        index=index, _offsets=offsets, _vectors=vectors, _vectors_loader=loader,
        lexical=read_lexical(name, directory, manifest),
    )


def read_lexical(name: str, directory: Path, manifest: dict[str, Any]) -> LexicalIndex | None:
    """The version's lexical index, its files checked against the manifest's sha256; None (warned) for older ones."""
    recorded = manifest.get("files", {}).get("lexical")
    if not recorded:
        log.warning("bank %r version %s has no lexical index: dense search only; rebuild it to add one",
                    name, manifest["version"])
        return None
    for file, expected in recorded.items():
        if Path(file).name != file or not (directory / file).is_file() or file_sha256(directory / file) != expected:
            raise BankCorrupt(f"{directory / file} is missing or changed since bank {name!r} version "
                              f"{manifest['version']} was made")
    lexical = LexicalIndex.load(directory)
    if lexical.sentences != int(manifest["sentences"]):
        raise BankCorrupt(f"the lexical index in {directory} covers {lexical.sentences} sentences; "
                          f"the bank has {manifest['sentences']}")
    return lexical
