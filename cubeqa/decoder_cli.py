"""`cubeqa train-decoder`: train the generative decoder into a bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cubeqa.cli_base import DATA_DIR, app, build_encoder, console, embed_progress, fail
from cubeqa.render import progress_bar
from cubeqa.settings import Settings


@app.command("train-decoder")
def train_decoder_command(
    ctx: typer.Context,
    bundle: Annotated[Path | None, typer.Option(help="bundle to add the decoder to (default CUBEQA_BUNDLE_DIR)")] = None,
    train_file: Annotated[Path, typer.Option("--train", help="Q→A JSONL: its questions and answers are the training text")] = DATA_DIR / "squad_sent_train.jsonl",
    text: Annotated[list[Path] | None, typer.Option(help="extra UTF-8 text file, one sentence per line (repeatable; more text helps)")] = None,
    fragments: Annotated[int, typer.Option(min=0, help="random word runs taken from each training answer as extra sentences")] = 0,
    init: Annotated[str, typer.Option(help="teacher (warm start from the encoder's weights) or scratch")] = "teacher",
    minutes: Annotated[float, typer.Option(min=0.1, help="wall-clock budget; the schedule is planned to end within it")] = 40.0,
    max_epochs: Annotated[int, typer.Option(min=1, help="most passes over the text")] = 20,
    batch_size: Annotated[int, typer.Option(min=1, help="sentences per step")] = 64,
    layers: Annotated[int | None, typer.Option(min=1, help="transformer layers (teacher: its 6; scratch: 4)")] = None,
    noise: Annotated[float, typer.Option(min=0, help="std of Gaussian noise per dimension on input vectors")] = 0.005,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    precision: Annotated[str, typer.Option(help="auto (bf16 autocast where the device runs it natively), bf16 or fp32")] = "auto",
) -> None:
    """Train the generative decoder to reconstruct sentences from their embeddings, and save it in the bundle."""
    from pipeline import CubeQAError, DecoderTrainConfig, GenerativeConfig, train_decoder_bundle
    from pipeline.encoder import resolve_device

    settings: Settings = ctx.obj
    if init not in ("teacher", "scratch"):
        raise fail(ValueError(f"--init must be teacher or scratch, got {init!r}"))
    if precision not in ("auto", "bf16", "fp32"):
        raise fail(ValueError(f"--precision must be auto, bf16 or fp32, got {precision!r}"))
    try:
        base = GenerativeConfig() if init == "teacher" else GenerativeConfig.scratch()
        config = GenerativeConfig.from_dict({**base.to_dict(), **({"layers": layers} if layers else {})})
        train_config = DecoderTrainConfig(
            minutes=minutes, max_epochs=max_epochs, batch_size=batch_size, noise=noise, seed=seed, threads=settings.threads or 2, precision=precision,
            device=str(resolve_device(settings.device)),
        )
        encoder = build_encoder(settings)
        with progress_bar(console) as bar:
            task = bar.add_task("train decoder", total=None)

            def on_progress(step: int, planned: int, loss: float, val: float | None) -> None:
                label = f"train decoder loss {loss:.3f}" + (f" held-out {val:.3f}" if val is not None else "")
                bar.update(task, completed=step, total=planned, description=label)
                if val is not None:  # one line per evaluation: a log even where no live bar is drawn (not a terminal)
                    bar.console.print(f"step {step:5d} of {planned}  train loss {loss:.4f}  held-out loss {val:.4f}")

            outcome = train_decoder_bundle(
                bundle or settings.bundle_dir, train_file, encoder=encoder, config=config, train_config=train_config,
                cache_dir=settings.cache_dir, extra_text=text or [], fragments_per_answer=fragments, on_embed=embed_progress(bar), on_progress=on_progress,
            )
    except (CubeQAError, OSError, ValueError) as exc:
        raise fail(exc) from exc
    report = outcome.report
    console.print(
        f"{outcome.sentences} sentences ({report.holdout_sentences} held out), {report.steps} of {report.planned_steps} planned steps "
        f"in {report.minutes:.1f} min ({report.precision}); kept step {report.best_step} (held-out loss {report.best_val_loss:.4f}); decoder written to {outcome.bundle_dir}"
    )
