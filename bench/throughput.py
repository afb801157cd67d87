"""Mail throughput from `ext` into the platform with Postfix's smtp-source.

2,000 messages (5 KB, 20 parallel sessions) from ext to a platform mailbox:
1. through the full filter chain (postscreen, smtpd, rspamd milter, LMTP into Dovecot)
   to a tenant without S/MIME (dave@tenant-b.test);
2. the same with the milter bypassed;
3. plain mail to a tenant with S/MIME (bob@example.test): the chain alone (only encrypted
   content takes the gateway; rspamd writes the gateway's verdict);
4. signed mail to that tenant (signed by the partner ext.test): the chain plus the first-pass
   signature check (smimegw.verifier, asked by rspamd). bench/smime_path.py compares it with
   the same bytes unsigned.
Prints accepted msgs/s (smtp-source done) and end-to-end msgs/s (all delivered), the
filtered/bypassed ratio (target: filtered end-to-end at least 50 msgs/s on 2 cores) and the
signed mail against the chain (bench/smime_path.py is the A/B the issue asks for).
"""

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "lab"))
from labenv import INVENTORY, SSH_CONFIG  # noqa: E402

from mailstack.secrets import domain_certificate  # noqa: E402

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


SIGNED = "/root/bench-signed.eml"  # on ext: the S/MIME message leg 4 sends


def signed_message() -> None:
    """A 5 KB message to bob signed by carol's provider (ext.test's certificate), put on ext."""
    cert, key = domain_certificate(INVENTORY, "ext.test")
    entity = b"Content-Type: text/plain; charset=us-ascii\n\n" + (b"x" * 76 + b"\n") * 65
    signed = subprocess.run(["openssl", "cms", "-sign", "-signer", str(cert), "-inkey", str(key), "-md", "sha256",
                             "-from", "carol@ext.test", "-to", SMIME_SINK, "-subject", "bench"],
                            input=entity, capture_output=True, check=True).stdout
    signed = signed.replace(b"\r\n", b"\n")  # openssl writes the signed part with CRLF; smtp-source adds CR itself
    subprocess.run(["ssh", "-F", str(SSH_CONFIG), "ext", f"cat > {SIGNED}"], input=signed, check=True, timeout=60)


def run_once(label: str, mail_address: str, sink: str, content: str = "") -> float:
    """`content`: a message file on ext to send (smtp-source -F) instead of smtp-source's own."""
    empty(sink)
    start = time.perf_counter()
    body = f"-F {content}" if content else f"-l {SIZE}"
    ssh("ext", f"smtp-source -M {HELO} -s {SESSIONS} {body} -m {MESSAGES} -c -f carol@ext.test "
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
    run_once("plain, S/MIME tenant", address, SMIME_SINK)
    signed_message()
    smime = run_once("signed, chain + S/MIME check", address, SMIME_SINK, content=SIGNED)
    for sink in (CORE_SINK, SMIME_SINK):
        empty(sink)
    ssh("ext", f"rm -f {SIGNED}")
    print(f"filtered / bypassed: {filtered / bypassed:.2f}   (target: filtered >= 50 msgs/s)")
    print(f"signed mail / the chain's plain mail: {smime / filtered:.2f}   (bench/smime_path.py: the same bytes)")


if __name__ == "__main__":
    main()
