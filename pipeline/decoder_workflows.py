"""Train, load and measure the generative decoder (what `cubeqa train-decoder` and `cubeqa eval --decoder` call)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.checkpoint import check_encoder, read_manifest
from pipeline.checkpoint import save_threshold as save_threshold  # where the CLI and tests import it from
from pipeline.data import EmbeddedPairs, numbered_lines
from pipeline.decoders.generative import GenerativeConfig, GenerativeDecoder, build_net, save_decoder
from pipeline.decoders.generative.io import save_words
from pipeline.decoders.words import RealWords
from pipeline.encoder import TeacherEncoder
from pipeline.errors import InputError
from pipeline.metrics import decode_fidelity, e2e_cos, echo, echo_rate, routes_to_generative
from pipeline.training.decoder_trainer import DecoderTrainConfig, DecoderTrainReport, ProgressCallback, train_decoder
from pipeline.workflows import EmbedProgress, embed_texts, load_embedded


def unique_sentences(*groups: tuple[list[str], np.ndarray]) -> tuple[list[str], np.ndarray]:
    """Texts in first-seen order without repeats, with their vectors."""
    seen: dict[str, int] = {}
    vectors = []
    for texts, vecs in groups:
        for text, vec in zip(texts, vecs):
            if text not in seen:
                seen[text] = len(seen)
                vectors.append(vec)
    return list(seen), np.asarray(vectors, dtype=np.float32).reshape(len(seen), -1)


def read_text_file(path: Path) -> list[str]:
    """Non-empty lines of a UTF-8 text file (extra training text for the decoder)."""
    texts = [line.strip() for _, line in numbered_lines(path) if line.strip()]
    if not texts:
        raise InputError(f"{path}: no text lines")
    return texts


def fragments(texts: list[str], per_text: int, *, min_words: int = 4, seed: int = 0) -> list[str]:
    """Random runs of consecutive words (at least `min_words`, fewer than all) from each text of at least
    twice that length: more (text, vector) pairs from the same sentences, so the decoder meets each word in
    more than the one context it came from (32k sentences overfit)."""
    rng = np.random.default_rng(seed)
    out = []
    for text in texts:
        words = text.split()
        if per_text < 1 or len(words) < 2 * min_words:
            continue
        for _ in range(per_text):
            size = int(rng.integers(min_words, len(words)))
            start = int(rng.integers(0, len(words) - size + 1))
            out.append(" ".join(words[start : start + size]))
    return out


@dataclass
class DecoderTrainOutcome:
    bundle_dir: Path
    report: DecoderTrainReport
    sentences: int


def train_decoder_bundle(
    bundle_dir: Path,
    train_path: Path,
    *,
    encoder: TeacherEncoder,
    config: GenerativeConfig,
    train_config: DecoderTrainConfig,
    cache_dir: Path | None,
    extra_text: list[Path] | tuple[Path, ...] = (),
    fragments_per_answer: int = 0,
    on_embed: EmbedProgress | None = None,
    on_progress: ProgressCallback | None = None,
) -> DecoderTrainOutcome:
    """Trains a decoder on the training questions and answers (plus extra text, plus `fragments_per_answer`
    random word runs of each training answer) and adds it to the bundle."""
    check_encoder(read_manifest(bundle_dir), encoder.identity, Path(bundle_dir))
    extra = {Path(p): read_text_file(p) for p in extra_text}  # bad files fail before any work
    train = load_embedded(train_path, encoder, cache_dir, on_embed)
    groups = [([p.question for p in train.pairs], train.q), ([p.answer for p in train.pairs], train.a)]
    for path, texts in extra.items():
        groups.append((texts, embed_texts(encoder, texts, path.name, cache_dir, on_embed)))
    pieces = fragments(sorted({p.answer for p in train.pairs}), fragments_per_answer, seed=train_config.seed)
    if pieces:
        groups.append((pieces, embed_texts(encoder, pieces, "answer fragments", cache_dir, on_embed)))
    texts, vectors = unique_sentences(*groups)
    net = build_net(config, len(encoder.tokenizer), encoder.model_dir)
    report = train_decoder(net, encoder.tokenizer, texts, vectors, train_config, on_progress)
    words = RealWords(encoder.tokenizer, texts)
    save_decoder(
        net, bundle_dir,
        {"train_config": train_config.to_dict(), "report": report.to_dict(), "sources": [Path(train_path).name, *(p.name for p in extra)],
         "fragments_per_answer": fragments_per_answer, "sentences": len(texts)},
    )
    save_words(bundle_dir, words)
    return DecoderTrainOutcome(Path(bundle_dir), report, len(texts))


@dataclass
class RoundTrip:
    """Round-trip figures of one decoding mode on held-out sentences."""

    mode: str
    sentences: int
    fidelity: float  # mean cos(enc(decode(enc(s))), enc(s))
    bleu: float
    length_ratio: float  # output length / reference length (BLEU's tokens); BLEU's brevity penalty bites below 1
    exact_match: float
    real_words: float
    ms_median: float
    ms_p90: float
    examples: list[tuple[str, str]]
    outputs: list[str] = field(default_factory=list, repr=False)  # per sentence, for paired comparisons (not in the JSON)
    cosines: list[float] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("outputs", "cosines")}


def round_trip(
    decoder: GenerativeDecoder, encoder: TeacherEncoder, texts: list[str], vectors: np.ndarray, mode: str, progress: Callable[[int], None] | None = None
) -> RoundTrip:
    """Decodes each vector alone (batch 1, as a single request would be), re-embeds the outputs, scores them."""
    import sacrebleu

    outputs, ids, times = [], [], []
    for i in range(len(texts)):
        started = time.perf_counter()
        result = decoder.decode(vectors[i : i + 1])[0]
        times.append(1000 * (time.perf_counter() - started))
        outputs.append(result.text)
        ids.append(result.ids)
        if progress:
            progress(1)
    cosines = decode_fidelity(encoder.encode_generated(outputs), vectors)
    references = [normalise(t, decoder) for t in texts]
    bleu = sacrebleu.corpus_bleu(outputs, [references])
    return RoundTrip(
        mode=mode,
        sentences=len(texts),
        fidelity=float(cosines.mean()),
        bleu=float(bleu.score),
        length_ratio=float(bleu.sys_len / max(1, bleu.ref_len)),
        exact_match=float(np.mean([o == r for o, r in zip(outputs, references)])),
        real_words=decoder.words.real_word_share(ids) if decoder.words else float("nan"),
        ms_median=float(np.median(times)),
        ms_p90=float(np.percentile(times, 90)),
        examples=list(zip(texts[:5], outputs[:5])),
        outputs=outputs,
        cosines=cosines.tolist(),
    )


def mode_label(decoder: GenerativeDecoder) -> str:
    """A decoding mode in words, e.g. "beam 3 + rerank, min length 0.6" (", fp32" when it does not run in int8)."""
    config = decoder.config
    search = "greedy" if config.beam <= 1 else f"beam {config.beam}" + (" + rerank" if config.rerank else "")
    return search + (f", min length {config.min_length:g}" if config.min_length > 0 else "") + ("" if decoder.int8 else ", fp32")


def normalise(text: str, decoder: GenerativeDecoder) -> str:
    """A reference as the uncased teacher vocabulary can spell it (lower case, accents stripped, tokenised spacing)."""
    return decoder.text_of(decoder.tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass
class QAFigures:
    """One decoder on a Q→A split, decoding the cube outputs (closed bank: the bundle's training sentences)."""

    decoder: str
    e2e_cos: float
    decode_fidelity: float
    bleu: float
    echo_rate: float
    generative_share: float  # questions the generative path answered

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class DecoderReport:
    round_trip: list[RoundTrip]
    nearest_training_fidelity: float  # the reference point: the nearest training sentence's cosine
    nearest_training_bleu: float
    qa: list[QAFigures]
    threshold: dict[str, Any]
    split_size: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "round_trip": [r.to_dict() for r in self.round_trip],
            "nearest_training_sentence": {"fidelity": self.nearest_training_fidelity, "bleu": self.nearest_training_bleu},
            "qa": [q.to_dict() for q in self.qa],
            "hybrid_threshold": self.threshold,
            "split_size": self.split_size,
        }


