"""The `cubeqa` command line. Model commands (eval, ask) live here; training in `cubeqa.train_cli`,
job-system commands in `cubeqa.jobs_cli` and `cubeqa.services_cli`. Each command calls one library function."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights come from local directories only

import typer
from rich.markup import escape
from rich.progress import TaskID

from cubeqa import bank_cli, control_cli, decoder_cli, jobs_cli, services_cli, train_cli  # noqa: F401 - importing them registers their commands on `app`
from cubeqa.cli_base import DATA_DIR, app, build_encoder, build_encoder_config, console, embed_progress, errors, fail
from cubeqa.intake import check_text
from cubeqa.render import bank_eval_table, confidence_text, decoder_tables, eval_table, progress_bar
from cubeqa.settings import Settings
from cubeqa.wiring import bank_config, bank_store, generative_options, hinted, resolve_rerank

if TYPE_CHECKING:
    from pipeline import BankRef
    from pipeline.answer_result import AnswerResult
    from pipeline.production import ProductionPipeline



@app.command("eval")
def evaluate(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option(help="Q→A JSONL split to evaluate on")] = DATA_DIR / "squad_sent_val.jsonl",
    train_file: Annotated[Path, typer.Option("--train", help="training split: baselines are fit on it, it is the closed bank")] = DATA_DIR / "squad_sent_train.jsonl",
    json_path: Annotated[Path | None, typer.Option("--json", help="also write the figures as JSON here")] = None,
    resamples: Annotated[int, typer.Option(min=1, help="bootstrap resamples for the intervals")] = 2000,
    decoder: Annotated[str | None, typer.Option(help="also measure the decoders: all (bank, generative, hybrid)")] = None,
    sentences: Annotated[int, typer.Option(min=1, help="held-out sentences for the decoders' round trip")] = 500,
    save_threshold: Annotated[bool, typer.Option(help="store the hybrid threshold chosen on --data in the bundle")] = False,
    bank: Annotated[str | None, typer.Option(
        help="answer --data's questions from this knowledge bank instead: dense, lexical and fused P@1, MRR@10, R@20, "
             "precision at the confidence threshold")] = None,
) -> None:
    """The model (tower → cube, or the cube alone) vs baselines on a split: cosines, open-bank retrieval, e2e, paired 95% intervals; with --decoder,
    the decoders' round trip, BLEU, real words and speed, and bank/generative/hybrid on the Q→A pairs; with --bank,
    the model's dense, lexical and fused rankings and identity answering from a knowledge bank."""
    from pipeline import CubeQAError, evaluate_bundle

    settings: Settings = ctx.obj
    if bank is not None:
        evaluate_bank(settings, bank, data, json_path, resamples)
        return
    if decoder not in (None, "all", "bank", "generative", "hybrid"):
        raise fail(ValueError(f"--decoder must be bank, generative, hybrid or all, got {decoder!r}"))
    for path in (data, train_file):  # before minutes of embedding, not after
        if not path.is_file():
            raise fail(FileNotFoundError(errno.ENOENT, "No such file", str(path)))
    try:
        encoder = build_encoder(settings)
        decoders = None
        if decoder is not None:
            from pipeline import evaluate_decoders
            from pipeline import save_threshold as store_threshold

            with progress_bar(console, transient=True) as bar:
                tasks: dict[str, TaskID] = {}

                def on_decode(label: str, n: int) -> None:
                    if label not in tasks:
                        tasks[label] = bar.add_task(f"decode {label}", total=None)
                    bar.advance(tasks[label], n)

                decoders = evaluate_decoders(
                    settings.bundle_dir, data, train_file, encoder=encoder, cache_dir=settings.cache_dir,
                    sentences=sentences, on_embed=embed_progress(bar), progress=on_decode,
                )
            if save_threshold:
                store_threshold(settings.bundle_dir, decoders.threshold)
        with progress_bar(console, transient=True) as bar:
            report = evaluate_bundle(
                settings.bundle_dir,
                data,
                train_file,
                encoder=encoder,
                cache_dir=settings.cache_dir,
                on_embed=embed_progress(bar),
                resamples=resamples,
            )
        if json_path:
            from cubeqa.provenance import run_record

            figures = {"machine": run_record("cubeqa", sys.argv[1:]), "data": str(data), "bundle": str(settings.bundle_dir), **report.to_dict()}
            if decoders is not None:
                figures["decoders"] = decoders.to_dict()
            json_path.write_text(json.dumps(figures, indent=2) + "\n")
    except (CubeQAError, OSError, ValueError) as exc:
        raise fail(exc) from exc
    for warning in report.warnings:
        errors.print(f"[yellow]warning:[/yellow] {warning}")
    console.print(eval_table(report, title=f"{data.name}: {report.split_size} pairs, bundle {settings.bundle_dir.name}"))
    if decoders is not None:
        console.print(decoder_tables(decoders, data.name))
        if save_threshold:
            console.print(f"hybrid threshold {decoders.threshold['threshold']:.4f} stored in {settings.bundle_dir}")
    if json_path:
        console.print(f"figures written to {json_path}")


