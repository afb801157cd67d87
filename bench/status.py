"""How long `mailstack status` takes against the running lab (issue 27 asks for the figure on
the main and the multi-host lab), next to one `ssh HOST true` per platform host in parallel
(the floor: status makes one SSH call per host), alternating, best and median of RUNS each.
The lab must be up and deployed (MAILSTACK_INVENTORY, default the main lab).

    .venv/bin/python bench/status.py [RUNS]
"""

import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import deploys  # noqa: E402, F401 (hands the components in)
from mailstack.inventory import load  # noqa: E402
from mailstack.remote import ssh_argv  # noqa: E402

INVENTORY = os.environ.get("MAILSTACK_INVENTORY", "inventories/lab.yml")


def status() -> float:
    start = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).with_name("mailstack")), "status", "-i", INVENTORY],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    if done.returncode not in (0, 1):
        sys.exit(f"mailstack status failed:\n{done.stdout}{done.stderr}")
    return time.perf_counter() - start


def ssh_floor(hosts) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda h: subprocess.run(ssh_argv(h, ["true"]), capture_output=True, timeout=60), hosts))
    return time.perf_counter() - start


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    inv = load(ROOT / INVENTORY)
    hosts = [h for h in inv.hosts if not h.outside]
    legs: dict[str, list[float]] = {"mailstack status": [], "ssh true (floor)": []}
    for _ in range(runs):
        legs["mailstack status"].append(status())
        legs["ssh true (floor)"].append(ssh_floor(hosts))
    print(f"{INVENTORY}: {len(hosts)} platform hosts, {runs} runs each, alternating")
    for leg, times in legs.items():
        print(f"  {leg:<18} best {min(times):.2f} s  median {statistics.median(times):.2f} s")


if __name__ == "__main__":
    main()
