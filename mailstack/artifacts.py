"""Programs no package registry ships (Nauthilus), pinned in the inventory's `artifacts`,
in one of two forms. A download: the control machine takes it from its `mirror` (a local
file or URL) or its `url`, checks its sha256 before anything else, and keeps it in a cache
named by that hash; a release archive (.tar.gz) gives up the one program the deploy asked
for. A Go module: the control machine builds the pinned `module` at `version` with its own
go command (which checks the module against go.sum and the checksum database), once, into a
cache named by everything that went into the build; a `sha256` given must match what was
built. Deploys upload the program (and a module's `resources`)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from mailstack.cache import filling, put

CACHE = Path(os.environ.get("MAILSTACK_ARTIFACT_CACHE", "/var/cache/mailstack/artifacts"))


class ArtifactUnavailable(RuntimeError):
    """The artifact could not be had, or is not the one pinned; the message says why."""


BUILD_KEYS = ("module", "version", "package", "build_env", "tags", "ldflags")


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
    where, wanted = source(entry), entry.get("sha256")
    if not wanted:
        raise ArtifactUnavailable("pins no sha256: a download is used only when its hash is pinned")
    cached = CACHE / wanted / (Path(where.split("?")[0]).name or "artifact")
    if cached.is_file() and hashlib.sha256(cached.read_bytes()).hexdigest() == wanted:
        return cached
    content = _read(where)
    found = hashlib.sha256(content).hexdigest()
    if found != wanted:
        raise ArtifactUnavailable(f"{where} has sha256 {found}, not the pinned {wanted}: not used")
    cached.unlink(missing_ok=True)  # a damaged copy: the checked one replaces it
    return put(cached, content)


def _go(args: list[str], env: Mapping, what: str) -> str:
    go = shutil.which("go")
    if go is None:
        raise ArtifactUnavailable(f"is a Go module: {what} needs the go command on this machine")
    done = subprocess.run([go, *args], env={**os.environ, **env}, capture_output=True, text=True)
    if done.returncode:
        raise ArtifactUnavailable(f"{what} failed: {' '.join(done.stderr.strip().splitlines()[-3:])}")
    return done.stdout


def build_dir(entry: Mapping) -> Path:
    """Where a module's build is cached: named by every input of the build and the go version."""
    recipe = {key: entry.get(key) for key in BUILD_KEYS} | {"go": _go(["version"], {}, "go version").strip()}
    return CACHE / "go" / hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def build(entry: Mapping) -> Path:
    """The program of a pinned Go module, built static (CGO off, -trimpath) once. The
    entry is the inventory's, its defaults filled in by the schema."""
    where = build_dir(entry)
    target = where / "program"
    package = "/".join(p for p in (entry["module"], entry["package"]) if p not in ("", "."))
    if not target.is_file():
        with filling(target) as partial:
            if partial is not None:
                env = {"CGO_ENABLED": "0", **entry["build_env"], "GOBIN": str(partial)}
                _go(["install", "-trimpath", "-tags", ",".join(entry["tags"]),
                     "-ldflags", f"-s -w {entry['ldflags']}".strip(), f"{package}@{entry['version']}"],
                    env, f"go install {package}@{entry['version']}")
                (partial / package.rsplit("/", 1)[-1]).rename(target)
    if entry.get("sha256"):
        found = hashlib.sha256(target.read_bytes()).hexdigest()
        if found != entry["sha256"]:
            raise ArtifactUnavailable(f"{package}@{entry['version']} built to sha256 {found}, not the pinned "
                                      f"{entry['sha256']}: not used")
    return target


def resources(entry: Mapping) -> Path | None:
    """The module's `resources` directory (data the program reads beside it), or None."""
    if "module" not in entry or not entry.get("resources"):
        return None
    target = build_dir(entry) / "resources"
    if not target.is_dir():
        found = json.loads(_go(["mod", "download", "-json", f"{entry['module']}@{entry['version']}"], {},
                               f"go mod download {entry['module']}@{entry['version']}"))
        origin = Path(found["Dir"]) / entry["resources"]
        if not origin.is_dir():
            raise ArtifactUnavailable(f"{entry['module']}@{entry['version']} has no directory {entry['resources']}")
        with filling(target) as partial:
            if partial is not None:
                shutil.copytree(origin, partial, dirs_exist_ok=True)
                partial.rename(target)
    return target


def program(entry: Mapping, name: str) -> Path:
    """The executable `name`: a module's build, the artifact itself, or the member of that
    name in a .tar.gz."""
    if "module" in entry:
        if entry.get("url") or entry.get("mirror"):
            raise ArtifactUnavailable("names a Go module and a download: pin one of the two")
        return build(entry)
    artifact = fetch(entry)
    if not artifact.name.endswith((".tar.gz", ".tgz")):
        return artifact
    target = artifact.parent / name
    if not target.is_file():
        with tarfile.open(artifact) as archive:
            member = next((m for m in archive.getmembers() if m.isfile() and Path(m.name).name == name), None)
            if member is None:
                raise ArtifactUnavailable(f"{source(entry)} holds no program named {name!r}")
            put(target, archive.extractfile(member).read(), 0o755)
    return target
