"""The no-op redeploy against a pyinfra run that does nothing (one `true`) on the same lab
hosts, alternating, best and median of RUNS each: issue 24 asks for at most 3x. Also how many
commands the no-op sends each host (pyinfra --debug): every one is a round trip.
The lab must be up and deployed (any inventory: MAILSTACK_INVENTORY, default the main lab).

    .venv/bin/python bench/noop.py [RUNS]
"""

import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYINFRA = str(Path(sys.executable).with_name("pyinfra"))
ENV = {**os.environ, "MAILSTACK_INVENTORY": os.environ.get("MAILSTACK_INVENTORY", "inventories/lab.yml")}


def timed(*args: str) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run([PYINFRA, "-y", *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"pyinfra {' '.join(args)} failed:\n{(proc.stdout + proc.stderr)[-2000:]}")
    return elapsed, proc.stdout + proc.stderr


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    noop, nothing = [], []
    for _ in range(runs):
        elapsed, out = timed("inventory.py", "deploy.py")
        changed = re.search(r"Grand total\s+(\d+)\s+(\S+)", out)
        if not changed or changed.group(2) != "-":
            sys.exit(f"the redeploy changed something: {changed.group(0) if changed else out[-500:]}")
        noop.append(elapsed)
        nothing.append(timed("inventory.py", "exec", "--", "true")[0])
    _, debug = timed("--debug", "inventory.py", "deploy.py")
    commands = {}
    for name in re.findall(r"Running command on (\S+?):", debug):
        commands[name] = commands.get(name, 0) + 1
    print(f"{ENV['MAILSTACK_INVENTORY']}: {runs} runs each, alternating")
    print(f"  no-op redeploy   best {min(noop):6.2f} s   median {statistics.median(noop):6.2f} s")
    print(f"  pyinfra true     best {min(nothing):6.2f} s   median {statistics.median(nothing):6.2f} s")
    print(f"  ratio (medians)  {statistics.median(noop) / statistics.median(nothing):.1f}x (issue 24: at most 3x)")
    print("  commands per host in the no-op: " + ", ".join(f"{h} {n}" for h, n in sorted(commands.items())))


if __name__ == "__main__":
    main()