def evaluate_bank(settings: Settings, name: str, data: Path, json_path: Path | None, resamples: int) -> None:
    """`eval --bank`: P@1, MRR@10, R@20 of the model ranked dense, lexical and fused (and identity) on a knowledge bank,
    with precision and coverage at the confidence threshold."""
    from pipeline import CubeQAError
    from pipeline.bank_eval import evaluate_on_bank

    if not data.is_file():
        raise fail(FileNotFoundError(errno.ENOENT, "No such file", str(data)))
    try:
        encoder = build_encoder(settings)
        store = bank_store(settings)
        with hinted(settings):
            loaded = store.load(name, store.resolve(name), encoder_identity=encoder.identity)
        with progress_bar(console, transient=True) as bar:
            report = evaluate_on_bank(
                settings.bundle_dir, loaded, data, encoder=encoder,
                cache_dir=settings.cache_dir, resamples=resamples, min_confidence=settings.min_confidence, on_embed=embed_progress(bar),
            )
        report = {"bank": {"name": name, "version": loaded.version, "sentences": len(loaded.texts)}, **report}
        if json_path:
            from cubeqa.provenance import run_record

            json_path.write_text(json.dumps({"machine": run_record("cubeqa", sys.argv[1:]), **report}, indent=2) + "\n")
    except (CubeQAError, OSError, ValueError) as exc:
        raise fail(exc) from exc
    console.print(bank_eval_table(report, title=f"{data.name}: {report['questions']} questions, bank {name}@{loaded.version}"))
    if json_path:
        console.print(f"figures written to {json_path}")


@app.command()
def ask(
    ctx: typer.Context,
    questions: Annotated[
        list[str] | None,
        typer.Argument(help="questions to answer, all with one model load; none: --file, else lines of standard input, else a prompt"),
    ] = None,
    file: Annotated[Path | None, typer.Option("--file", help="UTF-8 text file, one question per line (- for standard input)")] = None,
    reference: Annotated[str | None, typer.Option(help="a reference answer, to score the answer of one question against")] = None,
    decoder: Annotated[str | None, typer.Option(
        help="bank (default CUBEQA_DECODER); generative and hybrid are experimental: they write from the vector and "
        "read no knowledge bank (docs/generative-decoder.md)")] = None,
    bank: Annotated[str | None, typer.Option(help="knowledge bank to answer from (`cubeqa bank list`); default: the bundle's own bank")] = None,
    min_confidence: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="refuse answers below this calibrated confidence (default CUBEQA_MIN_CONFIDENCE, else the bundle's)")
    ] = None,
    rerank: Annotated[bool | None, typer.Option(
        "--rerank/--no-rerank", help="reorder the candidates with the bundle's reranker (default CUBEQA_RERANK, when it has one)")] = None,
    api: Annotated[str | None, typer.Option(
        "--api", help="URL of a running `cubeqa api`: its workers answer, with no model load here (default CUBEQA_API_URL)")] = None,
) -> None:
    """Answer questions, loading the models once (or through a running API): prints each answer, its confidence, the
    evidence and the decoder path."""
    from cubeqa.remote import RemoteError
    from pipeline import CubeQAError
    from pipeline.encoding import check_texts

    settings: Settings = ctx.obj
    if decoder not in (None, "bank", "generative", "hybrid"):
        raise fail(ValueError(f"--decoder must be bank, generative or hybrid, got {decoder!r}"))
    if bank is not None and (decoder or settings.decoder) == "generative":
        raise fail(ValueError(f"the generative decoder writes from the answer vector and reads no bank: "
                              f"use --decoder bank to answer from {bank!r}"))
    given = list(questions or [])
    interactive = not given and file is None and sys.stdin.isatty()
    try:
        check_texts(given if reference is None else [*given, reference])  # before the model loads
        if file is not None or not (given or interactive):
            given += question_lines(file, settings.max_question_chars)
        if reference is not None and (len(given) != 1 or interactive):
            raise ValueError(f"--reference scores one answer: give exactly one question with it ({len(given)} given)")
        if (api or settings.api_url) is not None:
            if decoder is not None:
                raise ValueError("--decoder is the API workers' setting: drop it with --api, or answer here without --api")
            url = api or settings.api_url or ""
            answers = ask_through(settings, url, prompted_questions() if interactive else given, reference, bank,
                                  min_confidence, rerank)
            for result in answers:
                show_answer(result, heading=len(given) > 1)
            return
        ask_here(settings, given, interactive, reference, decoder, bank, min_confidence, rerank)
    except (CubeQAError, OSError, ValueError, RemoteError) as exc:
        raise fail(exc) from exc


