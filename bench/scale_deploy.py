"""Deploys of a hosting provider's inventory onto the running lab: the lab's own inventory grown
by DOMAINS domains and USERS users on `mail` (default 1,000 and 10,000), then

  1. the first deploy of the grown inventory (not timed against anything: it writes the maps),
  2. a deploy that adds one user, then a no-op redeploy of that inventory, RUNS times (default
     2; each add is a new user),

and the ratio of the medians (issue 24: adding a user completes in at most 1.5x a no-op), with
how many operations the add changed. The lab's secrets are copied to a temporary directory, so
the grown inventory's DKIM keys never reach the lab's own. At the end the lab's own inventory is
deployed again, which takes the extra domains and users off the hosts.

    .venv/bin/python bench/scale_deploy.py [DOMAINS USERS [RUNS]]
"""

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PYINFRA = str(Path(sys.executable).with_name("pyinfra"))
LAB = ROOT / "inventories" / "lab.yml"
HASH = "{SHA512-CRYPT}$6$benchsalt$" + "x" * 86


def grown(domains: int, users: int, secrets: str, newcomers: int) -> str:
    """The lab's inventory text with the extra domains, users and newcomers added."""
    text = LAB.read_text()
    text = text.replace("platform:\n", f"platform:\n  secrets_dir: '{secrets}'\n", 1)
    # certificates from the lab CA (41 of up to 100 names for 4,000 names): Pebble takes minutes to
    # check 4,000 names over HTTP-01, and the certificates are not what this measures
    text = re.sub(r"\ntls:.*\n(  .*\n)*", "\ntls:\n  source: lab-ca\n", text, count=1)
    extra_domains = "".join(f"  - {{name: d{i}.scale.test, tenant: t{i % 50}, mx: [mail]}}\n"
                            for i in range(domains))
    extra_users = "".join(f'  - {{address: u{i}@d{i % domains}.scale.test, password: "{HASH}"}}\n'
                          for i in range(users))
    extra_users += "".join(f'  - {{address: newcomer{i}@d0.scale.test, password: "{HASH}"}}\n'
                           for i in range(newcomers))
    text = text.replace("\ndomains:\n", f"\ndomains:\n{extra_domains}", 1)
    return text.replace("\nusers:\n", f"\nusers:\n{extra_users}", 1)


def deploy(inventory: Path) -> tuple[float, int, int, list[tuple[float, str]]]:
    """One deploy of `inventory`: seconds, operations changed, operations in all, and the
    seconds each operation took, slowest first (from when pyinfra announced it to the next)."""
    env = {**os.environ, "MAILSTACK_INVENTORY": str(inventory)}
    start = time.perf_counter()
    proc = subprocess.Popen([PYINFRA, "-y", "inventory.py", "deploy.py"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines, stages = [], [(start, "preparing (inventory, plans, rendering, facts)")]
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("--> Starting operation: "):
            stages.append((time.perf_counter(), line[24:].strip()))
    proc.wait(timeout=3600)
    elapsed = time.perf_counter() - start
    out = "".join(lines)
    total = re.search(r"Grand total\s+(\d+)\s+(\S+)", out)
    if proc.returncode != 0 or not total:
        why = [line for line in lines if re.search(r"\] (Error|.*error:)|Traceback|Operation failed", line)]
        sys.exit(f"deploy of {inventory} failed:\n{''.join(why[:40])}...\n{out[-1500:]}")
    ends = [at for at, _ in stages[1:]] + [start + elapsed]
    slowest = sorted(((end - at, name) for (at, name), end in zip(stages, ends, strict=True)), reverse=True)
    changed = 0 if total.group(2) == "-" else int(total.group(2))
    return elapsed, changed, int(total.group(1)), slowest


def top(slowest: list[tuple[float, str]], count: int) -> str:
    return "; ".join(f"{name} {seconds:.1f} s" for seconds, name in slowest[:count])


def main() -> None:
    domains, users = (int(a) for a in sys.argv[1:3]) if len(sys.argv) > 2 else (1000, 10000)
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    lab = yaml.safe_load(LAB.read_text())["platform"]
    own = Path(os.path.expanduser(lab.get("secrets_dir", "~/.local/state/mailstack"))) / lab["name"]
    with tempfile.TemporaryDirectory(dir=ROOT / "inventories", prefix=".scale-") as work:
        secrets = Path(work) / "secrets"
        shutil.copytree(own, secrets / lab["name"])
        inventory = Path(work) / "grown.yml"
        inventory.write_text(grown(domains, users, str(secrets), newcomers=0))
        try:
            first, changed, total, _ = deploy(inventory)
            print(f"lab + {domains} domains, {users} users: first deploy {first:.1f} s "
                  f"({changed} of {total} operations changed; includes DKIM keys for the new domains)")
            noop, add, add_changed = [], [], []
            for run in range(1, runs + 1):
                inventory.write_text(grown(domains, users, str(secrets), newcomers=run))
                elapsed, changed, _, slowest = deploy(inventory)
                add.append(elapsed)
                add_changed.append(changed)
                print(f"  add {run}: {elapsed:.1f} s; slowest: {top(slowest, 6)}")
                elapsed, changed, _, slowest = deploy(inventory)
                if changed:
                    sys.exit(f"the redeploy after adding a user changed {changed} operations")
                noop.append(elapsed)
                print(f"  no-op {run}: {elapsed:.1f} s; slowest: {top(slowest, 3)}")
            print(f"  no-op        best {min(noop):6.2f} s   median {statistics.median(noop):6.2f} s   "
                  f"runs: {', '.join(f'{t:.1f}' for t in noop)}")
            print(f"  add one user best {min(add):6.2f} s   median {statistics.median(add):6.2f} s   "
                  f"runs: {', '.join(f'{t:.1f}' for t in add)}; operations changed: {', '.join(map(str, add_changed))}")
            print(f"  ratio (medians) {statistics.median(add) / statistics.median(noop):.2f}x (issue 24: at most 1.5x)")
        finally:
            print("taking the grown inventory off the lab (deploying inventories/lab.yml)")
            print(f"  done: {deploy(LAB)[0]:.1f} s")


if __name__ == "__main__":
    main()
