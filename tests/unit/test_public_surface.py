"""Pins what `pipeline` exports, so a change to the public surface is a deliberate one."""

from __future__ import annotations

import pipeline


def test_exported_members() -> None:
    assert sorted(pipeline.__all__) == sorted(
        [
            "NO_CONFIDENT_ANSWER",
            "AnswerResult",
            "Bundle",
            "BundleError",
            "Cube",
            "CubeConfig",
            "CubeQAError",
            "EncoderConfig",
            "EncoderError",
            "EncoderIdentity",
            "IncompatibleBundle",
            "InputError",
            "PhraseBankConfig",
            "PhraseBankDecoder",
            "ProductionPipeline",
            "TeacherEncoder",
            "load_bundle",
            "save_bundle",
        ]
    )
    for name in pipeline.__all__:
        assert hasattr(pipeline, name), name


def test_errors_form_one_tree() -> None:
    for name in ("InputError", "BundleError", "IncompatibleBundle", "EncoderError"):
        assert issubclass(getattr(pipeline, name), pipeline.CubeQAError)
    assert issubclass(pipeline.IncompatibleBundle, pipeline.BundleError)
