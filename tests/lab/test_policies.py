"""Spam and malware policies per recipient, with real mail, rspamd, ClamAV and Peekaboo.
example.test rejects (the default); legacy.test quarantines into quarantine@legacy.test,
whose admin lists, releases and deletes with `mailstack quarantine`; its user frank files
spam into Junk and has malware discarded (confirmed by the domain, always logged)."""

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import imap_find, message
from test_clamav import WAIT_FOR_CLAMD
from test_mail_flow import smtp_from_test_machine

from deploys.clamav import EICAR, LAB_SIGNATURE

ROOT = Path(__file__).resolve().parents[2]
QUARANTINE = "quarantine@legacy.test"
QUARANTINES = "erin@legacy.test"  # legacy.test: spam and malware quarantined
JUNK_OR_DISCARD = "frank@legacy.test"  # his own policy: spam to Junk, malware discarded
REJECTS = "alice@example.test"  # example.test: the defaults
VIRUS = f"{LAB_SIGNATURE}.UNOFFICIAL"
SPAM_SENDER = "bounce@paypa1-secure.example.test"


def spam(tag: str, extra_headers: str = "") -> bytes:
    """Mail with what real phishing has (caps subject, IP links, hidden text, no Message-ID):
    rspamd scores it well above the reject score with its local rules alone."""
    return (f"From: \"PayPal Security\" <service@paypa1-secure.example.test>\r\n"
            f"To: undisclosed-recipients:;\r\n{extra_headers}"
            f"Subject: {tag} URGENT!!! YOUR ACCOUNT IS SUSPENDED - VERIFY NOW!!! FREE MONEY $$$\r\n"
            "Reply-To: winner@freemail.example.com\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/html; charset=us-ascii\r\n\r\n"
            "<html><body><div style=\"font-size:0px\">invisible padding</div>\r\n"
            "<a href=\"http://192.0.2.66/paypal.com/login\">https://www.paypal.com/signin</a>\r\n"
            "Dear Customer, your account has been suspended. Verify your password now to claim "
            "your prize of $1,000,000 USD.\r\n</body></html>\r\n").encode()


def send(sender: str, recipients: list[str], data: bytes) -> tuple[int, bytes]:
    """One SMTP transaction from outside, on port 25: the reply to DATA."""
    with smtp_from_test_machine(ADDR) as client:
        client.ehlo("unknown-host.example.com")
        client.mail(sender)
        for rcpt in recipients:
            assert client.rcpt(rcpt)[0] == 250, rcpt
        return client.data(data)


def eicar(tag: str, recipient: str) -> bytes:
    return message("carol@ext.test", recipient, tag, body=f"see below\n{EICAR}\n").as_bytes()


def find(user: str, tag: str, mailbox: str = "INBOX", timeout: float = 20) -> bytes | None:
    return imap_find(ADDR["mail"], FQDN["mail"], CA, user, tag, mailbox=mailbox, timeout=timeout)


