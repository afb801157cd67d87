"""Webmail (Roundcube behind nginx on mail), driven in a real browser: Debian's Chromium
through Selenium and Debian's chromedriver. A user logs in with a password, reads what ext
sent, replies (S/MIME-encrypted to ext, as the tenant and partner require) and logs out; a
tokens-only user logs in on the IdP's own page; a wrong password is refused, and from ext
counts toward the ban; a held account cannot send; a user of another tenant cannot read the
first one's message; a POST without Roundcube's request token changes nothing. Every step's
screenshot is kept in test-artifacts/webmail/."""

from __future__ import annotations

import base64
import http.client
import re
import shlex
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest
from browser import SITES, WEBMAIL, Browser, trusting_home, url
from helpers import PASSWORD, NamedContext, imap_find, message, submit, tls_context
from labenv import INVENTORY
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By

from deploys.idp import user_password_name
from mailstack.secrets import password

ROOT = Path(__file__).resolve().parents[2]
IDP = INVENTORY.hosts_with("idp")[0]
JAIL = "mailstack-logins"


@pytest.fixture(scope="module")
def browser_home(tmp_path_factory, ca_file):
    return trusting_home(tmp_path_factory.mktemp("chromium"), ca_file)


@pytest.fixture
def browser(browser_home, request):
    opened = Browser(browser_home, request.node.name.removeprefix("test_")[:40])
    yield opened
    opened.close()


def https(ca_file: str, domain: str, method: str, path: str, body: str | None = None,
          headers: dict | None = None) -> tuple[int, dict, str]:
    """A request to a webmail site by its name (certificate checked), from this machine."""
    connection = http.client.HTTPSConnection(WEBMAIL.address, 443, timeout=30,
                                             context=NamedContext(tls_context(ca_file), SITES[domain]))
    connection.request(method, path, body, {"Host": SITES[domain], **(headers or {})})
    response = connection.getresponse()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode(errors="replace")


def uid_of(row) -> str:
    """The message's IMAP UID from its row (Roundcube writes it base64url-encoded into the id)."""
    encoded = row.get_attribute("id").removeprefix("rcmrow")
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()


def from_ext(addr, fqdn, ca_file, recipient: str, subject: str) -> None:
    submit(addr["ext"], fqdn["ext"], ca_file, "carol@ext.test", message("carol@ext.test", recipient, subject))
    assert imap_find(addr["mail"], fqdn["mail"], ca_file, recipient, subject) is not None, "not delivered"


def test_a_user_reads_mail_from_ext_replies_encrypted_and_logs_out(browser, addr, fqdn, ca_file, tag):
    from_ext(addr, fqdn, ca_file, "alice@example.test", tag)
    browser.login("example.test", "alice@example.test")
    row = browser.inbox_row(tag)
    browser.shot("inbox")
    assert row is not None, "the message from ext is not in the inbox"
    uid = uid_of(row)
    browser.driver.get(url("example.test", f"/?_task=mail&_action=show&_uid={uid}&_mbox=INBOX"))
    assert "Hello from the lab." in browser.wait("#messagebody").text
    browser.shot("message")
    browser.compose("example.test", f"&_reply_uid={uid}&_mbox=INBOX")
    body = browser.wait("#composebody")
    body.send_keys(f"Reply from webmail {tag}\n")
    browser.shot("reply")
    browser.click("button.send, a.send, input.send")
    browser.wait("#messagelist")
    browser.shot("sent")
    # ext receives it: sent through submission as alice, so signed and encrypted for carol
    raw = imap_find(addr["ext"], fqdn["ext"], ca_file, "carol@ext.test", f"Re: {tag}")
    assert raw is not None, "ext did not receive the reply"
    assert b"application/pkcs7-mime" in raw and b"enveloped-data" in raw, raw[:600]
    assert re.search(rb"(?mi)^from: .*alice@example\.test", raw), raw[:600]
    # logged out: the login form again, and the old session no longer opens the inbox
    cookies = browser.cookie_header()
    browser.click("a.logout")
    browser.wait("#rcmloginuser")
    browser.shot("logged-out")
    status, _, page = https(ca_file, "example.test", "GET", "/?_task=mail&_mbox=INBOX", headers={"Cookie": cookies})
    assert 'id="rcmloginuser"' in page and tag not in page


