"""Migration in (issue 27): ext plays the old platform, whose Dovecot holds olga@ext.test's
mailbox, seeded here by IMAP like any mail client would have filled it: folders with non-ASCII
names, flags and keywords, old dates, a Word attachment, a 20 MB message. `mailstack migrate`
moves it into mia@legacy.test on the platform and proves every old message arrived.

Operator: the first pass keeps folders, flags, dates and bytes; a second pass moves only what
changed and keeps mail that reached the platform meanwhile (the cutover); `--verify-only` names
a message the new mailbox lacks (a one-way sync never overwrites the platform's side, so a
message deleted there stays deleted: the proof is the place to notice). Failure: the connection to the old server broken in the middle
ends with a clear error and exit 1, and the rerun completes with nothing lost or duplicated."""

from __future__ import annotations

import email.utils
import hashlib
import imaplib
import io
import poplib
import re
import subprocess
import sys
import threading
import time
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest
from helpers import PASSWORD, named_context
from labenv import INVENTORY, ROOT

OLD, NEW = "olga@ext.test", "mia@legacy.test"
FOLDERS = ("Geschäftlich", "Archiv/2025", "Ärger & Ölpreis")

BIG = 20 * 1024 * 1024


def imap(addr, fqdn, ca_file, host: str, user: str) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL(addr[host], 993, ssl_context=named_context(ca_file, fqdn[host]), timeout=120)
    client.login(user, PASSWORD)
    return client


def utf7(name: str) -> str:
    """A folder name in IMAP's modified UTF-7."""
    out, pending = [], ""

    def flush():
        nonlocal pending
        if pending:
            import base64
            out.append("&" + base64.b64encode(pending.encode("utf-16-be")).decode().rstrip("=").replace("/", ",") + "-")
            pending = ""
    for char in name:
        if 0x20 <= ord(char) <= 0x7e:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending += char
    flush()
    return '"' + "".join(out) + '"'


