"""Backup and restore throughput of a large mailbox, on the lab's mailbox host.

Writes a generated folder of 10,000 messages (about 4 KB each) into bob@example.test's
Maildir on the host, lets Dovecot index it, then times: a backup (restic to the SeaweedFS
S3 store on the same host), the restore of that folder after deleting it, and an
incremental backup after 100 new messages. Prints messages/s, MB/s and SeaweedFS's memory.
The folder is deleted at the end. Needs the running lab (scripts/lab-up) with backups on.
"""

import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "lab"))
from labenv import SSH_CONFIG  # noqa: E402

from deploys.backup import TOOL  # noqa: E402

USER, FOLDER, MESSAGES, MORE = "bob@example.test", "Bench", 10_000, 100
MAILDIR = "/var/vmail/example.test/bob/Maildir"

# writes COUNT generated messages straight into the folder's Maildir (as the vmail user)
GENERATE = """
import os, sys, time
folder, start, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for sub in ("cur", "new", "tmp"):
    os.makedirs(f"{folder}/{sub}", exist_ok=True)
line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\\r\\n"
for i in range(start, start + count):
    body = f"From: bench@ext.test\\r\\nTo: bob@example.test\\r\\nSubject: bench {i}\\r\\n" \\
           f"Message-ID: <bench.{i}@lab.test>\\r\\n\\r\\n" + line * 50
    with open(f"{folder}/cur/{int(time.time())}.bench{i}.mail:2,S", "w") as out:
        out.write(body)
"""


def on_mail(command: str) -> str:
    return subprocess.run(["ssh", "-F", str(SSH_CONFIG), "mail", command], check=True, capture_output=True,
                          text=True).stdout


def timed(command: str) -> tuple[float, str]:
    start = time.perf_counter()
    out = on_mail(command)
    return time.perf_counter() - start, out


def main() -> None:
    folder = f"{MAILDIR}/.{FOLDER}"
    on_mail(f"doveadm mailbox delete -u {USER} -s {FOLDER} 2>/dev/null; rm -rf {folder}")
    on_mail(f"runuser -u vmail -- python3 -c '{GENERATE}' {folder} 0 {MESSAGES}")
    on_mail(f"doveadm force-resync -u {USER} {FOLDER} && doveadm mailbox status -u {USER} messages {FOLDER}")
    size = int(on_mail(f"du -sb {folder}").split()[0])
    print(f"mailbox folder: {MESSAGES} messages, {size / 1e6:.1f} MB")

    seconds, out = timed(f"{TOOL} run")
    added = int(re.search(r"(\d+) bytes added", out)[1])
    print(f"backup:              {seconds:6.1f} s  {MESSAGES / seconds:7.0f} msgs/s  {size / 1e6 / seconds:6.1f} MB/s"
          f"  ({added / 1e6:.1f} MB added to the repository)")

    on_mail(f"rm -rf {folder}")
    seconds, _ = timed(f"{TOOL} restore {USER} --folder {FOLDER}")
    restored = int(on_mail(f"doveadm mailbox status -u {USER} messages {FOLDER}").split("=")[1])
    print(f"restore (folder):    {seconds:6.1f} s  {MESSAGES / seconds:7.0f} msgs/s  {size / 1e6 / seconds:6.1f} MB/s"
          f"  ({restored} messages back)")

    on_mail(f"runuser -u vmail -- python3 -c '{GENERATE}' {folder} {MESSAGES} {MORE}")
    seconds, out = timed(f"{TOOL} run")
    added = int(re.search(r"(\d+) bytes added", out)[1])
    print(f"incremental (+{MORE}):  {seconds:6.1f} s  ({added / 1e3:.0f} KB added)")

    rss = on_mail("ps -o rss= -C weed").split()
    print(f"SeaweedFS memory:    {int(rss[0]) / 1024:.0f} MiB resident")
    on_mail(f"doveadm mailbox delete -u {USER} -s {FOLDER}; rm -rf {folder}")


if __name__ == "__main__":
    main()
