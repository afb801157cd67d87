#!/usr/bin/python3
"""Managed by mailstack: a domain's quarantine mailbox on this host.

  mailstack-quarantine list    MAILBOX
  mailstack-quarantine release MAILBOX UID [--to USER]   deliver to the original recipient's
                                                         INBOX (or USER's: for an alias)
  mailstack-quarantine delete  MAILBOX UID

rspamd sends each quarantined recipient's copy to MAILBOX's +detail (quarantine+erin@...)
with an X-Mailstack-Finding header (it strips that header from all other mail): only such
copies are released, unchanged but for those two delivery traces, and only within the
mailbox's own domain. Every release and delete is logged (syslog, tag mailstack-quarantine)."""

import json
import re
import subprocess
import sys
import syslog

HEADER = b"x-mailstack-finding"


def doveadm(*args: str, data: bytes | None = None) -> bytes:
    done = subprocess.run(["doveadm", *args], input=data, capture_output=True)
    if done.returncode:
        sys.exit(f"doveadm {args[0]}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def fetch(mailbox: str, fields: str, search: list[str]) -> list[dict]:
    return json.loads(doveadm("-f", "json", "fetch", "-u", mailbox, fields, "mailbox", "INBOX", *search) or b"[]")


def split(raw: bytes) -> tuple[list[bytes], bytes]:
    """The header fields (each with its folded lines) and the rest, byte for byte."""
    end = min((i for i in (raw.find(b"\n\n"), raw.find(b"\r\n\r\n")) if i >= 0), default=len(raw))
    fields: list[bytes] = []
    for line in raw[:end].splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return fields, raw[end:]


def field(fields: list[bytes], name: bytes) -> bytes | None:
    for f in fields:
        if f.split(b":", 1)[0].strip().lower() == name:
            return b" ".join(f.split(b":", 1)[1].split())
    return None


def message(mailbox: str, uid: str) -> bytes:
    found = subprocess.run(["doveadm", "fetch", "-u", mailbox, "text", "mailbox", "INBOX", "uid", uid],
                           capture_output=True)
    raw = found.stdout
    if found.returncode or not raw.startswith(b"text:\n"):
        sys.exit(f"{mailbox}: no message with UID {uid}")
    return raw[len(b"text:\n"):].rstrip(b"\f\n") + b"\n"


def cmd_list(mailbox: str) -> None:
    rows = fetch(mailbox, "uid date.received hdr.delivered-to hdr.from hdr.subject hdr.x-mailstack-finding", ["all"])
    print("UID\tRECEIVED\tFOR\tFINDING\tFROM\tSUBJECT")
    for row in rows:
        finding = row.get("hdr.x-mailstack-finding") or "(not quarantined: mail to the mailbox itself)"
        print("\t".join([row["uid"], row["date.received"], recipient(mailbox, row.get("hdr.delivered-to", "")),
                         finding, row.get("hdr.from", ""), row.get("hdr.subject", "")]))


def recipient(mailbox: str, delivered_to: str) -> str:
    """The quarantined recipient: the +detail of the copy's Delivered-To, in MAILBOX's domain."""
    local, _, domain = mailbox.partition("@")
    match = re.fullmatch(re.escape(local) + r"\+([^@\s]+)@" + re.escape(domain), delivered_to.strip(), re.I)
    return f"{match.group(1)}@{domain}" if match else ""


def cmd_release(mailbox: str, uid: str, to: str | None) -> None:
    fields, body = split(message(mailbox, uid))
    finding = field(fields, HEADER)
    original = recipient(mailbox, (field(fields, b"delivered-to") or b"").decode())
    if finding is None or not original:
        sys.exit(f"{mailbox} UID {uid}: not quarantined by the platform; nothing released")
    target = to or original
    if target.rpartition("@")[2].lower() != mailbox.rpartition("@")[2].lower():
        sys.exit(f"{target}: not in {mailbox}'s domain; nothing released")
    if subprocess.run(["doveadm", "user", target], capture_output=True).returncode:
        sys.exit(f"{target} has no mailbox here (an alias? name a user with --to); nothing released")
    # what delivery into the quarantine added: the finding header, Dovecot's Delivered-To on top
    names = [f.split(b":", 1)[0].strip().lower() for f in fields]
    top = names.index(b"delivered-to")
    kept = [f for i, (f, name) in enumerate(zip(fields, names, strict=True)) if name != HEADER and i != top]
    doveadm("save", "-u", target, "-m", "INBOX", data=b"".join(kept) + body)
    doveadm("expunge", "-u", mailbox, "mailbox", "INBOX", "uid", uid)
    log(f"released UID {uid} of {mailbox} ({finding.decode(errors='replace')}, for {original}) to {target}")
    print(f"released UID {uid} to {target}")


def cmd_delete(mailbox: str, uid: str) -> None:
    fields, _ = split(message(mailbox, uid))
    doveadm("expunge", "-u", mailbox, "mailbox", "INBOX", "uid", uid)
    details = ", ".join(f"{name.decode()}: {(field(fields, name) or b'').decode(errors='replace')}"
                        for name in (b"message-id", b"return-path", HEADER))
    log(f"deleted UID {uid} of {mailbox} ({details})")
    print(f"deleted UID {uid}")


def log(text: str) -> None:
    syslog.openlog("mailstack-quarantine", 0, syslog.LOG_MAIL)
    syslog.syslog(syslog.LOG_NOTICE, text)


def main(argv: list[str]) -> None:
    to = None
    if len(argv) == 5 and argv[0] == "release" and argv[3] == "--to":
        argv, to = argv[:3], argv[4]
    if not argv or argv[0] not in ("list", "release", "delete") or len(argv) != (2 if argv[0] == "list" else 3):
        sys.exit(__doc__)
    if len(argv) == 3 and not argv[2].isdigit():
        sys.exit("a UID is a number (see `list`)")
    if argv[0] == "list":
        cmd_list(argv[1])
    elif argv[0] == "release":
        cmd_release(argv[1], argv[2], to)
    else:
        cmd_delete(argv[1], argv[2])


if __name__ == "__main__":
    main(sys.argv[1:])