def quarantine(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mailstack.cli", "quarantine", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def listed(tag: str) -> list[list[str]]:
    """The `mailstack quarantine list` rows (UID, received, for, finding, from, subject) of tag."""
    done = quarantine("list", "legacy.test")
    assert done.returncode == 0, done.stderr
    return [line.split("\t") for line in done.stdout.splitlines() if tag in line]


@pytest.fixture(scope="module", autouse=True)
def ready(mail, addr, fqdn, ca_file, rspamd_ready):
    global ADDR, FQDN, CA
    ADDR, FQDN, CA = addr, fqdn, ca_file
    mail.check_output(WAIT_FOR_CLAMD)
    mail.check_output("systemctl start mailstack-peekaboo; for i in $(seq 30); do "
                      "ss -ltn | grep -q '127.0.0.1:8100 ' && break; sleep 1; done")


def test_spam_to_a_rejecting_domain_is_refused(tag):
    code, reply = send(SPAM_SENDER, [REJECTS], spam(tag))
    assert code == 554, (code, reply)
    assert find(REJECTS, tag, timeout=2) is None and find(REJECTS, tag, "Junk", timeout=1) is None


def test_quarantined_spam_is_listed_and_released_unchanged(mail, tag):
    code, reply = send(SPAM_SENDER, [QUARANTINES], spam(tag))
    assert code == 250, (code, reply)  # accepted: the tenant wants every mail
    held = find(QUARANTINE, tag)
    assert held is not None, "the spam is not in the quarantine mailbox"
    assert b"X-Mailstack-Finding: spam; spam, score" in held
    assert find(QUARANTINES, tag, timeout=1) is None and find(QUARANTINES, tag, "Junk", timeout=1) is None
    [row] = listed(tag)
    uid, recipient, finding = row[0], row[2], row[3]
    assert recipient == QUARANTINES and finding.startswith("spam; spam, score"), row

    done = quarantine("release", "legacy.test", uid)
    assert done.returncode == 0 and f"released UID {uid} to {QUARANTINES}" in done.stdout, done
    released = find(QUARANTINES, tag)
    assert released is not None, "released, but not in the recipient's INBOX"
    assert released.split(b"\r\n\r\n", 1)[1] == held.split(b"\r\n\r\n", 1)[1]  # the body, byte for byte
    assert b"X-Mailstack-Finding" not in released and b"Delivered-To: quarantine" not in released
    assert b"for <quarantine+erin@legacy.test>" in released  # the stay stays on record (Received)
    assert listed(tag) == [], "still in the quarantine after its release"
    assert f"released UID {uid} of {QUARANTINE}" in mail.check_output("journalctl -t mailstack-quarantine -o cat")


def test_quarantined_virus_can_be_deleted(mail, tag):
    code, reply = send("carol@ext.test", [QUARANTINES], eicar(tag, QUARANTINES))
    assert code == 250, (code, reply)
    held = find(QUARANTINE, tag)
    assert held is not None and f"X-Mailstack-Finding: malware; virus found: {VIRUS}".encode() in held
    [row] = listed(tag)
    done = quarantine("delete", "legacy.test", row[0])
    assert done.returncode == 0, done
    assert listed(tag) == [] and find(QUARANTINES, tag, timeout=2) is None
    assert f"<{tag}@lab.test>" in mail.check_output("journalctl -t mailstack-quarantine -o cat")


def test_a_bad_attachment_follows_the_policy_too(tag):
    """Peekaboo's verdict is malware for the policy, like a ClamAV finding."""
    msg = message("carol@ext.test", QUARANTINES, tag)
    msg.add_attachment(f"// {tag}\nvar x = 1;\n".encode(), maintype="application", subtype="octet-stream",
                       filename="invoice.js")
    code, reply = send("carol@ext.test", [QUARANTINES], msg.as_bytes())
    assert code == 250, (code, reply)
    held = find(QUARANTINE, tag)
    assert held is not None and b"X-Mailstack-Finding: malware; attachment refused: invoice.js" in held


def test_a_users_own_policy_files_spam_into_junk(tag):
    code, _ = send(SPAM_SENDER, [JUNK_OR_DISCARD], spam(tag))
    assert code == 250
    assert find(JUNK_OR_DISCARD, tag, "Junk") is not None
    assert find(JUNK_OR_DISCARD, tag, timeout=1) is None and not listed(tag)


def test_confirmed_discard_drops_the_virus_and_logs_it(mail, tag):
    code, _ = send("carol@ext.test", [JUNK_OR_DISCARD], eicar(tag, JUNK_OR_DISCARD))
    assert code == 250  # the sender is not told: what the domain confirmed
    log = mail.check_output(f"for i in $(seq 20); do grep -h '<{tag}@lab.test>' /var/log/rspamd/rspamd.log "
                            "&& break; sleep 1; done || true")
    assert f"mailstack policy: malware (virus found: {VIRUS}), message-id <{tag}@lab.test>, sender " \
           f"<carol@ext.test>: quarantined for , discarded for {JUNK_OR_DISCARD}" in log, log
    for folder in ("INBOX", "Junk"):
        assert find(JUNK_OR_DISCARD, tag, folder, timeout=2) is None
    assert not listed(tag)


def test_one_rejecting_recipient_refuses_the_message_for_all(tag):
    code, _ = send(SPAM_SENDER, [QUARANTINES, REJECTS], spam(tag))
    assert code == 554  # the sender is told; no copy is kept anywhere
    assert not listed(tag) and find(QUARANTINES, tag, timeout=2) is None


def test_recipients_are_treated_each_by_their_policy_and_never_see_each_other(tag):
    code, _ = send(SPAM_SENDER, [QUARANTINES, JUNK_OR_DISCARD], spam(tag))
    assert code == 250
    junk = find(JUNK_OR_DISCARD, tag, "Junk")
    assert junk is not None, "frank's copy is not in his Junk"
    # erin was a hidden recipient, and her copy went to the quarantine mailbox: frank's copy
    # names neither (the word "quarantine" itself may appear: the sender domain's DMARC policy)
    assert b"erin" not in junk and b"quarantine@" not in junk.lower() and b"quarantine+" not in junk.lower()
    assert [row[2] for row in listed(tag)] == [QUARANTINES]


def test_a_forged_finding_header_is_stripped_and_cannot_be_released(tag):
    """An outsider writes to the quarantine's +detail with a header that looks quarantined."""
    forged = message("carol@ext.test", QUARANTINE, tag)
    forged["X-Mailstack-Finding"] = "spam; forged"
    code, _ = send("carol@ext.test", [f"quarantine+{QUARANTINES.split('@')[0]}@legacy.test"], forged.as_bytes())
    assert code == 250
    held = find(QUARANTINE, tag)
    assert held is not None and b"X-Mailstack-Finding" not in held
    [row] = listed(tag)
    assert row[3].startswith("(not quarantined"), row
    done = quarantine("release", "legacy.test", row[0])
    assert done.returncode != 0 and "not quarantined by the platform" in done.stderr, done
    assert find(QUARANTINES, tag, timeout=2) is None