def letter(number: int, folder: str, attachment: bytes | None = None, size: int = 0) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "alter.kunde@old.test", OLD, f"alt {number} in {folder}"
    msg["Message-ID"] = f"<old-{number}@old.test>"
    msg["Date"] = email.utils.format_datetime(email.utils.parsedate_to_datetime("Mon, 03 Feb 2025 10:00:00 +0100"))
    msg.set_content(f"Nachricht {number}\n" + ("x" * 76 + "\n") * (size // 77))
    if attachment:
        msg.add_attachment(attachment, maintype="application", subtype="vnd.ms-word.document.macroEnabled.12",
                           filename="bericht.docm")
    return msg.as_bytes()


def office_document() -> bytes:
    """A small Word document (a ZIP with its parts), as a binary attachment."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as document:
        document.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/'
                          'package/2006/content-types"/>')
        document.writestr("word/document.xml", "<w:document>" + "Bericht über das Jahr 2025. " * 200 + "</w:document>")
    return out.getvalue()


def mailstack(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mailstack.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="module")
def migration(tmp_path_factory, mail, ext, addr, fqdn, ca_file) -> Path:
    """Olga's old mailbox seeded afresh on ext, mia's new one empty, and an inventory that maps
    one to the other (the old password in a file of its own)."""
    ext.check_output(f"doveadm kick {OLD} >/dev/null; rm -rf /var/vmail/ext.test/olga")
    mail.check_output(f"doveadm kick {NEW} >/dev/null; rm -rf /var/vmail/legacy.test/mia")
    with imap(addr, fqdn, ca_file, "ext", OLD) as client:
        for folder in FOLDERS:
            assert client.create(utf7(folder))[0] == "OK"
        when = imaplib.Time2Internaldate(time.mktime((2025, 2, 3, 10, 0, 0, 0, 0, -1)))
        number = 0
        for folder, count in (("INBOX", 150), *((f, 20) for f in FOLDERS)):
            for _ in range(count):
                number += 1
                flags = r"(\Seen \Flagged $Wichtig)" if number % 10 == 0 else r"(\Seen)"
                assert client.append(utf7(folder) if folder != "INBOX" else "INBOX", flags, when,
                                     letter(number, folder))[0] == "OK"
        assert client.append("INBOX", r"(\Seen)", when, letter(9001, "INBOX", office_document()))[0] == "OK"
        assert client.append(utf7("Archiv/2025"), None, when, letter(9002, "Archiv/2025", size=BIG))[0] == "OK"
    secret = tmp_path_factory.mktemp("migration") / "olga.secret"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    inventory = secret.with_name("lab.yml")
    inventory.write_text(Path(INVENTORY.file).read_text() + "\nmigration:\n  source: {host: ext.lab.test}\n  users:\n"
                         f"    - {{address: {NEW}, login: {OLD}, password_file: {secret}}}\n")
    return inventory


def contents(addr, fqdn, ca_file, host: str, user: str) -> dict[str, dict[str, tuple]]:
    """Each folder: Message-ID -> (flags, internal date, SHA-256 of the message)."""
    found = {}
    with imap(addr, fqdn, ca_file, host, user) as client:
        _, listed = client.list()
        for line in listed:
            flags, name = re.match(rb'\(([^)]*)\) "[^"]*" (.*)$', line).groups()
            if re.search(rb"(?i)\\(noselect|nonexistent)", flags):
                continue
            name = name.decode().strip('"')
            _, count = client.select(f'"{name}"', readonly=True)
            _, data = client.fetch("1:*", "(FLAGS INTERNALDATE BODY.PEEK[])") if int(count[0]) else ("OK", [])
            messages = {}
            for item in data:
                if isinstance(item, tuple):
                    body = item[1]
                    mid = re.search(rb"(?im)^Message-ID: (<[^>]*>)", body)
                    flags = tuple(sorted(f.decode() for f in re.search(rb"FLAGS \(([^)]*)\)", item[0])[1].split()
                                         if f != rb"\Recent"))
                    date = re.search(rb'INTERNALDATE "([^"]*)"', item[0])[1].decode()
                    messages[mid[1].decode() if mid else ""] = (flags, date, hashlib.sha256(body).hexdigest())
            found[name] = messages
    return found


def test_a_mailbox_moves_in_with_its_folders_flags_dates_and_every_byte(migration, addr, fqdn, ca_file):
    done = mailstack("migrate", "-i", str(migration))
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(rf"{NEW}\s+ok\s+\d+ folders, 212 messages of the old account all here in [\d.]+ s", done.stdout)
    old, new = contents(addr, fqdn, ca_file, "ext", OLD), contents(addr, fqdn, ca_file, "mail", NEW)
    for folder in ("INBOX", *FOLDERS):
        quoted = utf7(folder).strip('"') if folder != "INBOX" else "INBOX"
        assert old[quoted] and new[quoted] == old[quoted], f"{folder} differs"  # flags, dates, bytes
    big = next(v for v in new[utf7("Archiv/2025").strip('"')].values() if v[2] == old[utf7("Archiv/2025").strip('"')]
               ["<old-9002@old.test>"][2])
    assert big and any("$Wichtig" in flags for flags, _, _ in new["INBOX"].values())


def uidls(addr, fqdn, ca_file, host: str, user: str) -> list[bytes]:
    client = poplib.POP3_SSL(addr[host], 995, context=named_context(ca_file, fqdn[host]), timeout=60)
    try:
        client.user(user)
        client.pass_(PASSWORD)
        return [line.split()[1] for line in client.uidl()[1]]
    finally:
        client.quit()


def test_pop3_clients_see_the_same_uidls_so_nothing_is_downloaded_twice(migration, addr, fqdn, ca_file):
    """Lesson 1: a POP3 client that leaves mail on the server knows each message by its UIDL.
    dsync keeps the old server's UIDs and UIDVALIDITY, so with Dovecot on both sides (the same
    UIDL format) the client finds every message it already has."""
    old = uidls(addr, fqdn, ca_file, "ext", OLD)
    assert len(old) == 151 and uidls(addr, fqdn, ca_file, "mail", NEW) == old


def test_a_second_pass_moves_only_the_change_and_keeps_what_arrived_here(migration, mail, addr, fqdn, ca_file):
    with imap(addr, fqdn, ca_file, "ext", OLD) as client:  # the customer goes on using the old server
        assert client.append("INBOX", None, None, letter(9100, "INBOX"))[0] == "OK"
        client.select("INBOX")
        client.store("1", "+FLAGS", r"(\Answered)")
    mail.check_output(f"printf 'Subject: arrived after the MX moved\\nMessage-ID: <new-1@lab.test>\\n\\nhi\\n' "
                      f"| doveadm save -u {NEW}")  # the cutover: new mail lands on the platform
    done = mailstack("migrate", "-i", str(migration), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    [result] = __import__("json").loads(done.stdout)
    assert result["folders"]["INBOX"]["source"] == 152 and result["folders"]["INBOX"]["extra"] == 1
    new = contents(addr, fqdn, ca_file, "mail", NEW)["INBOX"]
    assert "<old-9100@old.test>" in new and "<new-1@lab.test>" in new
    assert r"\Answered" in new["<old-1@old.test>"][0]
    print(f"second pass: {result['sync']['seconds']} s")


def test_verify_names_a_message_the_new_mailbox_lacks(migration, mail):
    mail.check_output(f"doveadm expunge -u {NEW} mailbox INBOX header Message-ID '<old-7@old.test>'")
    done = mailstack("migrate", "-i", str(migration), "--verify-only")
    assert done.returncode == 1 and "INBOX: 1 of 152 messages missing: <old-7@old.test>" in done.stdout, done.stdout


def test_a_broken_connection_ends_with_an_error_and_the_rerun_completes(migration, mail, ext, addr, fqdn, ca_file):
    """The old server slowed down (2 MB/s from its port 993) and then unreachable while the
    20 MB message is on its way: exit 1 naming dsync; the rerun completes, nothing twice."""
    mail.check_output(f"doveadm kick {NEW} >/dev/null; rm -rf /var/vmail/legacy.test/mia")
    table = "inet mailstack_test_migration"
    ext.check_output(f"nft add table {table} && nft add chain {table} output "
                     "'{ type filter hook output priority -10; }' && "
                     f"nft add rule {table} output tcp sport 993 limit rate over 2 mbytes/second drop")
    try:
        outcome = {}
        moving = threading.Thread(target=lambda: outcome.update(done=mailstack("migrate", "-i", str(migration))))
        moving.start()
        time.sleep(4)
        ext.check_output(f"nft add chain {table} input '{{ type filter hook input priority -10; }}' && "
                         f"nft add rule {table} input ip saddr {addr['mail']} tcp dport 993 reject with tcp reset")
        moving.join(timeout=600)
    finally:
        ext.check_output(f"nft delete table {table}")
    done = outcome["done"]
    print(done.stdout)
    assert done.returncode == 1 and "FAIL" in done.stdout and "dsync failed" in done.stdout, done.stdout
    rerun = mailstack("migrate", "-i", str(migration), "--json")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    for name, folder in __import__("json").loads(rerun.stdout)[0]["folders"].items():
        assert folder["target"] == folder["source"] and not folder["missing"], (name, folder)  # none lost, none twice