def test_a_tokens_only_user_logs_in_through_the_idps_page(browser, mail, ca_file):
    user = "hana@sso.test"
    since = mail.check_output("date '+%Y-%m-%d %H:%M:%S'")
    browser.driver.get(url("sso.test"))
    assert browser.driver.current_url.startswith(f"https://{IDP.fqdn}:"), browser.driver.current_url
    browser.wait("#username").send_keys(user)
    browser.wait("#password").send_keys(password(INVENTORY, user_password_name(user)))
    browser.shot("idp-login")
    browser.click("#loginbut")
    deadline = time.monotonic() + 60
    while not browser.driver.current_url.startswith(url("sso.test")) and time.monotonic() < deadline:
        time.sleep(1)
        try:  # the provider asks once whether the platform's mail may use her login: she grants it
            boxes = [b for b in browser.driver.find_elements(By.CSS_SELECTOR, "input[type=checkbox]")
                     if b.is_displayed() and b.is_enabled() and not b.is_selected()]
            for box in boxes:
                box.click()
            buttons = {b.text.strip(): b for b in browser.driver.find_elements(By.CSS_SELECTOR, "button")
                       if b.is_displayed()}
            step = next((name for name in ("Grant access", "Continue") if name in buttons), None)
            if step:
                browser.shot(f"idp-{step.lower().replace(' ', '-')}")
                buttons[step].click()
        except StaleElementReferenceException:
            continue  # the page changed under the loop: look again
    browser.wait("#mailboxlist")
    browser.shot("inbox")
    assert user in browser.driver.page_source
    logins = mail.check_output(f"journalctl -u dovecot --since '{since}' -o cat -g 'imap-login: Login: user=<{user}>'")
    assert "method=XOAUTH2" in logins, logins


# ext's attack on the login form: a fresh session, the form's token, a wrong password, as
# often as asked; it prints what each attempt got back (Roundcube's answer is 401)
WRONG_WEB_LOGINS = r"""
import http.client, re, ssl, sys, urllib.parse
site, count = sys.argv[1], int(sys.argv[2])
ctx = ssl._create_unverified_context()
for i in range(count):
    c = http.client.HTTPSConnection(site, 443, context=ctx, timeout=30)
    c.request("GET", "/", headers={"Host": site})
    r = c.getresponse(); page = r.read().decode()
    cookie = "; ".join(v.split(";")[0] for k, v in r.getheaders() if k.lower() == "set-cookie")
    token = re.search(r'name="_token" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode({"_token": token, "_task": "login", "_action": "login", "_timezone": "UTC",
                                   "_url": "", "_user": "alice@example.test", "_pass": f"wrong {i}"})
    c.request("POST", "/?_task=login", form, {"Host": site, "Cookie": cookie,
                                              "Content-Type": "application/x-www-form-urlencoded"})
    r = c.getresponse(); r.read()
    print(i, r.status)
"""


@pytest.fixture
def jail(mail):
    mail.check_output(f"fail2ban-client unban --all && fail2ban-client restart {JAIL} "
                      "&& fail2ban-client restart mailstack-webmail")
    yield
    mail.run("fail2ban-client unban --all")


def test_a_wrong_password_is_refused_and_counts_toward_the_ban_where_it_comes_from(browser, jail, mail, ext, addr):
    browser.login("example.test", "alice@example.test", "not alice's password")
    assert "Login failed" in browser.wait("#messagestack div").text
    browser.shot("refused")
    assert addr["ext"] not in mail.check_output(f"fail2ban-client get {JAIL} banned")
    failures = INVENTORY.bruteforce["max_failures"]
    said = ext.check_output(f"python3 -c {shlex.quote(WRONG_WEB_LOGINS)} {SITES['example.test']} {failures}")
    assert said.split() == [w for i in range(failures) for w in (str(i), "401")], said
    deadline = time.monotonic() + 20
    while addr["ext"] not in mail.check_output(f"fail2ban-client get {JAIL} banned") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert addr["ext"] in mail.check_output(f"fail2ban-client get {JAIL} banned"), \
        mail.check_output("journalctl -u dovecot --since -2min -o cat -g 'auth'")
    # the webmail host counts them itself too (a webmail host without Dovecot bans on its own)
    def counted() -> tuple[int, str]:
        status = mail.check_output("fail2ban-client status mailstack-webmail")
        return int(re.search(r"Total failed:\s+(\d+)", status).group(1)), status
    deadline = time.monotonic() + 20
    while counted()[0] < failures and time.monotonic() < deadline:
        time.sleep(0.5)
    assert counted()[0] >= failures, counted()[1]
    closed = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 3)"
    for port in (443, 993):
        assert ext.run(f"python3 -c '{closed}' {addr['mail']} {port}").rc != 0, f"banned ext still reaches {port}"
    # ext's guesses did not lock alice out: from her own address she logs in
    browser.login("example.test", "alice@example.test")
    browser.wait("#mailboxlist")


def test_a_held_account_cannot_send_from_webmail(browser, addr, fqdn, ca_file, tag):
    user = "gina@example.test"
    browser.login("example.test", user)
    browser.wait("#mailboxlist")
    browser.compose("example.test")
    try:
        assert account("hold", user).returncode == 0
        next(f for f in browser.driver.find_elements(By.CSS_SELECTOR, "ul.recipient-input input")
             if f.is_displayed()).send_keys("carol@ext.test,")
        browser.driver.find_element(By.CSS_SELECTOR, "#compose-subject").send_keys(tag)
        browser.wait("#composebody").send_keys("From a held account.\n")
        browser.shot("compose")
        browser.click("button.send, a.send, input.send")
        time.sleep(3)
        browser.shot("refused")
        assert imap_find(addr["ext"], fqdn["ext"], ca_file, "carol@ext.test", tag, timeout=15) is None, \
            "a held account's mail left through webmail"
    finally:
        account("release", user, "--drop")


