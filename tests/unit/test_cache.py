"""The control machine's caches under two runs at once (issue 23): each entry is made once,
under a lock, in a partial folder of its own; neither run fails or sees half an entry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from unitdata import ROOT

MAKER = """
import sys, time
from pathlib import Path
from mailstack.cache import filling
target = Path(sys.argv[1])
with filling(target) as partial:
    if partial is not None:
        (partial / "half").write_text("being made")
        time.sleep(1)  # the other run arrives meanwhile
        (partial / "whole").write_text(sys.argv[2])
        partial.rename(target)
print(sorted(p.name for p in target.iterdir()))
"""


def at_once(*commands: list[str], env: dict | None = None) -> list[subprocess.CompletedProcess]:
    runs = [subprocess.Popen(c, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, **(env or {})}) for c in commands]
    return [subprocess.CompletedProcess(r.args, r.wait(timeout=300), *r.communicate()) for r in runs]


def test_two_runs_fill_one_entry_once_and_leave_nothing_behind(tmp_path):
    target = tmp_path / "entry"
    first, second = at_once([sys.executable, "-c", MAKER, str(target), "first"],
                            [sys.executable, "-c", MAKER, str(target), "second"])
    assert first.returncode == second.returncode == 0, (first.stderr, second.stderr)
    assert first.stdout == second.stdout == "['half', 'whole']\n"  # both see the whole entry
    assert (target / "whole").read_text() in ("first", "second")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".entry.lock", "entry"]  # no partial left


SIX = ("six==1.16.0 --hash=sha256:8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254 "
       "--hash=sha256:1e61c37477a1626458e36f7b1d82aa5c9b094fa4802892072e49de9c60c4c926\n")
DOWNLOAD = "import sys; from pathlib import Path; from mailstack.wheels import wheelhouse; " \
           "print([w.name for w in wheelhouse(Path(sys.argv[1]))])"


def test_two_deploys_download_one_wheel_set_at_once(tmp_path):
    """Before: one run's `pip download` into the shared `.partial` folder was removed by the
    other's, which failed with FileNotFoundError."""
    lock = tmp_path / "six.lock"
    lock.write_text(SIX)
    runs = at_once(*([sys.executable, "-c", DOWNLOAD, str(lock)] for _ in range(2)),
                   env={"MAILSTACK_WHEEL_CACHE": str(tmp_path / "wheels")})
    for run in runs:
        assert run.returncode == 0 and run.stdout == "['six-1.16.0-py2.py3-none-any.whl']\n", run.stderr
    leftovers = [p.name for p in (tmp_path / "wheels").iterdir() if p.name.endswith(".partial")]
    assert leftovers == []
    assert Path(tmp_path / "wheels").is_dir()
