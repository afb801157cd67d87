"""Per-login sending limits and the automatic hold, with real submissions (587, STARTTLS).
The lab's gina@example.test may send 5 messages a minute and is put on hold past 8
recipients a day. The first messages go out and the rest get 451, which her client keeps.
The message that crosses the hold threshold waits in Postfix's hold queue, and later ones get
451. `mailstack account release` lets it go, so what was sent arrives at ext; `--drop`
deletes it instead. bob, on the same tenant, is never affected. The lab sets
limits.lock_password: while she is on hold her password opens nothing."""

import imaplib
import json
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import PASSWORD, imap_find, login_replies, message, named_context, submit

from mailstack.conventions import LIMITS_KEYS as PREFIX
from mailstack.conventions import REDIS_ACCOUNT_SECRET as ACCOUNT_SECRET
from mailstack.conventions import REDIS_ACCOUNT_USER as ACCOUNT_USER

ROOT = Path(__file__).resolve().parents[2]
LIMITED = "gina@example.test"  # messages_per_minute 5, hold_after 8 (lab.yml)
NEIGHBOUR = "bob@example.test"  # the platform's defaults
OUTSIDE = "carol@ext.test"
REDIS_CLI = f"REDISCLI_AUTH=$(cat {ACCOUNT_SECRET}) timeout 10 redis-cli --user {ACCOUNT_USER}"
# rspamd's password (Redis's `default` user, which Dovecot shares), as the filter host keeps it
DEFAULT_CLI = "REDISCLI_AUTH=$(sed -n 's/^password = \"\\(.*\\)\";$/\\1/p' /etc/rspamd/local.d/redis.conf) timeout 10 redis-cli"


def account(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mailstack.cli", "account", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def burst(addr, fqdn, ca_file, user: str, count: int, recipients: list[str], tag: str,
          port: int = 587) -> list[tuple[int, bytes]]:
    """`count` messages in one authenticated session (587 with STARTTLS, or 465): the reply to each."""
    replies = []
    context = named_context(ca_file, fqdn["mail"])
    with (smtplib.SMTP_SSL(addr["mail"], 465, timeout=60, context=context) if port == 465
          else smtplib.SMTP(addr["mail"], 587, timeout=60)) as client:
        if port == 587:
            client.starttls(context=context)
        client.login(user, PASSWORD)
        for i in range(count):
            try:
                client.sendmail(user, recipients, message(user, recipients[0], f"{tag}-{i}").as_bytes())
                replies.append((250, b""))
            except smtplib.SMTPRecipientsRefused as err:
                replies.append(next(iter(err.recipients.values())))
            except smtplib.SMTPResponseException as err:
                replies.append((err.smtp_code, err.smtp_error))
    return replies


def arrived(ext, tag: str, expected: int, timeout: float = 60) -> int:
    """How many messages with `tag` carol has, once `expected` arrived or time is up."""
    deadline = time.monotonic() + timeout
    while True:
        found = len(ext.check_output(f"doveadm search -u {OUTSIDE} mailbox INBOX subject {tag}").splitlines())
        if found >= expected or time.monotonic() > deadline:
            return found
        time.sleep(1)


def held(mail, tag: str) -> list[str]:
    """Queue ids of messages with `tag` in the mail host's hold queue."""
    ids = []
    for entry in map(json.loads, mail.check_output("postqueue -j").splitlines()):
        if entry["queue_name"] == "hold" and tag in mail.check_output(f"postcat -h -q {entry['queue_id']}"):
            ids.append(entry["queue_id"])
    return ids


@pytest.fixture(autouse=True)
def fresh_counters(rspamd_ready):
    for user in (LIMITED, NEIGHBOUR):
        assert account("release", user).returncode == 0
    yield
    account("release", LIMITED, "--drop")


def within_one_minute_window(room: float = 20) -> None:
    """Wait, if need be, until `room` seconds remain in the clock's minute: the limits count in
    fixed windows (one count for each minute since the epoch), so a burst and the
    status read after it must not straddle two."""
    left = 60 - time.time() % 60
    if left < room:
        time.sleep(left + 0.5)


def test_over_the_limit_the_client_gets_451_and_keeps_the_mail(ext, addr, fqdn, ca_file, tag):
    within_one_minute_window()
    replies = burst(addr, fqdn, ca_file, LIMITED, 7, [OUTSIDE], tag)
    assert "messages per minute  5" in account("status", LIMITED).stdout
    assert [code for code, _ in replies] == [250] * 5 + [451] * 2, replies
    assert all(b"rate limit (messages per minute), retry later" in text for _, text in replies[5:])
    neighbour = burst(addr, fqdn, ca_file, NEIGHBOUR, 7, [OUTSIDE], f"{tag}-bob")
    assert [code for code, _ in neighbour] == [250] * 7, "a neighbour's limit must not touch bob"
    assert arrived(ext, tag, 12) == 12  # gina's 5 and bob's 7: nothing refused went out


