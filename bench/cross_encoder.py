"""The cross-encoder candidate of the rerank stage, trained and measured on its own and as one more LTR feature.

A cross-encoder reads question and sentence together: the teacher's first `--layers` transformer layers
(initialised from its own weights, no download) and a linear head on their mean-pooled states, trained listwise (softmax over
1 gold + `--negatives` hard negatives drawn from the fused top 30) for a fixed `--steps` schedule with AdamW.
Training questions are the first half of the training split (by row: its articles are contiguous); a sample
of the second half (`--stack-questions`) trains the learning-to-rank models compared here, one of them with
the cross-encoder's score as a feature, so that model never sees a score the cross-encoder was trained on. Validation is used for the figures only.

Prints validation P@1 of fused, LTR (pipeline.rerank), the cross-encoder alone, and LTR with its score, with
paired 95% intervals against fused; and CPU ms per question for the cross-encoder at this depth.

    .venv/bin/python bench/cross_encoder.py --layers 2 --steps 600 --json docs/results/cross-encoder.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from rerank_data import RerankData, load_rerank_data  # noqa: E402

from cubeqa.provenance import run_record  # noqa: E402
from pipeline.encoder import TeacherEncoder  # noqa: E402
from pipeline.evaluation import paired_bootstrap  # noqa: E402
from pipeline.rerank.ranker import RankerConfig, train_ranker  # noqa: E402


class CrossEncoder(torch.nn.Module):
    """The teacher's embeddings and first `layers` layers, and a score from the mean of the pair's token states (the
    teacher was trained with mean pooling: its [CLS] state barely moves with the sentence)."""

    def __init__(self, teacher: TeacherEncoder, layers: int) -> None:
        super().__init__()
        import copy

        model = copy.deepcopy(teacher.model)
        model.encoder.layer = model.encoder.layer[:layers]
        model.requires_grad_(True)  # the teacher's copy arrives frozen
        self.body = model
        self.head = torch.nn.Linear(model.config.hidden_size, 1)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        states = self.body(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
        return self.head((states * mask).sum(1) / mask.sum(1)).squeeze(-1)


def pairs_batch(tokenizer, questions: list[str], sentences: list[str], max_length: int) -> dict[str, torch.Tensor]:
    return dict(tokenizer(questions, sentences, padding=True, truncation="only_second", max_length=max_length, return_tensors="pt"))


def score_lists(model: CrossEncoder, tokenizer, data: RerankData, index: np.ndarray, depth: int, max_length: int,
                chunk: int = 128) -> tuple[np.ndarray, float]:
    """(len(index), depth) scores of each question's first `depth` candidates; and ms per question."""
    model.eval()
    out = np.full((len(index), depth), -np.inf)
    pairs = [(n, j) for n, i in enumerate(index) for j in range(depth) if data.rows[i, j] >= 0]
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(pairs), chunk):
            part = pairs[start:start + chunk]
            batch = pairs_batch(tokenizer, [data.questions[index[n]] for n, _ in part],
                                [data.texts[data.rows[index[n], j]] for n, j in part], max_length)
            scores = model(batch).numpy()
            for (n, j), s in zip(part, scores):
                out[n, j] = s
    return out, 1000 * (time.perf_counter() - started) / max(1, len(index))


