"""Parity of the int8 runtime with torch fp32 on validation: open-bank R@1 with paired 95% intervals.

    .venv/bin/python bench/int8_parity.py [--bundle DIR] [--keep-fp32 output/dense] [--json PATH]

The bank is the unique answer sentences of train + validation embedded by the torch teacher (as
`cubeqa eval` builds it; exact search). The validation questions go through each runtime's encode
stage (tower, or teacher for a bundle without one) and the bundle's cube; R@1 is whether the top
bank sentence is the question's answer. Reported: R@1 per runtime, int8 − torch with its paired
bootstrap interval, questions whose top sentence changes, and the cosine between the runtimes'
vectors. The int8 graphs are exported afresh into a scratch copy of the bundle with the given
quantisation config, so configs can be compared without touching the bundle.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from pipeline.checkpoint import load_bundle  # noqa: E402
from pipeline.cube import apply_map  # noqa: E402
from pipeline.data import embed_cached, load_pairs  # noqa: E402
from pipeline.encoder import EncoderConfig, TeacherEncoder  # noqa: E402
from pipeline.evaluation import paired_bootstrap  # noqa: E402
from pipeline.int8 import Int8Encoder, Int8Tower  # noqa: E402
from pipeline.production import set_threads  # noqa: E402
from pipeline.runtime_export import QuantConfig, cosine_figures, export_runtime  # noqa: E402
from pipeline.tower_io import load_tower_if_any  # noqa: E402

TRAIN = ROOT / "data" / "squad_sent_train.jsonl"
VAL = ROOT / "data" / "squad_sent_val.jsonl"


def open_bank(encoder: TeacherEncoder, cache_dir: Path) -> tuple[list[str], np.ndarray]:
    """Unique train + validation answer sentences and their torch teacher vectors (cached as in bench/tower.py)."""
    texts: dict[str, np.ndarray] = {}
    for path in (TRAIN, VAL):
        unique = sorted({pair.answer for pair in load_pairs(path)})
        vectors = embed_cached(
            unique, lambda t: encoder.encode(t).vectors, cache_dir, f"enc-{encoder.identity.weights_hash}"
        )
        for text, vector in zip(unique, vectors):
            texts.setdefault(text, vector)
    return list(texts), np.stack(list(texts.values()))


def top_rows(queries: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """Row of the best bank sentence per query (exact inner-product search)."""
    return np.concatenate([np.argmax(queries[s : s + 512] @ bank.T, axis=1) for s in range(0, len(queries), 512)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=ROOT / "cubeqa" / "bundles" / "default")
    p.add_argument(
        "--keep-fp32", default="", help="comma-separated node-name fragments left in fp32 (e.g. output/dense)"
    )
    p.add_argument(
        "--per-tensor", action="store_true", help="one scale per weight tensor instead of per output channel"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "cubeqa")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    set_threads(args.threads, search=False)
    config = QuantConfig(per_channel=not args.per_tensor, keep_fp32=tuple(f for f in args.keep_fp32.split(",") if f))
    encoder = TeacherEncoder(EncoderConfig(device="cpu"))
    bank_texts, bank = open_bank(encoder, args.cache_dir)
    pairs = load_pairs(VAL)
    questions = [pair.question for pair in pairs]
    gold = np.array([bank_texts.index(pair.answer) for pair in pairs])
    with tempfile.TemporaryDirectory() as scratch:
        bundle_dir = Path(scratch) / "bundle"
        shutil.copytree(args.bundle, bundle_dir, ignore=shutil.ignore_patterns("runtime"))
        tower = load_tower_if_any(bundle_dir, encoder)
        export_runtime(bundle_dir, encoder, tower, config)
        int8 = Int8Encoder(bundle_dir, encoder.config, threads=args.threads)
        if tower is not None:
            vectors = {
                "torch": tower.encode_both(questions).tower,
                "int8": Int8Tower(bundle_dir, int8, args.threads).encode_both(questions).tower,
            }
        else:
            vectors = {"torch": encoder.encode(questions).vectors, "int8": int8.encode(questions).vectors}
        cube = load_bundle(bundle_dir).cube
    report: dict[str, object] = {
        "bundle": str(args.bundle),
        "questions": len(questions),
        "bank": len(bank_texts),
        "quantization": config.to_dict(),
        "cos(int8, torch) of question vectors": cosine_figures(vectors["int8"], vectors["torch"]),
    }
    for name, transform in (("tower → cube", lambda v: apply_map(cube, v)), ("tower alone", lambda v: v)):
        rows = {runtime: top_rows(transform(v), bank) for runtime, v in vectors.items()}
        hits = {runtime: (r == gold).astype(float) for runtime, r in rows.items()}
        diff = paired_bootstrap(hits["int8"] - hits["torch"])
        report[name] = {
            "R@1 torch": hits["torch"].mean(),
            "R@1 int8": hits["int8"].mean(),
            "int8 − torch": diff.to_dict(),
            "answers changed": int((rows["int8"] != rows["torch"]).sum()),
            "right→wrong": int(((hits["torch"] == 1) & (hits["int8"] == 0)).sum()),
            "wrong→right": int(((hits["torch"] == 0) & (hits["int8"] == 1)).sum()),
        }
    print(json.dumps(report, indent=2, default=float))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=float) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
