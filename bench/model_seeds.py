"""The shipped model's configuration (question tower, then the cube on its vectors) trained with other seeds:
validation R@1, MRR and mean cos of the whole model and of the tower alone against identity, with paired 95%
bootstrap intervals, per seed.

    .venv/bin/python bench/model_seeds.py --seeds 1,2 [--bundle cubeqa/bundles/default] [--json PATH]
    .venv/bin/python bench/model_seeds.py --merge A.json B.json [--bundle cubeqa/bundles/default] --json PATH

Each seed trains exactly what `cubeqa train` trains by default (without the comparison cube) into
--out/seed-<n>. --bundle adds the row of an already trained bundle (its manifest's validation figures,
e.g. the shipped seed 0), so the shipped seed is not trained twice. --merge joins the JSON of runs
made in separate processes (one seed each, in parallel).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pipeline.config import CubeConfig, TowerConfig, TowerTrainConfig, TrainConfig  # noqa: E402

DIFFERENCES = ("cube − identity", "tower − identity")
METRICS = ("R@1", "MRR", "cos")


def row_of(seed: int, report: dict[str, object], source: str, seconds: float | None) -> dict[str, object]:
    """One seed's figures from an EvalReport dict (`cubeqa eval --json` / the manifest's `metrics`)."""
    differences = report["differences"]
    return {
        "seed": seed,
        "source": source,
        "train_seconds": seconds,
        "R@1": {name: report["retrieval_open_bank"][name]["R@1"] for name in ("cube", "tower", "identity")},
        "MRR": {name: report["retrieval_open_bank"][name]["MRR"] for name in ("cube", "tower", "identity")},
        "cos": {name: report["cos"][f"{name}_cos"] for name in ("cube", "tower", "identity")},
        "differences": {f"{d}: {m}": differences[f"{d}: {m}"] for d in DIFFERENCES for m in METRICS},
    }


def bundle_row(bundle: Path) -> dict[str, object]:
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    seed = int(manifest["train_config"]["seed"])
    return row_of(seed, manifest["metrics"], f"{bundle} (manifest)", manifest.get("tower", {}).get("train_seconds"))


def train_seed(seed: int, out: Path, threads: int) -> dict[str, object]:
    from pipeline import EncoderConfig, TeacherEncoder, TowerStage, train_bundle

    encoder = TeacherEncoder(EncoderConfig(device="cpu"))
    started = time.perf_counter()
    outcome = train_bundle(
        ROOT / "data" / "squad_sent_train.jsonl", ROOT / "data" / "squad_sent_val.jsonl", out / f"seed-{seed}",
        encoder=encoder, cube_config=CubeConfig(dim=encoder.dim), train_config=TrainConfig(seed=seed, threads=threads),
        cache_dir=Path.home() / ".cache" / "cubeqa",
        tower=TowerStage(TowerConfig(), TowerTrainConfig(seed=seed, threads=threads), reference_cube=False),
    )
    return row_of(seed, outcome.validation.to_dict(), str(out / f"seed-{seed}"), time.perf_counter() - started)


def table(rows: list[dict[str, object]]) -> str:
    lines = [f"{'seed':>4} {'model':>7} {'R@1':>7} {'ΔR@1 vs identity [95%]':>28} {'MRR':>7} {'ΔMRR [95%]':>28} {'cos':>7} {'Δcos [95%]':>28}"]
    for row in rows:
        for model, label in (("cube", "tower→cube"), ("tower", "tower")):
            cells = [f"{row['seed']:>4} {label:>7}"]
            for metric in METRICS:
                d = row["differences"][f"{model} − identity: {metric}"]
                cells.append(f"{row[metric][model]:7.4f} {d['mean']:+9.4f} [{d['low']:+.4f}, {d['high']:+.4f}]")
            lines.append(" ".join(cells))
    if rows:
        ident = rows[0]
        lines.append(f"identity: R@1 {ident['R@1']['identity']:.4f}  MRR {ident['MRR']['identity']:.4f}  cos {ident['cos']['identity']:.4f}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--seeds", default="", help="comma-separated seeds to train")
    p.add_argument("--bundle", type=Path, default=None, help="also report this trained bundle's row (from its manifest)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "model-seeds")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--merge", type=Path, nargs="+", default=None, metavar="JSON")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    rows: list[dict[str, object]] = []
    commands = [" ".join(["bench/model_seeds.py", *sys.argv[1:]])]
    for path in args.merge or []:
        part = json.loads(path.read_text(encoding="utf-8"))
        rows.extend(part["seeds"])
        commands.extend(part["commands"])
    if args.bundle is not None:
        rows.append(bundle_row(args.bundle))
    for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:
        rows.append(train_seed(seed, args.out, args.threads))
        print(table(rows[-1:]), flush=True)
    rows.sort(key=lambda row: row["seed"])
    text = table(rows)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"commands": commands, "seeds": rows}, indent=2) + "\n", encoding="utf-8")
        args.json.with_suffix(".txt").write_text("\n".join(["commands: " + "; ".join(commands), text]) + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
