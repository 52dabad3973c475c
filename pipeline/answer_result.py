"""One question's outcome as every answering path returns it; torch-free, so a client of the API can build one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class AnswerResult:
    """One question's outcome: the answer text, which decoder path gave it, scores, timings, metrics."""

    question: str
    answer: str
    path: str  # "bank", "generative", or "none" when no bank sentence clears the bank's threshold
    score: float  # bank: fused score of the best sentence (cosine + lexical); generative: cos(enc(answer), output)
    candidates: tuple[tuple[str, float], ...]
    truncated: bool  # the question was longer than the encoder's limit and was cut
    timings_ms: dict[str, float] = field(default_factory=dict)  # per-item share of each stage's batch time
    metrics: dict[str, float] = field(default_factory=dict)
    confidence: float | None = None  # calibrated probability that the bank sentence is right; None for generated text
    evidence: dict[str, Any] | None = None  # the sentence's document, position, neighbours and the alternatives (pipeline.confidence.evidence)