def ask_here(settings: Settings, given: list[str], interactive: bool, reference: str | None, decoder: str | None,
             bank: str | None, min_confidence: float | None, rerank: bool | None) -> None:
    """Answers in this process: the models load once (behind a spinner at a prompt), questions ASK_BATCH at a time."""
    from pipeline import resolve_min_confidence  # here: it loads torch, which an --api ask never needs

    threshold = resolve_min_confidence(min_confidence, settings.min_confidence, None)  # the bundle's: in the stage
    reranks = resolve_rerank(settings.model_copy(update={"decoder": decoder or settings.decoder}), rerank)
    if interactive:
        with errors.status("loading the models"):
            pipe, ref = answering_pipeline(settings, decoder, bank, reranks)
        for question in prompted_questions():
            show_answer(pipe.process_batch([question], bank=ref, min_confidence=threshold, rerank=reranks)[0])
        return
    pipe, ref = answering_pipeline(settings, decoder, bank, reranks)
    for start in range(0, len(given), ASK_BATCH):
        chunk = given[start : start + ASK_BATCH]
        refs = None if reference is None else [reference]
        for result in pipe.process_batch(chunk, refs, bank=ref, min_confidence=threshold, rerank=reranks):
            show_answer(result, heading=len(given) > 1)


def ask_through(settings: Settings, url: str, questions: Iterable[str], reference: str | None, bank: str | None,
                min_confidence: float | None, rerank: bool | None) -> Iterator[AnswerResult]:
    """The answers of a running API at `url` (its bearer token: CUBEQA_API_TOKEN), in question order."""
    from cubeqa.client import Client
    from cubeqa.remote import ask_api

    token = settings.api_token.get_secret_value() if settings.api_token else None
    with Client(url, token=token) as client:
        yield from ask_api(client, questions, reference=reference, bank=bank, min_confidence=min_confidence,
                           rerank=rerank)


ASK_BATCH = 32  # questions encoded together: answers print as they come, memory stays flat


def answering_pipeline(
    settings: Settings, decoder: str | None, bank: str | None = None, rerank: bool = True,
) -> tuple[ProductionPipeline, BankRef | None]:
    """The bundle's ProductionPipeline as the settings describe it (10-30 s: the encoder, cube and decoders load), and the
    current version of `bank` (found before anything loads; checked against the bundle's encoder)."""
    from pipeline import BankCache, BankRef, read_manifest
    from pipeline.decoders.base import DecoderKind
    from pipeline.production import ProductionPipeline

    store = bank_store(settings)
    with hinted(settings):
        ref = None if bank is None else BankRef(bank, store.resolve(bank))
    banks = BankCache(store, settings.bank_cache_mb * 2**20, read_manifest(settings.bundle_dir).encoder)
    if ref is not None:
        banks.get(ref)  # a bank of another encoder is refused here, naming both
    if (decoder or settings.decoder) == "hybrid" and hybrid_is_bank_only(settings):
        errors.print("note: this bundle's hybrid threshold is -1 (chosen on validation: routing to the generative decoder "
                     "raised the echo rate at every threshold), so --decoder hybrid answers from the bank alone", soft_wrap=True)
    pipe = ProductionPipeline.from_bundle(
        settings.bundle_dir,
        encoder_config=build_encoder_config(settings),
        bank_config=bank_config(settings),
        cache_dir=settings.cache_dir,
        top_k=settings.top_k,
        decoder=DecoderKind(decoder or settings.decoder),
        generative_options=generative_options(settings),
        banks=banks,
        min_confidence=settings.min_confidence,
        runtime=settings.runtime,
        threads=settings.threads,
        rerank=rerank,
    )
    return pipe, ref


