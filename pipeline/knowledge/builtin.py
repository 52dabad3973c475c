"""The shipped bundle's phrase bank as a built-in bank directory (`cubeqa/banks/default/`).

The bank's vectors stay the bundle's own `bank.safetensors` (18 MB): the version's manifest names
that file by a path relative to the version directory and records its sha256, which loading
checks, so nothing is shipped twice and a retrained bundle cannot silently pair new vectors with
old sentences (rerun this module after `make train`). Provenance: a sentence's doc_id is the
`answer_id` of the Q→A file row it answers, else the first 12 hex digits of its sha256. The version
holds its own lexical (BM25) index, like every bank version.

A bundle whose vectors the shipped directory is not tied to (a freshly trained one) gets the same
kind of directory written beside the embedding cache on first use (`own_bank_dir`), so jobs and
`cubeqa ask` without a bank always answer through a bank version.

    python -m pipeline.knowledge.builtin [BUNDLE_DIR] [OUT_DIR] [PAIRS.jsonl ...]
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from safetensors import safe_open

from pipeline.encoder import EncoderIdentity
from pipeline.errors import BundleError
from pipeline.knowledge import bankfiles as files
from pipeline.knowledge.documents import Sentence
from pipeline.knowledge.index import choose_index
from pipeline.knowledge.lexical import LexicalIndex
from pipeline.knowledge.provenance import Provenance

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BANK = "default"  # the name under which a bundle's own bank serves


def answer_ids(pairs_paths: Sequence[Path]) -> dict[str, tuple[str, str]]:
    """{answer text: (answer_id, file name)} of Q→A JSONL files, the first row of each answer winning."""
    found: dict[str, tuple[str, str]] = {}
    for path in pairs_paths:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    row = json.loads(line)
                    if row.get("answer") and row.get("answer_id"):
                        found.setdefault(row["answer"], (str(row["answer_id"]), Path(path).name))
    return found


def bank_from_bundle(bundle_dir: Path, out_dir: Path, pairs_paths: Sequence[Path] = (), name: str = "default") -> str:
    """Writes `out_dir/versions/VERSION/` (manifest + sentences, vectors by reference) and `out_dir/CURRENT`; returns VERSION."""
    bundle_dir, out_dir = Path(bundle_dir).resolve(), Path(out_dir).resolve()
    manifest = json.loads((bundle_dir / "manifest.json").read_text(encoding="utf-8"))
    encoder = EncoderIdentity.from_dict(manifest["encoder"])
    texts = [json.loads(line) for line in (bundle_dir / "bank.jsonl").read_text(encoding="utf-8").split("\n") if line.strip()]
    vectors_file = bundle_dir / "bank.safetensors"
    if not vectors_file.is_file():
        raise BundleError(f"{bundle_dir} has no bank.safetensors: embed its bank first")
    with safe_open(str(vectors_file), "np") as handle:
        shape = tuple(handle.get_slice("vectors").get_shape())
    if shape != (len(texts), encoder.dim):
        raise BundleError(f"{vectors_file} holds {shape} vectors; bank.jsonl has {len(texts)} sentences of dim {encoder.dim}")
    ids = answer_ids(pairs_paths)
    sentences = []
    for text in texts:
        doc_id, source = ids.get(text) or (hashlib.sha256(text.encode("utf-8")).hexdigest()[:12], None)
        sentences.append(Sentence(text, Provenance(doc_id=doc_id, source=source)))
    lines = [files.sentence_line(s) for s in sentences]
    spec = choose_index(len(lines))
    content = files.content_hash(lines)
    version = files.version_id(content, encoder, spec)
    vdir = out_dir / "versions" / version
    if out_dir.exists():
        shutil.rmtree(out_dir / "versions", ignore_errors=True)
    vdir.mkdir(parents=True)
    files.write_version(vdir, lines, None, None, {
        "format_version": files.FORMAT_VERSION, "name": name, "version": version, "parent": None,
        "encoder": encoder.to_dict(), "sentences": len(lines), "documents": len({s.provenance.doc_id for s in sentences}),
        "content_hash": content, "index": {**spec.to_dict(), "file": None}, "index_request": {"kind": None, "params": None},
        "split": False, "sources": [f"bundle:{bundle_dir.name}/bank.jsonl", *(Path(p).name for p in pairs_paths)],
        "files": {"sentences": files.SENTENCES, "vectors": os.path.relpath(vectors_file, vdir), "vectors_sha256": files.file_sha256(vectors_file)},
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"), "build_seconds": None,
    }, lexical=LexicalIndex.of_sentences(sentences))
    (out_dir / "CURRENT").write_text(version + "\n", encoding="utf-8")
    return version


def own_bank_dir(bundle_dir: Path, scratch: Path | None = None) -> Path:
    """The bank directory of a bundle's own bank: the shipped `default` when tied to the bundle's vectors, else one
    written once under `scratch` (default: the system's temporary directory), keyed by the vectors' sha256."""
    bundle_dir = Path(bundle_dir).resolve()
    vectors_file = bundle_dir / "bank.safetensors"
    if not bundle_dir.is_dir():
        raise BundleError(f"bundle directory {bundle_dir} does not exist")
    if not vectors_file.is_file():
        raise BundleError(f"{bundle_dir} has no bank.safetensors: its bank must ship its vectors")
    digest = vectors_digest(vectors_file)
    shipped = default_builtin()["default"]
    if tied_to(shipped, vectors_file, digest):
        return shipped
    scratch = Path(scratch or tempfile.gettempdir()) / "cubeqa-bundle-banks"
    where = hashlib.sha256(str(bundle_dir).encode("utf-8")).hexdigest()[:12]  # versions name vectors by relative path
    target = scratch / f"{bundle_dir.name}-{where}-{digest[:16]}"
    if tied_to(target, vectors_file, digest):
        return target
    scratch.mkdir(parents=True, exist_ok=True)
    temp = scratch / f".build-{os.getpid()}-{secrets.token_hex(4)}"  # a sibling: the relative path survives the rename
    bank_from_bundle(bundle_dir, temp)
    try:
        os.rename(temp, target)
    except OSError:  # another process wrote it first (or a stale one of other vectors is in the way)
        shutil.rmtree(temp, ignore_errors=True)
        if not tied_to(target, vectors_file, digest):
            shutil.rmtree(target, ignore_errors=True)
            return own_bank_dir(bundle_dir, scratch.parent)
    return target


def vectors_digest(path: Path) -> str:
    """sha256 of a bundle's vectors file, hashed once per size and modification time (every bank lookup asks)."""
    stat = path.stat()
    return _digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    return files.file_sha256(Path(path))


def builtin_banks(bundle_dir: Path, scratch: Path | None = None) -> dict[str, Path]:
    """The built-in banks a bundle serves: `default`, its own bank (`own_bank_dir`). So `--bank default` and jobs that
    name no bank answer from the same sentences, whatever bundle serves."""
    return {DEFAULT_BANK: own_bank_dir(bundle_dir, scratch)}


def tied_to(bank_dir: Path, vectors_file: Path, vectors_sha256: str) -> bool:
    """Whether the current version of the bank in `bank_dir` names `vectors_file`, recorded with this sha256, and
    holds a lexical index."""
    try:
        vdir = bank_dir / "versions" / (bank_dir / "CURRENT").read_text(encoding="utf-8").strip()
        recorded = json.loads((vdir / files.MANIFEST).read_text(encoding="utf-8")).get("files", {})
        named = (vdir / recorded.get("vectors", files.VECTORS)).resolve()
        same = named.samefile(vectors_file) and recorded.get("vectors_sha256") == vectors_sha256
        return same and bool(recorded.get("lexical"))
    except (OSError, ValueError, AttributeError):
        return False


def default_builtin() -> dict[str, Path]:
    """The built-in banks shipped with the package: {"default": cubeqa/banks/default}."""
    return {"default": ROOT / "cubeqa" / "banks" / "default"}


if __name__ == "__main__":
    args = sys.argv[1:]
    bundle = Path(args[0]) if args else ROOT / "cubeqa" / "bundles" / "default"
    out = Path(args[1]) if len(args) > 1 else ROOT / "cubeqa" / "banks" / "default"
    pairs = [Path(p) for p in args[2:]] or [ROOT / "data" / "squad_sent_train.jsonl"]
    print(bank_from_bundle(bundle, out, pairs))
