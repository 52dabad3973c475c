"""`cubeqa train`: the question tower, then the cube on its vectors, into a checkpoint bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cubeqa.cli_base import DATA_DIR, app, build_encoder, console, embed_progress, errors, fail
from cubeqa.render import eval_table, progress_bar
from cubeqa.settings import Settings, default_bundle_dir
from cubeqa.wiring import PACKAGED_BANK
from pipeline import CubeConfig, TowerConfig, TowerTrainConfig, TrainConfig

SHIPPED_CUBE, SHIPPED_TRAIN = CubeConfig(), TrainConfig()  # train's defaults: the shipped bundle's configuration
SHIPPED_TOWER, SHIPPED_TOWER_TRAIN = TowerConfig(), TowerTrainConfig()


@app.command()
def train(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="bundle directory to write")],
    train_file: Annotated[Path, typer.Option("--train", help="training Q→A JSONL")] = DATA_DIR / "squad_sent_train.jsonl",
    val_file: Annotated[Path, typer.Option("--val", help="validation Q→A JSONL (reported, never trained on)")] = DATA_DIR / "squad_sent_val.jsonl",
    bank: Annotated[list[Path] | None, typer.Option(help="extra phrase-bank file (.txt lines or JSONL); repeatable")] = None,
    size: Annotated[str, typer.Option(help="lattice X,Y,Z")] = ",".join(map(str, SHIPPED_CUBE.size)),
    channels: Annotated[int, typer.Option(help="state channels per cell")] = SHIPPED_CUBE.channels,
    hidden: Annotated[int, typer.Option(help="cell network hidden width")] = SHIPPED_CUBE.hidden,
    steps: Annotated[int, typer.Option(help="propagation steps T")] = SHIPPED_CUBE.steps,
    boundary: Annotated[str, typer.Option(help="walls or periodic")] = SHIPPED_CUBE.boundary,
    injection: Annotated[str, typer.Option(help="projection (learned) or exact (reshape) onto the input face")] = SHIPPED_CUBE.injection,
    reinject: Annotated[bool, typer.Option(help="re-inject the question at every step")] = SHIPPED_CUBE.reinject,
    epochs: Annotated[int, typer.Option(min=1, help="fixed number of epochs")] = SHIPPED_TRAIN.epochs,
    lr: Annotated[float, typer.Option(help="AdamW peak learning rate")] = SHIPPED_TRAIN.lr,
    batch_size: Annotated[int, typer.Option(min=1, help="pairs per step")] = SHIPPED_TRAIN.batch_size,
    infonce_weight: Annotated[float, typer.Option(help="weight of the InfoNCE term")] = SHIPPED_TRAIN.infonce_weight,
    residual_l2: Annotated[float, typer.Option(help="L2 penalty on the residual")] = SHIPPED_TRAIN.residual_l2,
    bank_negatives: Annotated[bool, typer.Option(help="InfoNCE over the whole train answer bank")] = SHIPPED_TRAIN.bank_negatives,
    seed: Annotated[int, typer.Option(help="random seed (the tower's and the cube's)")] = SHIPPED_TRAIN.seed,
    tower_layers: Annotated[int, typer.Option(min=0, help="top teacher layers the question tower tunes (0: no tower, the cube takes the teacher's vector)")] = SHIPPED_TOWER.layers,
    tower_lora_rank: Annotated[int | None, typer.Option(min=1, help="tune the tower through LoRA adapters of this rank instead of fully")] = SHIPPED_TOWER.lora_rank,
    tower_epochs: Annotated[int, typer.Option(min=1, help="the tower's fixed number of epochs")] = SHIPPED_TOWER_TRAIN.epochs,
    tower_lr: Annotated[float, typer.Option(help="the tower's AdamW peak learning rate")] = SHIPPED_TOWER_TRAIN.lr,
    reference_cube: Annotated[bool, typer.Option(help="with a tower, also train a cube on the teacher's vectors for eval's comparison row (about a third of the time)")] = True,
    rerank_model: Annotated[bool, typer.Option(help="also train the rerank stage's model on the bundle's candidates (about a minute)")] = True,
) -> None:
    """Train the question tower, then the cube on its vectors, then the reranker, with fixed schedules, and write a
    checkpoint bundle."""
    from pipeline import CubeQAError, TowerStage, train_bundle
    from pipeline.runtime_export import export_bundle
    from pipeline.training.cube_trainer import EpochReport
    from pipeline.training.tower_trainer import TowerEpochReport

    settings: Settings = ctx.obj
    try:
        x, y, z = (int(s) for s in size.split(","))
    except ValueError as exc:
        raise fail(ValueError(f"--size must be three comma-separated integers such as 8,8,2, got {size!r}")) from exc
    if boundary not in ("walls", "periodic"):
        raise fail(ValueError(f"--boundary must be walls or periodic, got {boundary!r}"))
    if injection not in ("projection", "exact"):
        raise fail(ValueError(f"--injection must be projection or exact, got {injection!r}"))
    if out.exists() and not out.is_dir():
        raise fail(ValueError(f"--out {out} exists and is not a directory"))
    try:
        encoder = build_encoder(settings)
        cube_config = CubeConfig(
            dim=encoder.dim,
            size=(x, y, z),
            channels=channels,
            hidden=hidden,
            steps=steps,
            boundary=boundary,
            injection=injection,
            reinject=reinject,
        )
        train_config = TrainConfig(
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            infonce_weight=infonce_weight,
            residual_l2=residual_l2,
            bank_negatives=bank_negatives,
            seed=seed,
            threads=settings.threads or 2,
        )
        with progress_bar(console) as bar:
            on_embed = embed_progress(bar)
            tower = None
            if tower_layers:
                tower_train = TowerTrainConfig(epochs=tower_epochs, lr=tower_lr, seed=seed, threads=settings.threads or 2)
                tower_task = bar.add_task("tower", total=None, start=False)

                def on_tower_step(step: int, total: int, loss: float) -> None:
                    bar.start_task(tower_task)
                    bar.update(tower_task, completed=step, total=total, description=f"tower loss {loss:.4f}")

                def on_tower_epoch(report: TowerEpochReport) -> None:
                    figures = report.validation or {}
                    bar.update(tower_task, description=f"tower epoch {report.epoch} loss {report.train_loss:.4f} val R@1 {figures.get('R@1', float('nan')):.4f}")

                tower = TowerStage(TowerConfig(layers=tower_layers, lora_rank=tower_lora_rank), tower_train, on_tower_step, on_tower_epoch, reference_cube)

            epoch_task = bar.add_task("train", total=epochs, start=False)

            def on_epoch(report: EpochReport) -> None:
                bar.start_task(epoch_task, started_ago=report.seconds)  # the clock of the epochs starts with the first
                bar.update(
                    epoch_task,
                    completed=report.epoch,
                    description=f"train loss {report.train_loss:.4f} val cos {report.val_cos:.4f}",
                )

            outcome = train_bundle(
                train_file,
                val_file,
                out,
                encoder=encoder,
                cube_config=cube_config,
                train_config=train_config,
                cache_dir=settings.cache_dir,
                tower=tower,
                extra_bank=bank or [],
                on_embed=on_embed,
                on_epoch=on_epoch,
            )
            bar.add_task("int8 runtime: export and parity", total=None)
            runtime = export_bundle(outcome.bundle_dir, encoder, val_file)
            remove_reranker(outcome.bundle_dir)  # one trained on an earlier bundle's candidates does not fit this one
            reranked = fit_reranker(outcome.bundle_dir, train_file, val_file, encoder, settings, bar) if rerank_model else None
    except (CubeQAError, ValueError, OSError) as exc:
        raise fail(exc) from exc
    for warning in outcome.validation.warnings:
        errors.print(f"[yellow]warning:[/yellow] {warning}")
    console.print(eval_table(outcome.validation, title=f"validation ({val_file.name})"))
    console.print(runtime_summary(runtime))
    if reranked is not None:
        console.print(reranker_summary(reranked))
        console.print("jobs are reranked by default once its confidence is fit: bench/calibration.py --rerank")
    console.print(f"bundle written to {outcome.bundle_dir}")
    console.print(f"bank default (the bundle's bank, with its lexical index): {write_bundle_bank(outcome.bundle_dir, settings, train_file)}")


@app.command("train-rerank")
def train_rerank(
    ctx: typer.Context,
    bundle: Annotated[Path | None, typer.Option(help="bundle directory (default: CUBEQA_BUNDLE_DIR)")] = None,
    train_file: Annotated[Path, typer.Option("--train", help="training Q→A JSONL")] = DATA_DIR / "squad_sent_train.jsonl",
    val_file: Annotated[Path, typer.Option("--val", help="validation Q→A JSONL (reported, never trained on)")] = DATA_DIR / "squad_sent_val.jsonl",
) -> None:
    """Train the rerank stage's model for an existing bundle (what `cubeqa train` does last) and write it into it."""
    from pipeline import CubeQAError

    settings: Settings = ctx.obj
    target = bundle or settings.bundle_dir
    try:
        encoder = build_encoder(settings)
        with progress_bar(console) as bar:
            record = fit_reranker(target, train_file, val_file, encoder, settings, bar)  # replaces the old one once trained
    except (CubeQAError, ValueError, OSError) as exc:
        raise fail(exc) from exc
    console.print(reranker_summary(record))
    console.print(f"written to {target}; jobs are reranked by default once its confidence is fit: "
                  "bench/calibration.py --rerank (rerank-calibration.json)")


