"""Mail throughput from `ext` into the platform with Postfix's smtp-source.

2,000 messages (5 KB, 20 parallel sessions) from ext to a platform mailbox, once
through the full filter chain (postscreen, smtpd, rspamd milter, LMTP into Dovecot)
and once with the milter bypassed. Prints accepted msgs/s (smtp-source done) and
end-to-end msgs/s (all delivered), and the filtered/bypassed ratio.
Target: filtered end-to-end at least 50 msgs/s on 2 cores.
"""

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "lab"))
from labenv import INVENTORY, SSH_CONFIG  # noqa: E402

MESSAGES, SESSIONS, SIZE = 2000, 20, 5000
SINK = "bob@example.test"


def ssh(host: str, command: str) -> str:
    proc = subprocess.run(["ssh", "-F", str(SSH_CONFIG), host, command], capture_output=True,
                          text=True, timeout=900)
    if proc.returncode != 0:
        sys.exit(f"{host}: {command} failed: {proc.stderr}")
    return proc.stdout


def delivered() -> int:
    # smtp-source messages lack most headers: rspamd may file them into Junk
    out = ssh("mail", f"doveadm search -u {SINK} mailbox '*' all | wc -l")
    return int(out)


def run_once(label: str, mail_address: str) -> float:
    ssh("mail", f"doveadm expunge -u {SINK} mailbox '*' all")
    start = time.perf_counter()
    ssh("ext", f"smtp-source -s {SESSIONS} -l {SIZE} -m {MESSAGES} -c -f carol@ext.test "
               f"-t {SINK} {mail_address}:25 >/dev/null")
    accepted = time.perf_counter() - start
    deadline = time.monotonic() + 600
    while delivered() < MESSAGES and time.monotonic() < deadline:
        time.sleep(0.2)
    total = time.perf_counter() - start
    count = delivered()
    print(f"{label:<26} accepted {MESSAGES / accepted:7.1f} msgs/s   end to end "
          f"{count / total:7.1f} msgs/s   ({count}/{MESSAGES} delivered in {total:.1f} s)")
    return count / total


def main() -> None:
    address = INVENTORY.host("mail").address
    ssh("mail", "for i in $(seq 120); do rspamc -h 127.0.0.1:11334 stat >/dev/null 2>&1 && break; "
                "sleep 1; done")
    ssh("ext", f"smtp-source -m 1 -f carol@ext.test -t {SINK} {address}:25")  # postscreen pass
    filtered = run_once("full filter chain", address)
    ssh("mail", "cp -p /etc/postfix/main.cf /root/main.cf.bench && "
                "postconf -e smtpd_milters= non_smtpd_milters= && postfix reload")
    try:
        bypassed = run_once("milter bypassed", address)
    finally:
        ssh("mail", "cp -p /root/main.cf.bench /etc/postfix/main.cf && postfix reload && "
                    "rm /root/main.cf.bench")
    ssh("mail", f"doveadm expunge -u {SINK} mailbox '*' all")
    print(f"filtered / bypassed: {filtered / bypassed:.2f}   (target: filtered >= 50 msgs/s)")


if __name__ == "__main__":
    main()