def split_sentences(split: EmbeddedPairs) -> tuple[list[str], np.ndarray]:
    """A split's unique questions and answers with their vectors."""
    return unique_sentences(([p.question for p in split.pairs], split.q), ([p.answer for p in split.pairs], split.a))


ROUND_TRIP_SENTENCES = 500  # the eval's round-trip sample: the first ones of round_trip_sample's order


def round_trip_sample(split: EmbeddedPairs, sentences: int, skip: int = 0) -> tuple[list[str], np.ndarray]:
    """A fixed random sample of the split's unique questions and answers: `sentences` of them after the first
    `skip` of one seeded order (the eval reports skip 0; bench/decoder_modes.py chooses modes past them)."""
    texts, vectors = split_sentences(split)
    pick = np.sort(np.random.default_rng(0).permutation(len(texts))[skip : skip + sentences])
    return [texts[i] for i in pick], vectors[pick]


def evaluate_decoders(
    bundle_dir: Path,
    data_path: Path,
    train_path: Path,
    *,
    encoder: TeacherEncoder,
    cache_dir: Path | None,
    sentences: int = ROUND_TRIP_SENTENCES,
    modes: dict[str, dict[str, Any]] | None = None,
    on_embed: EmbedProgress | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> DecoderReport:
    """Round trip on held-out sentences (a fixed sample of the split's questions and answers) per decoding mode,
    then bank, generative and hybrid on the split's Q→A pairs, with the hybrid threshold chosen on this split."""
    import sacrebleu

    from pipeline.checkpoint import load_bundle
    from pipeline.decoders.generative import load_generative
    from pipeline.decoders.hybrid import choose_threshold
    from pipeline.decoders.phrase_bank import PhraseBankDecoder
    from pipeline.stages import answer_vectors

    bundle = load_bundle(bundle_dir, encoder.identity)
    base, _ = load_generative(bundle_dir, encoder)
    if not modes:
        others: list[dict[str, Any]] = [
            {"min_length": 0.0},
            {"beam": 1, "rerank": False},
            {"beam": 2, "rerank": True},
            {"beam": 3, "rerank": True, "min_length": 0.9},
            {"beam": 5, "rerank": True, "min_length": 0.9},
        ]
        default = mode_label(base)
        modes = {f"default ({default})": {}}
        for options in others:  # the default without its length floor, greedy, beams + rerank; each once
            label = mode_label(base.with_options(**options))
            if label != default:
                modes.setdefault(label, options)
    val = load_embedded(data_path, encoder, cache_dir, on_embed)
    train = load_embedded(train_path, encoder, cache_dir, on_embed)
    held_texts, held_vecs = round_trip_sample(val, sentences)

    train_texts, train_vecs = split_sentences(train)
    nearest = PhraseBankDecoder(train_texts, train_vecs).search(held_vecs, 1)[1][:, 0]
    near_fid = float(decode_fidelity(train_vecs[nearest], held_vecs).mean())
    near_bleu = float(sacrebleu.corpus_bleu([normalise(train_texts[i], base) for i in nearest], [[normalise(t, base) for t in held_texts]]).score)

    def mode_progress(name: str) -> Callable[[int], None] | None:
        report = progress
        return None if report is None else lambda n: report(name, n)

    trips = [
        round_trip(base.with_options(**options), encoder, held_texts, held_vecs, name, mode_progress(name))
        for name, options in modes.items()
    ]

    outputs = answer_vectors(bundle, encoder, [pair.question for pair in val.pairs], val.q)
    bank = PhraseBankDecoder(bundle.bank_texts, bundle.bank_vectors if bundle.bank_vectors is not None else encoder.encode(bundle.bank_texts).vectors)
    scores, rows = bank.search(outputs, 1)
    bank_vecs = bank.vectors[rows[:, 0]]
    bank_texts = [bank.texts[r] for r in rows[:, 0]]
    generated = []
    for start in range(0, len(outputs), 64):  # the default decoding mode, as the pipeline would answer
        generated += [g.text for g in base.decode(outputs[start : start + 64])]
        if progress:
            progress("Q→A generative", min(64, len(outputs) - start))
    gen_vecs = encoder.encode_generated(generated)
    refs = [normalise(p.answer, base) for p in val.pairs]

    def figures(name: str, texts: list[str], vecs: np.ndarray, share: float) -> QAFigures:
        return QAFigures(
            name, float(e2e_cos(vecs, val.a).mean()), float(decode_fidelity(vecs, outputs).mean()),
            float(sacrebleu.corpus_bleu(texts, [refs]).score), echo_rate(vecs, val.q, val.a), share,
        )

    grid = np.quantile(scores[:, 0], np.linspace(0.05, 0.95, 19))
    choice = choose_threshold(
        scores[:, 0], e2e_cos(bank_vecs, val.a), echo(bank_vecs, val.q, val.a), e2e_cos(gen_vecs, val.a), echo(gen_vecs, val.q, val.a), grid
    )
    routed = routes_to_generative(scores[:, 0], choice.threshold)
    bank_spelled = [normalise(t, base) for t in bank_texts]
    hybrid_texts = [g if r else b for g, b, r in zip(generated, bank_spelled, routed)]
    qa = [
        figures("bank", bank_spelled, bank_vecs, 0.0),
        figures("generative", generated, gen_vecs, 1.0),
        figures("hybrid", hybrid_texts, np.where(routed[:, None], gen_vecs, bank_vecs), float(routed.mean())),
    ]
    threshold = {"threshold": choice.threshold, "chosen_on": Path(data_path).name, "e2e_cos": choice.e2e_cos, "echo_rate": choice.echo_rate,
                 "generative_share": choice.generative_share, "table": choice.table}
    return DecoderReport(trips, near_fid, near_bleu, qa, threshold, len(val.pairs))