def fit_reranker(bundle_dir: Path, train_file: Path, val_file: Path, encoder: Any, settings: Settings, bar: Any) -> dict[str, Any]:
    """Trains the bundle's reranker (pipeline.training.rerank_trainer) with a progress bar; returns its manifest."""
    from pipeline.training.rerank_trainer import train_reranker
    from pipeline.workflows import load_embedded

    on_embed = embed_progress(bar)
    tasks: dict[str, Any] = {}

    def on_progress(what: str, done: int, total: int) -> None:
        task = tasks.setdefault(what, bar.add_task(what, total=total))
        bar.update(task, completed=done, total=total)

    train = load_embedded(train_file, encoder, settings.cache_dir, on_embed)
    val = load_embedded(val_file, encoder, settings.cache_dir, on_embed)
    reranker = train_reranker(bundle_dir, train_file, val_file, train, val, encoder=encoder, cache_dir=settings.cache_dir,
                              on_progress=on_progress)
    remove_reranker(bundle_dir)  # the old model and the confidence fit on its scores go only once the new one is trained
    return reranker.save(bundle_dir)


def remove_reranker(bundle_dir: Path) -> None:
    """Deletes the bundle's reranker files and the confidence fit on its scores."""
    from pipeline.calibration import RERANK_CALIBRATION
    from pipeline.rerank.ranker import MANIFEST_FILE, MODEL_FILE

    for name in (MANIFEST_FILE, MODEL_FILE, RERANK_CALIBRATION):
        (Path(bundle_dir) / name).unlink(missing_ok=True)