def account(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / ".venv" / "bin" / "mailstack"), "account", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_another_tenants_user_cannot_read_the_message_by_url_nor_log_in_at_its_site(browser, addr, fqdn, ca_file,
                                                                                    tag):
    from_ext(addr, fqdn, ca_file, "alice@example.test", tag)
    browser.login("example.test", "alice@example.test")
    uid = uid_of(browser.inbox_row(tag))
    show = f"/?_task=mail&_action=show&_uid={uid}&_mbox=INBOX"
    assert tag in browser.driver.page_source
    # dave of tenant-b.test, at his own site, asks for the same message by its address
    dave = browser.another("dave")
    try:
        dave.login("tenant-b.test", "dave@tenant-b.test")
        dave.wait("#mailboxlist")
        dave.driver.get(url("tenant-b.test", show))
        dave.shot("alice-message-by-url")
        assert tag not in dave.driver.page_source
        # at example.test's site his address is made one of example.test's: no such user
        dave.login("example.test", "dave@tenant-b.test")
        assert "Login failed" in dave.wait("#messagestack div").text
        dave.shot("refused-at-example")
    finally:
        dave.close()


def test_a_post_without_the_request_token_changes_nothing(browser, addr, fqdn, ca_file, tag):
    from_ext(addr, fqdn, ca_file, "alice@example.test", tag)
    browser.login("example.test", "alice@example.test")
    uid = uid_of(browser.inbox_row(tag))
    cookies = browser.cookie_header()
    form = urllib.parse.urlencode({"_uid": uid, "_mbox": "INBOX", "_remote": "1"})
    status, _, page = https(ca_file, "example.test", "POST", "/?_task=mail&_action=delete", form,
                            {"Cookie": cookies, "Content-Type": "application/x-www-form-urlencoded",
                             "X-Roundcube-Request": "forged"})
    assert status == 403, (status, page[:300])
    sent = urllib.parse.urlencode({"_to": "carol@ext.test", "_subject": f"csrf {tag}", "_message": "forged",
                                   "_from": "1", "_task": "mail", "_action": "send"})
    status, _, page = https(ca_file, "example.test", "POST", "/?_task=mail&_action=send", sent,
                            {"Cookie": cookies, "Content-Type": "application/x-www-form-urlencoded"})
    assert imap_find(addr["mail"], fqdn["mail"], ca_file, "alice@example.test", tag, timeout=0) is not None, \
        "a POST without the token deleted the message"
    assert imap_find(addr["ext"], fqdn["ext"], ca_file, "carol@ext.test", f"csrf {tag}", timeout=10) is None


def test_no_installer_no_code_no_banner_and_strict_headers(ca_file):
    status, headers, page = https(ca_file, "example.test", "GET", "/")
    assert status == 200 and 'id="rcmloginuser"' in page
    assert headers["server"] == "nginx" and "x-powered-by" not in headers
    assert "frame-ancestors 'self'" in headers["content-security-policy"]
    assert headers["strict-transport-security"].startswith("max-age=")
    cookie = headers["set-cookie"]
    assert all(flag in cookie for flag in ("secure", "HttpOnly", "SameSite=Lax")), cookie
    assert "1.6" not in page and "Roundcube Webmail 1" not in page
    for path in ("/installer/", "/installer/index.php", "/config/config.inc.php", "/mailstack.json",
                 "/plugins/mailstack_client_ip/mailstack_client_ip.php", "/program/include/rcmail.php",
                 "/logs/errors.log", "/SQL/sqlite.initial.sql", "/composer.json", "/.htaccess", "/bin/update.sh"):
        assert https(ca_file, "example.test", "GET", path)[0] == 404, path
    # a Host header that is not the name the handshake asked for gets nothing
    status, _, _ = https(ca_file, "example.test", "GET", "/", headers={"Host": SITES["tenant-b.test"]})
    assert status == 421


def test_logins_past_the_rate_get_429_before_reaching_dovecot(ca_file):
    allowed = INVENTORY.webmail["logins_per_minute"]
    answers = [https(ca_file, "tenant-b.test", "POST", "/?_task=login", "_user=x", {
        "Content-Type": "application/x-www-form-urlencoded"})[0] for _ in range(allowed + 8)]
    assert 429 in answers and answers[0] != 429, answers


def test_logs_keep_no_password(mail):
    logs = mail.check_output("for unit in dovecot postfix@- nginx php8.2-fpm; do journalctl --since -30min -o cat "
                             "-u $unit; done; journalctl --since -30min -o cat -t roundcube; "
                             "cat /var/log/nginx/*.log /var/log/roundcube/* 2>/dev/null || true")
    assert "alice@example.test" in logs  # the logins are there,
    assert PASSWORD not in logs and urllib.parse.quote_plus(PASSWORD) not in logs  # their passwords are not
