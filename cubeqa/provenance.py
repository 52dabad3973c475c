"""Where a written figure comes from: the machine, the commit, the time and the command, stored beside it."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pipeline.hardware import describe

ROOT = Path(__file__).resolve().parents[1]


def git_commit(root: Path = ROOT) -> str | None:
    """The checkout's short commit, with "-dirty" when files outside docs/ (where runs write their figures)
    differ from it or are untracked; None outside a git checkout. Takes no lock, so a user's git command
    beside a run does not fail."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        status = subprocess.run(
            ["git", "--no-optional-locks", "status", "--porcelain", "--", ".", ":!docs"], cwd=root, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if commit.returncode != 0:
        return None
    return commit.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def run_record(program: str, args: Sequence[str]) -> dict[str, object]:
    """The machine (load average included: it tells whether others shared the cores), commit, time and command."""
    return {
        **describe(),
        "load_average": list(os.getloadavg()),
        "commit": git_commit(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": shlex.join([program, *args]),
    }
