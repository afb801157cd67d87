"""What every part of the lab shares: where it keeps state, how it runs commands."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

STATE_DIR = Path(os.environ.get("MAILSTACK_LAB_STATE", "/var/lib/mailstack/lab"))
CACHE_DIR = Path(os.environ.get("MAILSTACK_LAB_CACHE", "/var/cache/mailstack"))
ENV_MARKER = "MAILSTACK_LAB_HOST"  # set in each container init's environment
# Password of every user in inventories/lab.yml (only its hash is in the inventory).
LAB_PASSWORD = "correct horse lab"


class LabError(RuntimeError):
    """A lab step failed; the message says which and what to do."""


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a command, raising LabError with its output when it fails."""
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        raise LabError(f"{shlex.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc


def log(message: str) -> None:
    print(f"lab: {message}", file=sys.stderr, flush=True)


