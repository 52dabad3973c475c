"""Errors raised by the model pipeline.

    CubeQAError
     ├── InputError           bad user input (empty text, malformed data line)
     │    └── EmptyDocument        a readable document without one sentence (only headings, code or markup)
     ├── BundleError          a checkpoint bundle that cannot be loaded
     │    └── IncompatibleBundle   the bundle was made with another encoder or shape
     ├── EncoderError         the teacher encoder cannot be loaded from its directory
     └── BankError            a knowledge bank that cannot be built, found or loaded
          ├── BankNotFound         no bank of that name, or not that version (removed or never built)
          ├── BankExists           a build would overwrite a bank without replace
          ├── BankBusy             another process is building or removing the bank
          ├── IncompatibleBank     the bank was embedded with another encoder
          └── BankCorrupt          a bank version with missing or malformed files
"""

from __future__ import annotations


class CubeQAError(Exception):
    """Base class of every error the pipeline raises on purpose."""


class InputError(CubeQAError, ValueError):
    """Input that the pipeline refuses: empty text, a malformed data line."""


class EmptyDocument(InputError):
    """A document file that reads fine but holds no sentence: empty, only headings, code or markup, a scanned PDF."""


class BundleError(CubeQAError):
    """A checkpoint bundle that is missing, truncated or malformed."""


class IncompatibleBundle(BundleError):
    """A bundle whose encoder identity or shapes differ from the running ones."""


class EncoderError(CubeQAError):
    """The teacher encoder cannot be loaded."""


class BankError(CubeQAError):
    """A knowledge bank that cannot be built, found or loaded."""


class BankNotFound(BankError):
    """No bank of that name, or the asked-for version is gone (removed or never built)."""


class BankExists(BankError):
    """A build of an existing bank name without `replace`."""


class BankBusy(BankError):
    """Another process holds the bank's lock (a build, an add or a removal is running)."""


class IncompatibleBank(BankError):
    """A bank embedded with another encoder than the running one."""


class BankCorrupt(BankError):
    """A bank version whose files are missing, truncated or disagree with its manifest."""