def hybrid_is_bank_only(settings: Settings) -> bool:
    """Whether the bundle's hybrid threshold routes nothing to the generative decoder."""
    from pipeline.checkpoint import read_hybrid_threshold
    from pipeline.decoders.hybrid import BANK_ONLY

    threshold = read_hybrid_threshold(settings.bundle_dir)
    return threshold is not None and threshold <= BANK_ONLY


def question_lines(file: Path | None, max_chars: int) -> list[str]:
    """The questions of a file (standard input for None or `-`), one a line; a bad line is reported on stderr with
    its number and skipped, blank lines are passed over; no question at all is an error."""
    if file is None or str(file) == "-":
        name, data = "standard input", sys.stdin.buffer.read()
    else:
        name, data = str(file), file.read_bytes()
    found: list[str] = []
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")  # a byte-order mark may open the file
            if text.strip():
                check_text(text, "question", max_chars, required=True)
                found.append(text)
        except UnicodeDecodeError as exc:
            errors.print(f"[yellow]skipped[/yellow] {escape(f'{name}:{number}: not UTF-8 ({exc.reason} at byte {exc.start})')}", soft_wrap=True)
        except ValueError as exc:
            errors.print(f"[yellow]skipped[/yellow] {escape(f'{name}:{number}: {exc}')}", soft_wrap=True)
    if not found:
        raise ValueError(f"{name}: no questions (one a line)")
    return found


def prompted_questions() -> Iterator[str]:
    """Questions typed at a prompt until an empty line, Ctrl-D or Ctrl-C; a bad one is refused and the prompt returns."""
    from pipeline.encoding import check_texts
    from pipeline.errors import InputError

    with contextlib.suppress(ImportError):  # console.input reads through input(): with readline, arrow keys recall questions
        import readline  # noqa: F401
    errors.print("one question a line; an empty line or Ctrl-D ends", style="dim")
    while True:
        try:
            line = console.input("[bold]question>[/bold] ")
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        if not line.strip():
            return
        try:
            check_texts([line])
        except InputError as exc:
            errors.print(f"[red]error:[/red] {escape(str(exc))}")
            continue
        yield line


def evidence_place(evidence: dict[str, Any]) -> str:
    """Where an evidence sentence is: its file's name, the document title and the section path, each said once."""
    source = evidence.get("source")
    parts = [Path(source).name if source else None, evidence.get("title"), *evidence.get("section", [])]
    named = [str(part) for part in dict.fromkeys(parts) if part]
    return " › ".join(named) or str(evidence["doc_id"])


def show_answer(result: AnswerResult, heading: bool = False) -> None:
    """One question's answer, score, decoder path, other candidates and metrics (headed by the question among several)."""
    if heading:
        console.print(f"[bold]question:[/bold] {escape(result.question)}")
    console.print(f"[bold]answer:[/bold] {escape(result.answer)}")
    confidence = "" if result.confidence is None else f"confidence {confidence_text(result.confidence)}  "
    kind = "fidelity" if result.path == "generative" else "score"  # a generated answer's score measures fidelity to the vector, not correctness
    reranked = (result.evidence or {}).get("rerank")
    order = "" if reranked is None else f"  reranked {reranked:.2f}"
    console.print(f"{confidence}{kind} {result.score:.4f}{order}  path {result.path}" + ("  (question truncated)" if result.truncated else ""))
    if result.evidence is not None and result.evidence.get("doc_id") is not None:
        console.print(f"  from {escape(evidence_place(result.evidence))}, sentence {result.evidence['position'] + 1}"
                      + (f" (best match: {escape(result.evidence['sentence'])})" if result.path == "none" else ""), style="dim")
        for text in result.evidence.get("before", [])[-1:]:
            console.print(f"  before: {escape(text)}", style="dim")
        for text in result.evidence.get("after", [])[:1]:
            console.print(f"  after: {escape(text)}", style="dim")
    shown = result.candidates[1:] if result.path == "bank" else [c for c in result.candidates if c[0] != result.answer]
    label = {"bank": "also", "generative": "beam candidate"}.get(result.path, "nearest")
    for text, score in shown:
        console.print(f"  {label} {score:.4f}: {escape(text)}", style="dim")
    for name, value in result.metrics.items():
        console.print(f"  {name} {value:.4f}", style="dim")
    if heading:
        console.print()
