"""Settings come from CUBEQA_* variables, are validated, and refuse unknown fields."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from cubeqa.settings import Settings, default_bundle_dir


def test_defaults_point_at_the_shipped_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUBEQA_BUNDLE_DIR", raising=False)
    settings = Settings()
    assert settings.bundle_dir == default_bundle_dir()
    assert settings.bank_index == "flat" and settings.device == "auto"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CUBEQA_BUNDLE_DIR", str(tmp_path))
    monkeypatch.setenv("CUBEQA_MIN_SCORE", "0.55")
    monkeypatch.setenv("CUBEQA_BANK_INDEX", "hnsw")
    settings = Settings()
    assert settings.bundle_dir == tmp_path and settings.min_score == 0.55 and settings.bank_index == "hnsw"


def test_invalid_and_unknown_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUBEQA_BANK_INDEX", "ivf")
    with pytest.raises(ValidationError, match="bank_index"):
        Settings()
    monkeypatch.delenv("CUBEQA_BANK_INDEX")
    with pytest.raises(ValidationError, match="extra"):
        Settings(no_such_setting=1)
    monkeypatch.setenv("CUBEQA_DEVICE", "gpu")
    with pytest.raises(ValidationError, match="device"):
        Settings()
    monkeypatch.setenv("CUBEQA_DEVICE", "cuda:1")
    assert Settings().device == "cuda:1"


def test_a_misspelt_variable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUBEQA_MINSCORE", "0.5")
    with pytest.raises(ValidationError, match="CUBEQA_MINSCORE"):
        Settings()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [("CUBEQA_API_TOKEN", "  ", "unset it"), ("CUBEQA_FLOWER_BASIC_AUTH", "admin", "user:password"), ("CUBEQA_FLOWER_BASIC_AUTH", ":pw", "user:password")],
)
def test_empty_or_malformed_secrets_are_refused_without_echoing_them(monkeypatch, name, value, message) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message) as error:
        Settings()
    assert "pw" not in str(error.value).replace("password", "")


def test_generative_knobs_override_only_what_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from cubeqa.wiring import generative_options

    assert generative_options(Settings()) == {}  # the bundle's own defaults
    monkeypatch.setenv("CUBEQA_GENERATIVE_MIN_LENGTH", "0.7")
    monkeypatch.setenv("CUBEQA_GENERATIVE_BEAM", "1")
    assert generative_options(Settings()) == {"beam": 1, "min_length": 0.7}
    monkeypatch.setenv("CUBEQA_GENERATIVE_INT8", "false")
    assert generative_options(Settings()) == {"beam": 1, "min_length": 0.7, "int8": False}
    monkeypatch.setenv("CUBEQA_GENERATIVE_MIN_LENGTH", "-1")
    with pytest.raises(ValidationError, match="generative_min_length"):
        Settings()


def test_rerank_is_on_by_default_only_where_the_bundle_can_rerank(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from cubeqa.wiring import resolve_rerank
    from pipeline.errors import InputError

    monkeypatch.delenv("CUBEQA_BUNDLE_DIR", raising=False)
    shipped = Settings()
    assert (resolve_rerank(shipped, None), resolve_rerank(shipped, False), resolve_rerank(shipped, True)) == (True, False, True)
    monkeypatch.setenv("CUBEQA_RERANK", "false")
    assert resolve_rerank(Settings(), None) is False and resolve_rerank(Settings(), True) is True
    monkeypatch.delenv("CUBEQA_RERANK")
    without = Settings(bundle_dir=tmp_path)  # no rerank.json: jobs that do not say are not reranked
    assert resolve_rerank(without, None) is False
    with pytest.raises(InputError, match="has no reranker"):
        resolve_rerank(without, True)
    (tmp_path / "rerank.json").write_text("{}")  # a reranker whose confidence is not fit yet: only when asked
    assert resolve_rerank(without, None) is False and resolve_rerank(without, True) is True
    with pytest.raises(InputError, match="decoder is not the bank"):
        resolve_rerank(Settings(decoder="hybrid"), True)
