"""Mail throughput from `ext` into the platform with Postfix's smtp-source.

2,000 messages (5 KB, 20 parallel sessions) from ext to a platform mailbox:
1. through the full filter chain (postscreen, smtpd, rspamd milter, LMTP into Dovecot)
   to a tenant without S/MIME (dave@tenant-b.test);
2. the same with the milter bypassed;
3. to a tenant with S/MIME (bob@example.test): the chain plus the gateway pass.
Prints accepted msgs/s (smtp-source done) and end-to-end msgs/s (all delivered), and
the filtered/bypassed ratio. Target: filtered end-to-end at least 50 msgs/s on 2 cores.
"""

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "lab"))
from labenv import INVENTORY, SSH_CONFIG  # noqa: E402

MESSAGES, SESSIONS, SIZE = 2000, 20, 5000
HELO = INVENTORY.host("ext").fqdn  # port 25 refuses a HELO that is no host name
CORE_SINK, SMIME_SINK = "dave@tenant-b.test", "bob@example.test"


def ssh(host: str, command: str) -> str:
    proc = subprocess.run(["ssh", "-F", str(SSH_CONFIG), host, command], capture_output=True,
                          text=True, timeout=900)
    if proc.returncode != 0:
        sys.exit(f"{host}: {command} failed: {proc.stderr}")
    return proc.stdout


def delivered(sink: str) -> int:
    # smtp-source messages lack most headers: rspamd may file them into Junk
    return int(ssh("mail", f"doveadm search -u {sink} mailbox '*' all | wc -l"))


def empty(sink: str) -> None:
    ssh("mail", "for i in $(seq 60); do postqueue -j | grep -q . || break; sleep 1; done; "
                f"doveadm expunge -u {sink} mailbox '*' all")


def wait_delivered(sink: str, expected: int, start: float) -> tuple[int, float]:
    """(messages in the sink's mailboxes, seconds since `start`) once all arrived or 600 s passed."""
    deadline = time.monotonic() + 600
    while delivered(sink) < expected and time.monotonic() < deadline:
        time.sleep(0.2)
    return delivered(sink), time.perf_counter() - start


def run_once(label: str, mail_address: str, sink: str) -> float:
    empty(sink)
    start = time.perf_counter()
    ssh("ext", f"smtp-source -M {HELO} -s {SESSIONS} -l {SIZE} -m {MESSAGES} -c -f carol@ext.test "
               f"-t {sink} {mail_address}:25 >/dev/null")
    accepted = time.perf_counter() - start
    count, total = wait_delivered(sink, MESSAGES, start)
    print(f"{label:<26} accepted {MESSAGES / accepted:7.1f} msgs/s   end to end "
          f"{count / total:7.1f} msgs/s   ({count}/{MESSAGES} delivered in {total:.1f} s)")
    return count / total


def main() -> None:
    address = INVENTORY.host("mail").address
    ssh("mail", "for i in $(seq 120); do rspamc -h 127.0.0.1:11334 stat >/dev/null 2>&1 && break; "
                "sleep 1; done")
    ssh("ext", f"smtp-source -M {HELO} -m 1 -f carol@ext.test -t {CORE_SINK} {address}:25")  # postscreen pass
    filtered = run_once("full filter chain", address, CORE_SINK)
    ssh("mail", "cp -p /etc/postfix/main.cf /root/main.cf.bench && "
                "postconf -e smtpd_milters= non_smtpd_milters= && postfix reload")
    try:
        bypassed = run_once("milter bypassed", address, CORE_SINK)
    finally:
        ssh("mail", "cp -p /root/main.cf.bench /etc/postfix/main.cf && postfix reload && "
                    "rm /root/main.cf.bench")
    run_once("chain + S/MIME gateway", address, SMIME_SINK)
    for sink in (CORE_SINK, SMIME_SINK):
        empty(sink)
    print(f"filtered / bypassed: {filtered / bypassed:.2f}   (target: filtered >= 50 msgs/s)")


if __name__ == "__main__":
    main()
