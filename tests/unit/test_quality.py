"""The right-answer rule every quality summary counts (storage.quality.right_answer), with alternative references."""

from __future__ import annotations

from storage.quality import right_answer

REFERENCE = "The tower opened in 1889."
ALTERNATIVES = ("It opened in 1889.", "Its doors opened to the public in March 1889.")


def judged(answer: str | None, path: str = "bank", reference: str | None = REFERENCE,
           alternatives: tuple[str, ...] = ALTERNATIVES) -> float | None:
    return right_answer(answer=answer, reference=reference, decoder_path=path, alternatives=alternatives)


def test_an_answer_is_right_when_it_is_the_reference_or_any_alternative_as_normalised_text() -> None:
    assert judged("The tower opened in 1889.") == 1.0
    assert judged("it  OPENED in 1889.") == 1.0  # the first alternative: case and runs of spaces do not count
    assert judged("Its doors opened to the public in March 1889.") == 1.0
    assert judged("It opened in 1890.") == 0.0
    assert judged("It opened in 1889.", alternatives=()) == 0.0  # without them, only the reference counts
    assert right_answer(answer="It opened in 1889.", reference=REFERENCE, decoder_path="bank") == 0.0  # the default: none


def test_refused_unanswered_and_unreferenced_jobs_are_not_judged_whatever_the_alternatives() -> None:
    assert judged("It opened in 1889.", path="none") is None  # "no confident answer", its best match an alternative
    assert judged(None) is None
    assert judged("It opened in 1889.", reference=None) is None
