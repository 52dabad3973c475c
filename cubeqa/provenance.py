"""Where a written figure comes from: the machine, the commit, the time and the command, stored beside it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pipeline.hardware import describe

ROOT = Path(__file__).resolve().parents[1]


def git_commit(root: Path = ROOT) -> str | None:
    """The checkout's short commit, with "-dirty" when files differ from it; None outside a git checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if commit.returncode != 0:
        return None
    return commit.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def run_record(argv: Sequence[str]) -> dict[str, object]:
    """The machine (load average included: it tells whether others shared the cores), commit, time and command."""
    return {
        **describe(),
        "load_average": list(os.getloadavg()),
        "commit": git_commit(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(argv[0]).name if argv else "", *argv[1:]]).strip(),
    }
