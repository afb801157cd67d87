"""Run on a mailbox host by `mailstack migrate` (python3 -c, as root): move one old account's
mail into a platform user's mailbox with Dovecot's dsync over IMAPS, then compare the two.

argv: old server, port, old login, platform user, "sync" or "verify". Standard input: the old
account's password; it goes into a Dovecot configuration file that only root can read, in a
private directory removed at the end, never onto a command line. Prints one JSON object: the
sync's result and seconds, and per folder the messages of each side (Message-ID and size) that
the other lacks. Standard library only: the host has nothing else to offer."""

import base64
import collections
import imaplib
import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
import time

MAIN_CONFIG = "/etc/dovecot/dovecot.conf"
TIMEOUT = 3600  # seconds for one account's sync


def quoted(value: str) -> str:
    """A value as Dovecot's configuration reads it: quoted, and with no %variables."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'


def utf7_decoded(name: str) -> str:
    """An IMAP folder name (modified UTF-7, RFC 3501) as text."""
    def part(match: re.Match) -> str:
        chunk = match.group(1)
        if not chunk:
            return "&"
        data = chunk.replace(",", "/")
        return base64.b64decode(data + "=" * (-len(data) % 4)).decode("utf-16-be")
    return re.sub(r"&([^-]*)-", part, name)


def source_messages(server: str, port: int, login: str, password: str) -> dict[str, collections.Counter]:
    """Each folder of the old account: Counter of (Message-ID, size) as the old server answers."""
    found = {}
    with imaplib.IMAP4_SSL(server, port, ssl_context=ssl.create_default_context(), timeout=120) as imap:
        imap.login(login, password)
        _, folders = imap.list()
        for line in folders:
            match = re.match(rb'\((?P<flags>[^)]*)\) (?:"(?P<sep>[^"]*)"|NIL) (?P<name>.*)$', line)
            if match is None or b"\\noselect" in match["flags"].lower():
                continue
            raw = match["name"].decode()
            raw = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\") if raw.startswith('"') else raw
            separator = (match["sep"] or b"/").decode()
            name = "/".join(utf7_decoded(raw).split(separator))
            status, data = imap.select(imap._quote(raw), readonly=True)
            messages = collections.Counter()
            if status == "OK" and int(data[0]) > 0:
                _, fetched = imap.fetch("1:*", "(RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
                for item in fetched:
                    if isinstance(item, tuple):
                        size = int(re.search(rb"RFC822\.SIZE (\d+)", item[0])[1])
                        header = re.search(rb"(?is)message-id:\s*(<[^>]*>)", item[1])
                        messages[(header[1].decode(errors="replace") if header else "", size)] += 1
            found["INBOX" if name.upper() == "INBOX" else name] = messages
    return found


def target_messages(user: str) -> dict[str, collections.Counter]:
    """Each folder of the platform user: Counter of (Message-ID, size) as Dovecot has them."""
    listed = subprocess.run(["doveadm", "-f", "tab", "mailbox", "list", "-u", user], capture_output=True, text=True,
                            check=True).stdout.splitlines()
    found = {name: collections.Counter() for name in listed[1:] if name}
    done = subprocess.run(["doveadm", "-f", "tab", "fetch", "-u", user, "mailbox size.virtual hdr.message-id", "all"],
                          capture_output=True, text=True, check=True)
    for row in done.stdout.splitlines()[1:]:
        mailbox, size, *header = row.split("\t")
        match = re.search(r"<[^>]*>", "\t".join(header))
        found.setdefault(mailbox, collections.Counter())[(match[0] if match else "", int(size))] += 1
    return found


def compared(source: dict, target: dict) -> dict:
    folders = {}
    for name in sorted(set(source) | set(target)):
        mine, theirs = target.get(name, collections.Counter()), source.get(name, collections.Counter())
        folders[name] = {"source": sum(theirs.values()), "target": sum(mine.values()),
                         "missing": sorted(f"{i or '(no Message-ID)'} {s}" for i, s in (theirs - mine).elements()),
                         "extra": sum((mine - theirs).values())}
    return folders


def sync(server: str, port: int, login: str, user: str, password: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="mailstack-migrate-") as private:  # 0700, root's
        config = os.path.join(private, "dovecot.conf")
        with open(os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            out.write("\n".join([f"!include {MAIN_CONFIG}", f"imapc_host = {server}", f"imapc_port = {port}",
                                 "imapc_ssl = imaps", "imapc_ssl_verify = yes",
                                 "ssl_client_ca_file = /etc/ssl/certs/ca-certificates.crt",
                                 f"imapc_user = {quoted(login)}", f"imapc_password = {quoted(password)}",
                                 "imapc_features = rfc822.size fetch-headers modseq", "mail_prefetch_count = 20", ""]))
        started = time.monotonic()
        # one-way, from the old server (-R: it is the remote side), never deleting at either end
        done = subprocess.run(["doveadm", "-c", config, "sync", "-1", "-R", "-u", user, "imapc:"],
                              capture_output=True, text=True, timeout=TIMEOUT)
    return {"code": done.returncode, "seconds": round(time.monotonic() - started, 2),
            **({"error": "\n".join(done.stderr.strip().splitlines()[-5:])} if done.returncode else {})}


def main() -> None:
    server, port, login, user, action = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    password = sys.stdin.readline().rstrip("\n")
    result = {"user": user}
    if action == "sync":
        result["sync"] = sync(server, port, login, user, password)
    if result.get("sync", {}).get("code", 0) == 0:
        try:
            result["folders"] = compared(source_messages(server, port, login, password), target_messages(user))
        except (OSError, imaplib.IMAP4.error, subprocess.CalledProcessError) as err:
            result["verify_error"] = f"{type(err).__name__}: {err}"
    print(json.dumps(result))


if __name__ == "__main__":
    main()
