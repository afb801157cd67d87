"""Lab and deploy timings for each lab inventory given (default: the main lab and the
multi-host lab): lab up from the cached image, full deploy onto fresh hosts, no-op
redeploy, and the memory the running lab takes (the resident memory of every process in
every lab host, summed: shared pages count once per process, so it is an upper bound).
Then how the no-op redeploy grows with the host count: pyinfra works
on the hosts in parallel, so it must grow far less than the hosts do.

Then the ten operations the full deploy of each spent longest on. Destroys and rebuilds the
lab: at the end the last inventory's lab is up and deployed. Needs root, like the lab.
Targets on a 2-core machine (issue 24): full deploy onto fresh hosts <= 60 s, no-op redeploy
<= 3x a pyinfra run of `true`.

    .venv/bin/python bench/lab_cycle.py [inventories/lab.yml inventories/lab-multi.yml]
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import deploys  # noqa: F401 (hands the components in)
from mailstack.inventory import load
from mailstack.lab import STATE_DIR

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DEFAULT = ("inventories/lab.yml", "inventories/lab-multi.yml")


def timed(inventory: str, *cmd: str) -> tuple[float, str]:
    """(seconds, output) of the command; each output line starts with the second it came."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "MAILSTACK_INVENTORY": inventory})
    lines = [f"{time.perf_counter() - start:.2f} {line}" for line in proc.stdout]
    proc.wait()
    elapsed, output = time.perf_counter() - start, "".join(lines)
    if proc.returncode != 0:  # pyinfra names a failing operation and its words just before its Error line
        why = [line for n, line in enumerate(lines) if any("] Error" in later for later in lines[n:n + 4])]
        sys.exit(f"{' '.join(cmd)} failed:\n{''.join(why[:60])}...\n{output[-1500:]}")
    return elapsed, output


def slowest(output: str, count: int = 10) -> list[tuple[float, str]]:
    """pyinfra's operations that took longest (from one's start to the next's, all hosts)."""
    starts = [(float(m.group(1)), m.group(2).strip())
              for m in re.finditer(r"^(\S+) --> Starting operation: (.*)$", output, re.MULTILINE)]
    end = float(output.rstrip().rsplit("\n", 1)[-1].split(" ", 1)[0])
    spans = [(after[0] - at, name) for (at, name), after in zip(starts, [*starts[1:], (end, "")], strict=True)]
    return sorted(spans, reverse=True)[:count]


def changes(output: str) -> tuple[int, int]:
    """(changed, operations) from pyinfra's summary."""
    total = re.search(r"Grand total\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)", output)
    if not total:
        sys.exit("no pyinfra summary")
    return int(total.group(2).replace("-", "0")), int(total.group(1))


def resident_mib(inventory) -> int:
    """Resident memory of all processes on the lab's hosts, in MiB."""
    total = 0
    for lab_host in inventory.hosts:
        proc = subprocess.run(["ssh", "-F", str(STATE_DIR / "ssh" / "config"), lab_host.name, "ps -eo rss="],
                              capture_output=True, text=True, timeout=60)
        total += sum(int(kib) for kib in proc.stdout.split())
    return total // 1024


def cycle(inventory: str) -> dict:
    """One lab from nothing: up, full deploy, no-op redeploy, memory."""
    mailstack, pyinfra = str(BIN / "mailstack"), str(BIN / "pyinfra")
    timed(inventory, mailstack, "lab", "down")  # whatever lab ran before
    lab = load(ROOT / inventory)
    up, _ = timed(inventory, mailstack, "lab", "up")
    full, out_full = timed(inventory, pyinfra, "-y", "inventory.py", "deploy.py")
    noop, out_noop = timed(inventory, pyinfra, "-y", "inventory.py", "deploy.py")
    time.sleep(20)  # let the daemons settle after their starts
    return {"inventory": inventory, "hosts": len(lab.hosts), "up": up, "full": full, "full_ops": changes(out_full),
            "noop": noop, "noop_ops": changes(out_noop), "memory": resident_mib(lab), "slowest": slowest(out_full)}


def main() -> None:
    inventories = sys.argv[1:] or DEFAULT
    timed(inventories[0], str(BIN / "mailstack"), "lab", "down")
    timed(inventories[0], str(BIN / "mailstack"), "lab", "up")  # the image is cached (not timed)
    rows = [cycle(inventory) for inventory in inventories]
    print(f"{'lab':<28} {'hosts':>5} {'up':>7} {'full deploy':>12} {'ops':>5} {'no-op':>7} {'changed':>7} "
          f"{'resident':>9}")
    for r in rows:
        print(f"{r['inventory']:<28} {r['hosts']:>5} {r['up']:>6.1f}s {r['full']:>11.1f}s {r['full_ops'][1]:>5} "
              f"{r['noop']:>6.1f}s {r['noop_ops'][0]:>7} {r['memory']:>6} MiB")
    for r in rows:
        print(f"\nslowest operations of the full deploy of {r['inventory']}:")
        for seconds, name in r["slowest"]:
            print(f"  {seconds:6.2f}s  {name[:100]}")
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        print(f"hosts x{last['hosts'] / first['hosts']:.1f}: full deploy x{last['full'] / first['full']:.2f}, "
              f"no-op redeploy x{last['noop'] / first['noop']:.2f}")


if __name__ == "__main__":
    main()
