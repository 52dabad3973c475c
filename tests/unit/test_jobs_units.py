"""Pure parts of the job system: vector wire format, per-item isolation, bulk-file intake."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from cubeqa.intake import MAX_ALT_ANSWERS, IntakeError, read_bulk
from pipeline import InputError
from tasks.runner import isolate
from tasks.wire import MicroBatch, WireError, pack, unpack


def test_vectors_travel_as_raw_float32_and_come_back_exactly() -> None:
    vectors = np.random.default_rng(0).standard_normal((5, 384)).astype(np.float32)
    data = pack(vectors)
    assert isinstance(data, bytes) and len(data) == 5 * 384 * 4
    np.testing.assert_array_equal(unpack(data, 384), vectors)
    with pytest.raises(ValueError, match="whole number"):
        unpack(data[:-1], 384)


def test_a_micro_batch_survives_msgpack_and_an_unknown_version_is_refused() -> None:
    from kombu.serialization import dumps, loads

    vectors = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    batch = MicroBatch(batch="b" * 32, jobs=["j1", "j2"], dim=4, q=pack(vectors), tower=pack(-vectors), has_ref=[False, True], bank="squad",
                       bank_version="v3", min_confidence=0.25)
    content_type, encoding, body = dumps(((batch.to_wire(),), {}, {}), serializer="msgpack")
    (message,), _, _ = loads(body, content_type, encoding, accept=["application/x-msgpack"])
    back = MicroBatch.from_wire(message)
    assert back == batch and (back.bank, back.bank_version, back.min_confidence, back.version) == ("squad", "v3", 0.25, 1)
    np.testing.assert_array_equal(unpack(back.q, 4), vectors)
    np.testing.assert_array_equal(unpack(back.tower, 4), -vectors)
    legacy = {k: v for k, v in batch.to_wire().items() if k not in ("version", "bank", "bank_version", "min_confidence", "tower")}
    old = MicroBatch.from_wire(legacy)  # a message sent before `version`, the bank fields and the tower existed
    assert old.jobs == ["j1", "j2"] and (old.bank, old.bank_version, old.min_confidence, old.tower) == (None, None, None, b"")
    with pytest.raises(WireError, match="version 2 is unknown to this worker"):
        MicroBatch.from_wire({**message, "version": 2})
    with pytest.raises(WireError, match="unknown fields"):
        MicroBatch.from_wire({**message, "colour": "red"})


def test_a_failed_row_leaves_the_micro_batch_and_the_rest_stay_aligned() -> None:
    batch = MicroBatch(batch="b", jobs=["j0", "j1", "j2"], truncated=[False, True, False])
    kept = batch.drop_failed({1: "bad input"}, {"truncated": batch.truncated})
    assert (batch.jobs, batch.failed, kept["truncated"]) == (["j0", "j2"], [["j1", "bad input"]], [False, False])


def test_dropped_jobs_leave_every_row_of_theirs_and_the_rest_stay_aligned() -> None:
    """A stage drops cancelled jobs from any message: the encode stage's texts and references, the rerank stage's
    candidates, and the failed entries."""
    encode = MicroBatch(batch="b", jobs=["j1", "j2", "j3"], texts=["q1", "q2", "q3"], refs=["r1", None, "r3"],
                        failed=[["j0", "empty"], ["j9", "empty"]])
    encode.drop_jobs({"j2", "j9"})
    assert (encode.jobs, encode.texts, encode.refs) == (["j1", "j3"], ["q1", "q3"], ["r1", "r3"])
    assert encode.failed == [["j0", "empty"]]

    rows = np.arange(3 * 2, dtype=np.int64).reshape(3, 2)
    scores = np.arange(3 * 2 * 4, dtype=np.float64).reshape(3, 2, 4)
    vectors = np.arange(3 * 4, dtype=np.float32).reshape(3, 4)
    rerank = MicroBatch(batch="b", jobs=["j1", "j2", "j3"], dim=4, q=pack(vectors), a=pack(2 * vectors),
                        truncated=[True, False, False])
    rerank.set_hits(rows, scores)
    rerank.set_refs([None, vectors[1], vectors[2]])
    rerank.drop_jobs({"j1"})
    kept_rows, kept_scores = rerank.hits()
    np.testing.assert_array_equal(kept_rows, rows[1:])
    np.testing.assert_array_equal(kept_scores, scores[1:])
    np.testing.assert_array_equal(unpack(rerank.a, 4), 2 * vectors[1:])
    assert rerank.truncated == [False, False] and [r.tolist() for r in rerank.refs_by_row()] == vectors[1:].tolist()
    rerank.drop_jobs({"j2", "j3"})
    assert (rerank.jobs, rerank.q, rerank.r, rerank.hit_rows) == ([], b"", b"", b"")


def test_the_questions_travel_to_decode_and_an_older_message_without_them_reads_as_blank() -> None:
    batch = MicroBatch(batch="b", jobs=["j0", "j1"], texts=["Who?", "What?"])
    assert MicroBatch.from_wire(batch.to_wire()).question_texts() == ["Who?", "What?"]
    encoded_before = MicroBatch(batch="b", jobs=["j0", "j1"])  # encode cleared its texts: decode searches dense-only
    assert encoded_before.question_texts() == ["", ""]


def test_an_item_that_raises_fails_alone() -> None:
    def square(items: list[int]) -> list[int]:
        if 3 in items:
            raise InputError("three is poison")
        return [i * i for i in items]

    results, errors = isolate(square, [1, 2, 3, 4])
    assert results == [1, 4, None, 16]
    assert errors == {2: "three is poison"}


def test_a_transient_fault_is_not_swallowed() -> None:
    import sqlalchemy.exc

    def broken(items: list[int]) -> list[int]:
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection"))

    with pytest.raises(sqlalchemy.exc.OperationalError):
        isolate(broken, [1, 2])


def test_bulk_jsonl_reports_each_bad_line_and_keeps_the_good(tmp_path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_bytes(
        b'{"question": "Where is Kenya?", "reference": "In Africa."}\n'
        b'{"question": ""}\n'
        b"not json\n"
        b"\n"
        b'{"question": 5}\n'
        b'{"question": "caf\xe9?"}\n'
        b'["a list"]\n'
        b'{"question": "Who?", "answer": "Someone."}\n'
    )
    intake = read_bulk(path, max_chars=100, max_items=10)
    assert [(j.question, j.reference, j.line) for j in intake.jobs] == [("Where is Kenya?", "In Africa.", 1), ("Who?", "Someone.", 8)]
    reasons = dict(intake.rejected)
    assert sorted(reasons) == [2, 3, 5, 6, 7]
    assert "empty" in reasons[2] and "invalid JSON" in reasons[3] and "must be a string" in reasons[5]
    assert "not UTF-8" in reasons[6] and "object" in reasons[7]


def test_bulk_csv_needs_a_question_column_and_checks_each_row(tmp_path) -> None:
    good = tmp_path / "q.csv"
    good.write_text('question,reference\nWhere is Kenya?,In Africa.\n,\n"Who, then?",\ntoo,many,fields\n' + "x" * 20 + ",\n", encoding="utf-8")
    intake = read_bulk(good, max_chars=10, max_items=10)
    assert [(j.question, j.reference, j.line) for j in intake.jobs] == [("Who, then?", None, 4)]
    assert [line for line, _ in intake.rejected] == [2, 5, 6]
    bad = tmp_path / "bad.csv"
    bad.write_text("text,answer\nhello,world\n", encoding="utf-8")
    with pytest.raises(IntakeError, match="'question' column"):
        read_bulk(bad, max_chars=10, max_items=10)


def test_a_json_error_is_reported_at_its_own_column(tmp_path) -> None:
    path = tmp_path / "q.jsonl"
    line = '{"question": "Where is the capital of Kenya?", "reference" "Nairobi"}'
    path.write_text(line + "\n" + '{"question": "Who wrote it?"\n', encoding="utf-8")
    reasons = dict(read_bulk(path, max_chars=100, max_items=10).rejected)
    column = line.index('"Nairobi') + 1
    assert reasons[1] == f"invalid JSON (Expecting ':' delimiter at column {column})"
    assert reasons[2] == "invalid JSON (Expecting ',' delimiter at column 29)"  # just past its end, not column 1 of the next


def test_api_and_file_items_share_one_check() -> None:
    from cubeqa.intake import item_problems

    problems = item_problems("x" * 11, "\x00", max_chars=10)
    assert isinstance(problems, list)
    assert [(p.field, str(p)) for p in problems] == [("question", "'question' has 11 characters; the limit is 10"), ("reference", "'reference' contains a NUL character")]
    job = item_problems("Where?", "  ", max_chars=10)
    assert not isinstance(job, list) and (job.question, job.reference) == ("Where?", None)


def test_bulk_jsonl_takes_alt_answers_and_a_bad_list_fails_its_line_alone(tmp_path) -> None:
    records = [
        {"question": "When did it open?", "answer": "It opened in 1889.", "alt_answers": ["In 1889.", "The year was 1889."]},
        {"question": "q2?", "reference": "r.", "alt_answers": "In 1889."},
        {"question": "q3?", "reference": "r.", "alt_answers": ["fine.", 5]},
        {"question": "q4?", "reference": "r.", "alt_answers": ["fine.", "  "]},
        {"question": "q5?", "reference": "r.", "alt_answers": ["x" * 101]},
        {"question": "q6?", "reference": "r.", "alt_answers": ["s."] * 21},
        {"question": "q7?", "alt_answers": ["In 1889."]},
        {"question": "q8?", "reference": "r.", "alt_answers": []},  # none, as the bench data files write it
        {"question": "q9?", "reference": "r.", "alt_answers": ["bad\x00"]},
        {"question": "q10?", "reference": "r.", "alt_answers": None},
    ]
    path = tmp_path / "alt.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    intake = read_bulk(path, max_chars=100, max_items=20)
    assert [(j.line, j.reference, j.alt_references) for j in intake.jobs] == [
        (1, "It opened in 1889.", ("In 1889.", "The year was 1889.")), (8, "r.", None), (10, "r.", None),
    ]
    assert dict(intake.rejected) == {
        2: "'alt_answers' must be a list of strings, not str",
        3: "'alt_answers[1]' must be a string, not int",
        4: "'alt_answers[1]' is empty",
        5: "'alt_answers[0]' has 101 characters; the limit is 100",
        6: f"'alt_answers' holds 21 sentences; the limit is {MAX_ALT_ANSWERS}",
        7: "'alt_answers' needs a 'reference': the alternatives count as right beside it",
        9: "'alt_answers[0]' contains a NUL character",
    }


def test_a_bad_alt_answers_is_its_own_field_problem_and_csv_refuses_the_column(tmp_path) -> None:
    from cubeqa.intake import item_problems

    problems = item_problems("", "r.", max_chars=10, alt_answers=["ok.", 3])
    assert isinstance(problems, list) and [p.field for p in problems] == ["question", "alt_answers"]
    job = item_problems("Where?", "r.", max_chars=10, alt_answers=["a.", "b."])
    assert not isinstance(job, list) and job.alt_references == ("a.", "b.")
    table = tmp_path / "alt.csv"
    table.write_text("question,reference,alt_answers\nWhere?,Here.,There.\n", encoding="utf-8")
    with pytest.raises(IntakeError, match="'alt_answers': alternative references are read from JSONL only"):
        read_bulk(table, max_chars=10, max_items=10)


def test_a_csv_result_holds_the_alternatives_as_a_json_list() -> None:
    from cubeqa.jobs_cli import CSV_FIELDS, flat

    row = {"line": 1, "question": "q?", "reference": "r.", "alt_references": ["a, b.", "c."], "evidence": None,
           "metrics": {}, "timings_ms": {}, "hosts": {}}
    assert CSV_FIELDS.index("alt_references") == CSV_FIELDS.index("reference") + 1
    assert json.loads(flat(row)["alt_references"]) == ["a, b.", "c."]
    assert flat(row | {"alt_references": None})["alt_references"] is None


def test_bulk_limits_and_formats(tmp_path) -> None:
    many = tmp_path / "many.jsonl"
    many.write_text("".join(f'{{"question": "q{i}?"}}\n' for i in range(5)), encoding="utf-8")
    with pytest.raises(IntakeError, match="more than 3 jobs"):
        read_bulk(many, max_chars=100, max_items=3)
    (tmp_path / "q.txt").write_text("Where is Kenya?\n", encoding="utf-8")
    with pytest.raises(IntakeError, match="unknown format"):
        read_bulk(tmp_path / "q.txt", max_chars=100, max_items=3)
    with pytest.raises(IntakeError, match="no such file"):
        read_bulk(tmp_path / "missing.jsonl", max_chars=100, max_items=3)


def test_only_the_encoder_on_the_cpu_runs_one_task_per_core_by_default() -> None:
    from workers.main import default_concurrency, nvidia_gpu_visible, usable_cores

    cores = usable_cores()
    assert 1 <= cores <= len(os.sched_getaffinity(0))
    assert default_concurrency("encode", "cpu") == default_concurrency("all", "cpu") == cores
    assert default_concurrency("encode", "auto") == (1 if nvidia_gpu_visible() else cores)
    assert default_concurrency("encode", "cuda") == default_concurrency("encode", "cuda:1") == 1
    assert default_concurrency("cube", "cpu") == default_concurrency("decode", "auto") == 1


def test_a_container_cpu_quota_caps_the_cores_counted(tmp_path) -> None:
    from workers.main import usable_cores

    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")  # 1.5 CPUs: two threads may run
    assert usable_cores(cpu_max) == min(2, len(os.sched_getaffinity(0)))
    cpu_max.write_text("50000 100000\n")
    assert usable_cores(cpu_max) == 1
    cpu_max.write_text("max 100000\n")
    assert usable_cores(cpu_max) == usable_cores(tmp_path / "absent") == len(os.sched_getaffinity(0))


def test_a_gpu_is_seen_only_when_the_driver_lists_one(tmp_path) -> None:
    from workers.main import nvidia_gpu_visible

    assert not nvidia_gpu_visible(tmp_path / "absent")
    assert not nvidia_gpu_visible(tmp_path)
    (tmp_path / "0000:00:1e.0").mkdir()
    assert nvidia_gpu_visible(tmp_path)
