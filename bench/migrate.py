"""Migration throughput (issue 27): `mailstack migrate` moves a 10,000-message mailbox (about
5 KB each) from the old server ext plays (olga@ext.test) into mia@legacy.test, then a second
pass after 100 new messages at the source. Each leg RUNS times (the new mailbox emptied before
each first pass); prints the best and every run: messages/s and MB/s of dsync on the host, and
the command's wall time with its verification. The lab must be up and deployed; both
mailboxes are emptied at the end.

    .venv/bin/python bench/migrate.py [MESSAGES] [RUNS]
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import deploys  # noqa: E402, F401 (hands the components in)
from mailstack.inventory import load  # noqa: E402
from mailstack.lab import LAB_PASSWORD  # noqa: E402
from mailstack.remote import ssh_argv  # noqa: E402

OLD, NEW = "olga@ext.test", "mia@legacy.test"
SEED = r"""
import os, sys, time
first, count = int(sys.argv[1]), int(sys.argv[2])
box = "/var/vmail/ext.test/olga/Maildir/cur"
os.makedirs(box, exist_ok=True)
body = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\n" * 62)
for n in range(first, first + count):
    with open(f"{box}/{int(time.time())}.M{n}P1.bench:2,S", "w") as out:
        out.write(f"From: alt@old.test\nTo: olga@ext.test\nSubject: bench {n}\nMessage-ID: <bench-{n}@old.test>\n"
                  f"Date: Mon, 03 Feb 2025 10:00:00 +0100\n\n{body}")
"""


def on(host, command: str, stdin: str | None = None) -> str:
    return subprocess.run(ssh_argv(host, ["bash", "-c", command]), input=stdin, capture_output=True, text=True,
                          check=True, timeout=900).stdout


def migrated(inventory: Path) -> tuple[float, float, dict]:
    start = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).with_name("mailstack")), "migrate", "-i", str(inventory), "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"migrate failed:\n{done.stdout}{done.stderr}")
    [result] = json.loads(done.stdout)
    return result["sync"]["seconds"], wall, result


def main() -> None:
    messages = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    inv = load(os.environ.get("MAILSTACK_INVENTORY", "inventories/lab.yml"))
    ext, mail = inv.host("ext"), inv.host("mail")
    reset_old = f"doveadm kick {OLD} >/dev/null; rm -rf /var/vmail/ext.test/olga"
    reset_new = f"doveadm kick {NEW} >/dev/null; rm -rf /var/vmail/legacy.test/mia"
    on(ext, reset_old)
    on(ext, f"python3 -c '{SEED}' 0 {messages} && chown -R vmail:vmail /var/vmail/ext.test/olga && "
            f"doveadm mailbox status -u {OLD} messages INBOX")
    size = int(on(ext, "du -sb /var/vmail/ext.test/olga/Maildir/cur | cut -f1")) / 1e6
    with tempfile.TemporaryDirectory() as private:
        secret = Path(private) / "old.secret"
        secret.write_text(LAB_PASSWORD + "\n")
        inventory = Path(private) / "lab.yml"
        inventory.write_text(Path(inv.file).read_text() + "\nmigration:\n  source: {host: ext.lab.test}\n  users:\n"
                             f"    - {{address: {NEW}, login: {OLD}, password_file: {secret}}}\n")
        first, again = [], []
        for run in range(runs):
            on(mail, reset_new)
            first.append(migrated(inventory))
            on(ext, f"python3 -c '{SEED}' {messages + 100 * run} 100 && chown -R vmail:vmail /var/vmail/ext.test/olga")
            again.append(migrated(inventory))
    on(ext, reset_old)
    on(mail, reset_new)
    print(f"mailbox: {messages} messages, {size:.1f} MB (Maildir files on the old server; each run adds 100)")
    for name, legs, new in (("first pass", first, None), ("second pass (+100)", again, 100)):
        seconds, wall, result = min(legs, key=lambda leg: leg[0])
        count = new or sum(f["source"] for f in result["folders"].values())
        megabytes = size * count / messages
        print(f"{name:<20} {count} messages, dsync best {seconds:.2f} s = {count / seconds:.0f} msgs/s, "
              f"{megabytes / seconds:.1f} MB/s; with verification {wall:.2f} s; runs (dsync/wall): "
              + ", ".join(f"{s:.2f}/{w:.2f} s" for s, w, _ in legs))


if __name__ == "__main__":
    main()