def reranker_summary(record: dict[str, Any]) -> str:
    """One line on a trained reranker: its validation P@1 against the fused ranking, with the paired interval."""
    v = record["validation"]
    d = v["reranked_minus_fused"]
    return (f"reranker ({record['kind']}, {record['config']['trees']} trees, top {record['config']['depth']}): validation "
            f"P@1 {v['reranked_p1']:.4f} vs fused {v['fused_p1']:.4f}, {d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]")


def write_bundle_bank(bundle_dir: Path, settings: Settings, train_file: Path) -> Path:
    """The trained bundle's bank as a bank version, so `--bank default` serves its new vectors at once; retrained in
    place (`make train`), the packaged copy follows, else it is written under the cache."""
    from pipeline.knowledge.builtin import bank_from_bundle, own_bank_dir

    if bundle_dir.resolve() == default_bundle_dir().resolve():
        bank_from_bundle(bundle_dir, PACKAGED_BANK, [train_file])
    return own_bank_dir(bundle_dir, settings.cache_dir)


def runtime_summary(record: dict[str, Any]) -> str:
    """One line on the exported int8 runtime: its graphs and their cosine with torch."""
    tower = (record.get("tower") or {}).get("graphs", {})
    graphs = ", ".join([record["encoder"]["file"], *(graph["file"] for graph in tower.values())])
    parity = record.get("parity") or {}
    figures = "; ".join(f"{name} cos(int8, torch) mean {f['mean']:.4f}, 1st percentile {f['p1']:.4f}"
                        for name, f in parity.items() if isinstance(f, dict))
    return f"int8 runtime: {graphs}" + (f" ({figures} on {parity.get('data')})" if figures else "")


@app.command("export")
def export(
    ctx: typer.Context,
    bundle: Annotated[Path | None, typer.Option(help="bundle directory (default: CUBEQA_BUNDLE_DIR)")] = None,
    parity: Annotated[Path | None, typer.Option(help="Q→A JSONL whose questions measure cos(int8, torch)")] = DATA_DIR / "squad_sent_val.jsonl",
) -> None:
    """Export the bundle's teacher and question tower to int8 ONNX graphs (bundle/runtime/) for CUBEQA_RUNTIME=int8."""
    from pipeline import CubeQAError
    from pipeline.runtime_export import export_bundle

    settings: Settings = ctx.obj
    target = bundle or settings.bundle_dir
    try:
        with console.status("exporting and quantising"):
            record = export_bundle(target, build_encoder(settings), parity)
    except (CubeQAError, ValueError, OSError) as exc:
        raise fail(exc) from exc
    console.print(runtime_summary(record))
    console.print(f"written to {target / 'runtime'}")
