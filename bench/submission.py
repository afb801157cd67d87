"""Authenticated submission throughput with the per-login limits on and off.

1,000 messages (5 KB) from this machine to dave@tenant-b.test, 20 parallel sessions on
port 587 (STARTTLS, AUTH PLAIN), each logged in as bob@example.test, through the whole
submission chain (rspamd with the limits rule, the S/MIME gateway, LMTP into Dovecot).
Run twice: with limits far above the load (every message counted in Redis, none refused)
and with `limits.enabled: false`, each deployed from a copy of the lab inventory; the lab's
own inventory is deployed again at the end. Target: the limits cost at most 10 %.
"""

import os
import smtplib
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "lab"))
from helpers import PASSWORD, message, named_context  # noqa: E402
from labenv import INVENTORY  # noqa: E402
from throughput import empty, wait_delivered  # noqa: E402

from mailstack.tls import trusted_file  # noqa: E402

MESSAGES, SESSIONS, SIZE = 1000, 20, 5000
SENDER, SINK = "bob@example.test", "dave@tenant-b.test"
HIGH = 10 ** 6
SETTINGS = {
    "limits on": "limits: {" + ", ".join(f"{k}: {HIGH}" for k in (
        "messages_per_minute", "messages_per_hour", "messages_per_day", "recipients_per_hour",
        "recipients_per_day", "hold_after")) + "}\n",
    "limits off": "limits: {enabled: false}\n",
}


def deploy(inventory: str) -> None:
    subprocess.run([str(Path(sys.executable).parent / "pyinfra"), "-y", "inventory.py", "deploy.py"], cwd=ROOT,
                   check=True, capture_output=True, env={**os.environ, "MAILSTACK_INVENTORY": inventory})


def session(count: int) -> int:
    host = INVENTORY.host("mail")
    body = "x" * (SIZE - 300) + "\n"
    with smtplib.SMTP(host.address, 587, timeout=120) as client:
        client.starttls(context=named_context(str(trusted_file(INVENTORY)), host.fqdn))
        client.login(SENDER, PASSWORD)
        for i in range(count):
            client.sendmail(SENDER, [SINK], message(SENDER, SINK, f"bench-{i}", body=body).as_bytes())
    return count


def run(label: str) -> float:
    empty(SINK)
    start = time.perf_counter()
    with ThreadPoolExecutor(SESSIONS) as pool:
        sent = sum(pool.map(session, [MESSAGES // SESSIONS] * SESSIONS))
    accepted = time.perf_counter() - start
    count, total = wait_delivered(SINK, sent, start)
    print(f"{label:<12} accepted {sent / accepted:6.1f} msgs/s   end to end {count / total:6.1f} msgs/s   "
          f"({count}/{sent} delivered in {total:.1f} s)")
    return count / total


def main() -> None:
    lab = (ROOT / "inventories" / "lab.yml").read_text()
    rates = {}
    try:
        for label, setting in SETTINGS.items():
            with tempfile.NamedTemporaryFile("w", suffix=".yml", dir=ROOT / "inventories") as copy:
                copy.write(lab + setting)
                copy.flush()
                deploy(copy.name)
            rates[label] = run(label)
    finally:
        deploy("inventories/lab.yml")
        empty(SINK)
    print(f"cost of the limits: {(1 - rates['limits on'] / rates['limits off']) * 100:.1f} %   (target <= 10 %)")


if __name__ == "__main__":
    main()
