"""The control machine's caches (wheels, artifacts) are shared by every run on it: two
deploys at once, or tests beside a deploy. Each entry is made under its own lock, in a
partial folder of its own, and appears by one rename."""

from __future__ import annotations

import fcntl
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def filling(target: Path) -> Iterator[Path | None]:
    """Hold `target`'s lock and give a new folder beside it to make the entry in (rename it,
    or a file in it, onto `target`); None when `target` is there already (another run made it
    while this one waited). What is left of the folder goes when the block ends."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        if target.exists():
            yield None
            return
        partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
        partial.chmod(0o755)  # as a folder made the usual way: it may become the entry itself
        try:
            yield partial
        finally:
            shutil.rmtree(partial, ignore_errors=True)


def put(target: Path, content: bytes, mode: int = 0o644) -> Path:
    """`target` with `content`, unless another run put it there first."""
    with filling(target) as partial:
        if partial is not None:
            made = partial / target.name
            made.write_bytes(content)
            made.chmod(mode)
            made.rename(target)
    return target
