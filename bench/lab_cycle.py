"""Lab and deploy timings: lab up from the cached image, full deploy onto fresh hosts,
no-op redeploy. Destroys and rebuilds the running lab (leaves it up and deployed).

Targets on a 2-core machine: no-op redeploy <= 10 s, full deploy < 5 min.
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def timed(*cmd: str) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "MAILSTACK_INVENTORY": "inventories/lab.yml"})
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return elapsed, proc.stdout + proc.stderr


def changes(output: str) -> str:
    total = re.search(r"Grand total\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)", output)
    if not total:
        return "no summary"
    changed = total.group(2).replace("-", "0")
    return f"{changed} changed of {total.group(1)} operations"


def main() -> None:
    mailstack, pyinfra = str(BIN / "mailstack"), str(BIN / "pyinfra")
    timed(mailstack, "lab", "up")  # make sure the image is cached (not timed)
    timed(mailstack, "lab", "down")
    up, _ = timed(mailstack, "lab", "up")
    full, out_full = timed(pyinfra, "-y", "inventory.py", "deploy.py")
    noop, out_noop = timed(pyinfra, "-y", "inventory.py", "deploy.py")
    print(f"lab up from cached image (2 hosts, ssh ready): {up:6.1f} s")
    print(f"full deploy onto fresh hosts:                  {full:6.1f} s  ({changes(out_full)}; target < 300 s)")
    print(f"no-op redeploy:                                {noop:6.1f} s  ({changes(out_noop)}; target <= 10 s)")


if __name__ == "__main__":
    main()