def train(model: CrossEncoder, tokenizer, data: RerankData, index: np.ndarray, args: argparse.Namespace) -> list[float]:
    """Fixed schedule: `steps` steps of `questions` questions, each 1 gold + `negatives` from the fused top 30."""
    rng = np.random.default_rng(args.seed)
    usable = [i for i in index if data.gold[i, :30].any()]
    optimiser = torch.optim.AdamW([
        {"params": model.body.parameters(), "lr": args.lr},
        {"params": model.head.parameters(), "lr": args.head_lr},
    ], weight_decay=0.01)
    order = rng.permutation(usable)
    losses = []
    model.train()
    started = time.perf_counter()
    for step in range(args.steps):
        chosen = order[(step * args.questions) % len(order):][: args.questions]
        qs, ss = [], []
        for i in chosen:
            golds = np.flatnonzero(data.gold[i, :30])
            negatives = [j for j in range(30) if data.rows[i, j] >= 0 and not data.gold[i, j]]
            picks = [int(rng.choice(golds)), *rng.choice(negatives, size=args.negatives, replace=False).tolist()]
            qs += [data.questions[i]] * len(picks)
            ss += [data.texts[data.rows[i, j]] for j in picks]
        scores = model(pairs_batch(tokenizer, qs, ss, args.max_length)).view(len(chosen), args.negatives + 1)
        loss = torch.nn.functional.cross_entropy(scores, torch.zeros(len(chosen), dtype=torch.long))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
        if (step + 1) % 50 == 0:
            print(f"step {step + 1}/{args.steps} loss {np.mean(losses[-50:]):.4f} "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
    return losses


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--questions", type=int, default=8, help="questions per step")
    p.add_argument("--negatives", type=int, default=7)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--head-lr", type=float, default=1e-3)
    p.add_argument("--max-length", type=int, default=96)
    p.add_argument("--depth", type=int, default=20, help="candidates scored per question")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--stack-questions", type=int, default=2000,
                   help="questions of the second half of train scored for the LTR + cross-encoder model (scoring is the slow part)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    teacher = TeacherEncoder()
    train_data, val = load_rerank_data(teacher, args.depth)
    half = len(train_data.questions) // 2
    first = np.arange(half)
    second = np.random.default_rng(args.seed).permutation(np.arange(half, len(train_data.questions)))[: args.stack_questions]
    model = CrossEncoder(teacher, args.layers)
    started = time.perf_counter()
    losses = train(model, teacher.tokenizer, train_data, first, args)
    train_seconds = time.perf_counter() - started
    val_scores, ms = score_lists(model, teacher.tokenizer, val, np.arange(len(val.questions)), args.depth, args.max_length)
    print(f"validation scored: {ms:.1f} ms a question ({args.depth} candidates, {args.layers} layers, {args.threads} threads)", flush=True)
    second_scores, _ = score_lists(model, teacher.tokenizer, train_data, second, args.depth, args.max_length)
    fused = val.gold[:, 0].astype(np.float64)

    def picked(scores: np.ndarray) -> np.ndarray:
        return val.gold[np.arange(len(scores)), np.argmax(scores, axis=1)].astype(np.float64)

    config = RankerConfig(args.depth)
    ltr = train_ranker(train_data.features[second], train_data.present[second], train_data.gold[second, :args.depth], config)
    with_ce = train_ranker(np.concatenate([train_data.features[second], second_scores[..., None]], -1),
                           train_data.present[second], train_data.gold[second, :args.depth], config)
    rows = {
        "fused": fused,
        f"LTR ({len(second)} questions of the second half)": picked(ltr.score(val.features)),
        f"cross-encoder ({args.layers} layers)": picked(val_scores),
        "LTR + cross-encoder score": picked(with_ce.score(np.concatenate([val.features, val_scores[..., None]], -1))),
    }
    report = {}
    for name, hit in rows.items():
        interval = paired_bootstrap(hit - fused, args.resamples)
        report[name] = {"P@1": float(hit.mean()), "minus_fused": interval.to_dict()}
        print(f"{name:<34} P@1 {hit.mean():.4f}  − fused {interval.mean:+.4f} [{interval.low:+.4f}, {interval.high:+.4f}]")
    if args.json:
        record = {"run": run_record("bench/cross_encoder.py", sys.argv[1:] if argv is None else argv),
                  "config": vars(args) | {"json": str(args.json)}, "train_seconds": round(train_seconds),
                  "ms_per_question": round(ms, 1), "final_loss": float(np.mean(losses[-50:])), "validation": report}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