def test_past_the_hold_threshold_mail_waits_until_released(mail, ext, addr, fqdn, ca_file, tag):
    three = [OUTSIDE, "alice@example.test", NEIGHBOUR]  # 3 recipients a message: the 3rd crosses 8
    replies = burst(addr, fqdn, ca_file, LIMITED, 4, three, tag)
    assert [code for code, _ in replies] == [250, 250, 250, 451], replies
    assert b"account on hold, ask your administrator" in replies[3][1]
    [queue_id] = held(mail, tag)
    status = account("status", LIMITED).stdout
    assert "on hold              yes" in status and queue_id in status and OUTSIDE in status, status
    assert arrived(ext, tag, 3, timeout=10) == 2, "the held message must not leave"
    assert [code for code, _ in burst(addr, fqdn, ca_file, NEIGHBOUR, 1, [OUTSIDE], f"{tag}-bob")] == [250]

    done = account("release", LIMITED)
    assert done.returncode == 0 and "1 held message(s) released" in done.stdout, done
    assert arrived(ext, tag, 3) == 3, "released, but it did not arrive"  # sent = received
    assert held(mail, tag) == [] and "on hold              no" in account("status", LIMITED).stdout
    assert f"held mail released: {queue_id}" in mail.check_output("journalctl -t mailstack-account -o cat")
    assert [code for code, _ in burst(addr, fqdn, ca_file, LIMITED, 1, [OUTSIDE], f"{tag}-after")] == [250]


def test_release_with_drop_deletes_the_held_mail(mail, ext, addr, fqdn, ca_file, tag):
    three = [OUTSIDE, "alice@example.test", NEIGHBOUR]
    assert [c for c, _ in burst(addr, fqdn, ca_file, LIMITED, 3, three, tag)] == [250, 250, 250]
    [queue_id] = held(mail, tag)
    done = account("release", LIMITED, "--drop")
    assert done.returncode == 0 and "1 held message(s) deleted" in done.stdout, done
    assert held(mail, tag) == [] and arrived(ext, tag, 3, timeout=10) == 2
    assert f"held mail deleted: {queue_id}" in mail.check_output("journalctl -t mailstack-account -o cat")


def test_both_submission_ports_count_against_one_limit(addr, fqdn, ca_file, tag):
    within_one_minute_window()
    first = burst(addr, fqdn, ca_file, LIMITED, 3, [OUTSIDE], tag, port=587)
    then = burst(addr, fqdn, ca_file, LIMITED, 3, [OUTSIDE], f"{tag}-465", port=465)
    assert [c for c, _ in first + then] == [250] * 5 + [451], first + then


def test_an_account_can_be_held_by_hand(addr, fqdn, ca_file, tag):
    """A session that logged in before the hold gets 451 for its next message (a new one
    could not log in: limits.lock_password)."""
    with smtplib.SMTP(addr["mail"], 587, timeout=60) as client:
        client.starttls(context=named_context(ca_file, fqdn["mail"]))
        client.login(LIMITED, PASSWORD)
        assert account("hold", LIMITED).returncode == 0
        with pytest.raises(smtplib.SMTPDataError) as refused:  # the rule sees the whole message
            client.sendmail(LIMITED, [OUTSIDE], message(LIMITED, OUTSIDE, tag).as_bytes())
    assert refused.value.smtp_code == 451 and b"account on hold" in refused.value.smtp_error


def logins(addr, fqdn, ca_file, user: str) -> dict[str, str]:
    return login_replies(addr["mail"], fqdn["mail"], ca_file, user)


def test_a_held_accounts_password_opens_nothing_until_released(mail, addr, fqdn, ca_file, tag):
    assert logins(addr, fqdn, ca_file, LIMITED) == {"imap": "OK", "pop3": "+OK Logged in.", "smtp": "235"}
    assert account("hold", LIMITED).returncode == 0
    refused = logins(addr, fqdn, ca_file, LIMITED)
    assert "AUTHENTICATIONFAILED" in refused["imap"] and "-ERR" in refused["pop3"], refused
    assert refused["smtp"].startswith("535"), refused
    assert logins(addr, fqdn, ca_file, NEIGHBOUR)["imap"] == "OK", "bob's logins must not be touched"
    submit(addr["mail"], fqdn["mail"], ca_file, NEIGHBOUR, message(NEIGHBOUR, LIMITED, tag))
    deadline = time.monotonic() + 60
    while not mail.check_output(f"doveadm search -u {LIMITED} mailbox INBOX subject {tag}"):
        assert time.monotonic() < deadline, "mail to a held account must still be delivered"
        time.sleep(1)
    assert account("release", LIMITED).returncode == 0
    assert logins(addr, fqdn, ca_file, LIMITED) == {"imap": "OK", "pop3": "+OK Logged in.", "smtp": "235"}
    assert imap_find(addr["mail"], fqdn["mail"], ca_file, LIMITED, tag), "released, she reads it"


