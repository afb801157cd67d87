"""The running lab as the tests see it: its inventory, SSH access, a shell helper."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import testinfra

import deploys  # noqa: F401 (hands the components in)
from mailstack.inventory import load
from mailstack.lab import STATE_DIR
from mailstack.plan import plans

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = load(ROOT / os.environ.get("MAILSTACK_INVENTORY", "inventories/lab.yml"))
SSH_CONFIG = STATE_DIR / "ssh" / "config"
PLANS = plans(INVENTORY)  # what each host is meant to run, as the deploys see it


def ssh(name: str, command: str, stdin: bytes = b"") -> str:
    """Run a command on a lab host with data on its standard input; its output."""
    proc = subprocess.run(["ssh", "-F", str(SSH_CONFIG), name, command], input=stdin,
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout.decode(errors="replace")


def host(name: str):
    """A testinfra host of the lab, over SSH."""
    return testinfra.get_host(f"ssh://{name}", ssh_config=str(SSH_CONFIG))


def run_deploy(inventory: Path | None = None, limit: str | None = None) -> subprocess.CompletedProcess:
    """The lab deploy (of the lab's inventory, or of `inventory`; on host `limit` only, if given)."""
    env = {**os.environ, "MAILSTACK_INVENTORY": str(inventory or INVENTORY.file)}  # the lab under test
    pyinfra = str(Path(sys.executable).with_name("pyinfra"))
    return subprocess.run([pyinfra, "-y", *(["--limit", limit] if limit else []), "inventory.py", "deploy.py"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
