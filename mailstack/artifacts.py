"""Programs no package registry ships (Nauthilus), pinned in the inventory's `artifacts`:
the control machine takes each from its `mirror` (a local file or URL) or its `url`, checks
its sha256 before anything else, and keeps it in a cache named by that hash. A release
archive (.tar.gz) gives up the one program the deploy asked for. Deploys upload it."""

from __future__ import annotations

import hashlib
import os
import tarfile
import urllib.request
from collections.abc import Mapping
from pathlib import Path

CACHE = Path(os.environ.get("MAILSTACK_ARTIFACT_CACHE", "/var/cache/mailstack/artifacts"))


class ArtifactUnavailable(RuntimeError):
    """The artifact could not be had, or is not the one pinned; the message says why."""


def source(entry: Mapping) -> str:
    """Where the artifact is taken from: the operator's mirror first."""
    if not (entry.get("mirror") or entry.get("url")):
        raise ArtifactUnavailable("has neither url nor mirror: say where the program comes from")
    return entry.get("mirror") or entry["url"]


def _read(where: str) -> bytes:
    path = Path(where.removeprefix("file://")).expanduser()
    if "://" not in where or where.startswith("file://"):
        if not path.is_file():
            raise ArtifactUnavailable(f"{where} is not a file on this machine")
        return path.read_bytes()
    try:
        with urllib.request.urlopen(where, timeout=60) as response:  # noqa: S310 (the hash decides)
            return response.read()
    except OSError as err:
        raise ArtifactUnavailable(f"{where} could not be downloaded: {err}") from err


def fetch(entry: Mapping) -> Path:
    """The pinned artifact, hash-checked, from the cache or its source."""
    where, wanted = source(entry), entry["sha256"]
    cached = CACHE / wanted / (Path(where.split("?")[0]).name or "artifact")
    if cached.is_file() and hashlib.sha256(cached.read_bytes()).hexdigest() == wanted:
        return cached
    content = _read(where)
    found = hashlib.sha256(content).hexdigest()
    if found != wanted:
        raise ArtifactUnavailable(f"{where} has sha256 {found}, not the pinned {wanted}: not used")
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(".partial")
    partial.write_bytes(content)
    partial.rename(cached)
    return cached


def program(entry: Mapping, name: str) -> Path:
    """The executable `name`: the artifact itself, or the member of that name in a .tar.gz."""
    artifact = fetch(entry)
    if not artifact.name.endswith((".tar.gz", ".tgz")):
        return artifact
    target = artifact.parent / name
    if not target.is_file():
        with tarfile.open(artifact) as archive:
            member = next((m for m in archive.getmembers() if m.isfile() and Path(m.name).name == name), None)
            if member is None:
                raise ArtifactUnavailable(f"{source(entry)} holds no program named {name!r}")
            partial = target.with_suffix(".partial")
            partial.write_bytes(archive.extractfile(member).read())
            partial.chmod(0o755)
            partial.rename(target)
    return target
