"""Alert latency: from an account put on hold to the notice at the webhook.

Three times: `mailstack account hold` on the lab's gina@example.test, then wait until the
pager ext plays has a firing MailstackAccountOnHold notice for her, then release her and wait
for the all-clear. Prints each latency and the median. The lab's monitoring settings
(scrape_interval 5s, group_wait 5s) are what it measures.
"""

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "lab"))
from labenv import SSH_CONFIG  # noqa: E402

from deploys.pager_receiver import LOG  # noqa: E402

LOGIN, RULE = "gina@example.test", "MailstackAccountOnHold"


def account(action: str) -> None:
    subprocess.run([sys.executable, "-m", "mailstack.cli", "account", action, LOGIN], cwd=ROOT, check=True,
                   capture_output=True)


def notices_for(status: str) -> int:
    log = subprocess.run(["ssh", "-F", str(SSH_CONFIG), "ext", f"cat {LOG} 2>/dev/null"], capture_output=True,
                         text=True).stdout
    return sum(1 for line in log.splitlines() if line.startswith("{")
               for found in json.loads(line)["alerts"]
               if found["labels"]["alertname"] == RULE and found["labels"].get("login") == LOGIN
               and found["status"] == status)


def wait_for(status: str, before: int, timeout: float = 300) -> float:
    start, deadline = time.perf_counter(), time.monotonic() + timeout
    while notices_for(status) <= before:
        if time.monotonic() > deadline:
            sys.exit(f"no {status} notice within {timeout} s")
        time.sleep(0.5)
    return time.perf_counter() - start


def main() -> None:
    account("release")
    latencies = []
    for _ in range(3):
        firing, resolved = notices_for("firing"), notices_for("resolved")
        account("hold")
        latencies.append(wait_for("firing", firing))
        account("release")
        wait_for("resolved", resolved)
        print(f"hold -> webhook: {latencies[-1]:5.1f} s")
    print(f"median: {statistics.median(latencies):.1f} s   (scrape and evaluation every 5 s, group_wait 5 s)")


if __name__ == "__main__":
    main()
