"""Commands on the platform's hosts over SSH, with the connection settings pyinfra uses."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from mailstack.inventory import Host


def known_hosts(host: Host) -> tuple[str | None, bool]:
    """(known_hosts file or None for ssh's default, strict?): strict unless the inventory
    says a lab host's key changes on every boot (only a lab may say so)."""
    if host.ssh["verify_host_key"]:
        return (os.path.expanduser(host.ssh["known_hosts"]) if "known_hosts" in host.ssh else None), True
    return "/dev/null", False


def ssh_argv(host: Host, command: list[str]) -> list[str]:
    known, strict = known_hosts(host)
    options = ["-o", "BatchMode=yes", "-o", f"StrictHostKeyChecking={'yes' if strict else 'no'}",
               "-o", "LogLevel=ERROR", "-p", str(host.ssh["port"])]
    if known:
        options += ["-o", f"UserKnownHostsFile={known}"]
    if "key" in host.ssh:
        options += ["-i", os.path.expanduser(host.ssh["key"]), "-o", "IdentitiesOnly=yes"]
    return ["ssh", *options, f"{host.ssh['user']}@{host.address}", shlex.join(command)]


def deploy(inventory: str | Path, limit: str | None = None, capture: bool = True) -> subprocess.CompletedProcess:
    """The project's deploy (pyinfra) of `inventory`, on host or group `limit` only if given;
    its output captured, or shown as it runs."""
    pyinfra = Path(sys.executable).parent / "pyinfra"
    return subprocess.run([str(pyinfra), "-y", *(["--limit", limit] if limit else []), "inventory.py", "deploy.py"],
                          cwd=Path(__file__).resolve().parents[1],
                          env={**os.environ, "MAILSTACK_INVENTORY": str(Path(inventory).resolve())},
                          capture_output=capture, text=True)
