"""Errors raised by the model pipeline.

    CubeQAError
     ├── InputError           bad user input (empty text, malformed data line)
     ├── BundleError          a checkpoint bundle that cannot be loaded
     │    └── IncompatibleBundle   the bundle was made with another encoder or shape
     └── EncoderError         the teacher encoder cannot be loaded from its directory
"""

from __future__ import annotations


class CubeQAError(Exception):
    """Base class of every error the pipeline raises on purpose."""


class InputError(CubeQAError, ValueError):
    """Input that the pipeline refuses: empty text, a malformed data line."""


class BundleError(CubeQAError):
    """A checkpoint bundle that is missing, truncated or malformed."""


class IncompatibleBundle(BundleError):
    """A bundle whose encoder identity or shapes differ from the running ones."""


class EncoderError(CubeQAError):
    """The teacher encoder cannot be loaded."""
