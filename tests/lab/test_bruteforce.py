"""Brute-force protection every platform gets (fail2ban from Debian, acting through nftables):
wrong passwords from ext on IMAP, POP3 and submission, counted together, ban ext's address
on every login port for the inventory's ban time. Mail on port 25 still flows, other clients
still log in, the platform's own hosts are never banned, and the ban ends by itself."""

import time

import pytest
from helpers import PASSWORD, imap_find

from mailstack.component import seconds
from mailstack.conventions import LOGIN_PORTS

JAIL = "mailstack-logins"

# wrong password number i on IMAP, POP3 or submission, in turn (one Dovecot auth line each:
# submission tries PLAIN only, where smtplib's login() would try LOGIN too). An attempt that
# ends any other way than a refused login (a dropped connection) is tried again, so the jail
# is shown exactly `count` refused logins; an attempt that never gets refused fails the script.
WRONG_LOGINS = """
import imaplib, poplib, smtplib, ssl, sys
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
tag, count = sys.argv[1], int(sys.argv[2])
def refused(err):
    return (isinstance(err, (imaplib.IMAP4.error, poplib.error_proto, smtplib.SMTPAuthenticationError))
            and not isinstance(err, imaplib.IMAP4.abort))
for i in range(count):
    password = f"wrong {tag} {i}"
    for _ in range(3):
        if i % 3 == 0:
            client = imaplib.IMAP4_SSL("{server}", 993, ssl_context=ctx, timeout=30)
            attempt, close = lambda: client.login("alice@example.test", password), client.shutdown
        elif i % 3 == 1:
            client = poplib.POP3_SSL("{server}", 995, context=ctx, timeout=30)
            attempt, close = lambda: (client.user("alice@example.test"), client.pass_(password)), client.close
        else:
            client = smtplib.SMTP("{server}", 587, timeout=30); client.starttls(context=ctx); client.ehlo()
            attempt, close = lambda: client.auth("PLAIN", lambda challenge=None: f"\\0alice@example.test\\0{password}"), client.close
        try:
            attempt()
            sys.exit(f"attempt {i}: a wrong password was accepted")
        except Exception as err:
            close()
            print(i, type(err).__name__, err)
            if refused(err):
                break
    else:
        sys.exit(f"attempt {i}: never refused as a wrong login")
"""

REACHABLE = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 3)"


def banned(mail) -> str:
    return mail.check_output(f"fail2ban-client get {JAIL} banned")


def reachable(host, server: str, port: int) -> bool:
    return host.run(f"python3 -c '{REACHABLE}' {server} {port}").rc == 0


def wrong_logins(host, server: str, tag: str, count: int) -> str:
    return host.check_output(f"python3 -c '{WRONG_LOGINS.replace('{server}', server)}' {tag} {count}")


@pytest.fixture
def jail(mail):
    """The jail, with no failures counted yet (a restart forgets earlier tests' failures)."""
    mail.check_output(f"fail2ban-client unban --all && fail2ban-client restart {JAIL} && fail2ban-client status {JAIL}")
    yield
    mail.run("fail2ban-client unban --all")


def test_failed_logins_ban_the_address_on_every_login_port_until_the_ban_ends(jail, mail, ext, inv, addr, fqdn,
                                                                              ca_file, tag):
    settings = inv.bruteforce
    wrong_logins(ext, addr["mail"], tag, settings["max_failures"])
    deadline = time.monotonic() + 20
    while addr["ext"] not in banned(mail) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert addr["ext"] in banned(mail), (mail.check_output(f"fail2ban-client status {JAIL}") + "\n"
                                         + mail.run("journalctl -u dovecot --since -2min -g mismatch").stdout)
    for port in LOGIN_PORTS:
        assert not reachable(ext, addr["mail"], port), f"banned, but port {port} still answers ext"
    assert reachable(ext, addr["mail"], 25), "a ban must not stop mail on port 25"
    # another client (this machine) still logs in while ext is banned
    assert imap_find(addr["mail"], fqdn["mail"], ca_file, "alice@example.test", "no such subject", timeout=0) is None
    # the ban ends by itself after the ban time
    deadline = time.monotonic() + seconds(settings["ban_time"]) + 20
    while not reachable(ext, addr["mail"], 993) and time.monotonic() < deadline:
        time.sleep(1)
    assert all(reachable(ext, addr["mail"], port) for port in LOGIN_PORTS), "the ban did not end"
    assert addr["ext"] not in banned(mail)


def test_the_platforms_own_hosts_are_never_banned(jail, mail, inv, addr, tag):
    wrong_logins(mail, addr["mail"], tag, inv.bruteforce["max_failures"] + 1)
    time.sleep(2)
    assert addr["mail"] not in banned(mail)
    assert reachable(mail, addr["mail"], 993)


def test_a_right_password_is_never_counted(jail, mail, ext, inv, addr):
    """Good logins from ext, more than the limit: no ban."""
    script = ("import imaplib, ssl; ctx = ssl.create_default_context(); ctx.check_hostname = False; "
              "ctx.verify_mode = ssl.CERT_NONE; "
              f"[imaplib.IMAP4_SSL('{addr['mail']}', 993, ssl_context=ctx).login('alice@example.test', "
              f"'{PASSWORD}') for _ in range({inv.bruteforce['max_failures'] + 1})]")
    ext.check_output(f'python3 -c "{script}"')
    time.sleep(2)
    assert addr["ext"] not in banned(mail)