def test_without_redis_logins_fail_temporarily_never_open(mail, addr, fqdn, ca_file):
    """The hold is asked in Redis on every login: unreachable, nobody is let in unchecked."""
    mail.run("systemctl stop redis-server")
    try:
        said = logins(addr, fqdn, ca_file, NEIGHBOUR)
    finally:
        mail.run("systemctl start redis-server")
    assert "UNAVAILABLE" in said["imap"] and "SYS/TEMP" in said["pop3"], said
    assert said["smtp"].startswith("535"), said  # Postfix reports Dovecot's temporary failure so
    assert logins(addr, fqdn, ca_file, NEIGHBOUR)["imap"] == "OK"


def open_session(addr, fqdn, ca_file, user: str) -> imaplib.IMAP4_SSL:
    imap = imaplib.IMAP4_SSL(addr["mail"], 993, ssl_context=named_context(ca_file, fqdn["mail"]), timeout=30)
    imap.login(user, PASSWORD)
    assert imap.select("INBOX", readonly=True)[0] == "OK"
    return imap


def ended(imap: imaplib.IMAP4_SSL, within: float = 20) -> bool:
    """Whether the server ends this session within `within` seconds (it is closed either way)."""
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            imap.noop()
            time.sleep(1)
        return False
    except (imaplib.IMAP4.abort, imaplib.IMAP4.error, OSError):
        return True
    finally:
        imap.shutdown()


def test_a_hold_ends_the_sessions_already_open(addr, fqdn, ca_file):
    """The thief logged in before the hold: `mailstack account hold` ends that IMAP session
    too (a refused password only stops new logins). bob's session beside it goes on."""
    thief, neighbour = (open_session(addr, fqdn, ca_file, user) for user in (LIMITED, NEIGHBOUR))
    try:
        assert account("hold", LIMITED).returncode == 0
        assert ended(thief, within=5), "the held account's open session goes on"
        assert neighbour.noop()[0] == "OK"
    finally:
        account("release", LIMITED)
        neighbour.logout()


def test_an_automatic_hold_ends_the_sessions_already_open(mail, addr, fqdn, ca_file):
    """A hold the limits set (rspamd writes it to Redis; no tool runs): the watcher on the
    login host ends the open session within seconds."""
    thief = open_session(addr, fqdn, ca_file, LIMITED)
    try:
        mail.check_output(f"{REDIS_CLI} SET {PREFIX}{LIMITED}:hold "
                          "'{\"login\": \"" + LIMITED + "\", \"since\": 0, \"by\": \"test\"}'")
        assert ended(thief), "the held account's open session goes on"
    finally:
        account("release", LIMITED)


def test_each_redis_client_is_confined_to_its_own_user(mail):
    """rspamd's and Dovecot's password runs data commands but no administration; the
    account tool's user reaches the limits' keys only; no password at all opens nothing."""
    assert mail.check_output(f"{DEFAULT_CLI} PING") == "PONG"
    for command in ("CONFIG GET dir", "ACL LIST", "FLUSHALL", "SHUTDOWN NOSAVE", "MONITOR", "CLIENT KILL TYPE normal"):
        done = mail.run(f"{DEFAULT_CLI} {command}")
        said = done.stdout + done.stderr
        assert "NOPERM" in said, (command, said)
    assert mail.check_output(f"{REDIS_CLI} SET {PREFIX}confined-test:probe 1") == "OK"
    assert mail.check_output(f"{REDIS_CLI} DEL {PREFIX}confined-test:probe") == "1"
    for command in ("GET rs_history", "SET mailstack-planted 1", "CONFIG GET dir", "FLUSHDB"):
        done = mail.run(f"{REDIS_CLI} {command}")
        said = done.stdout + done.stderr
        assert "NOPERM" in said, (command, said)
    done = mail.run("timeout 5 redis-cli GET anything")
    said = done.stdout + done.stderr
    assert "NOAUTH" in said, said
    settings = mail.file("/etc/redis/mailstack.conf").content_string
    assert "requirepass" not in settings and mail.file(ACCOUNT_SECRET).mode == 0o600
