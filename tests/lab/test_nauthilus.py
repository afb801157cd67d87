"""Nauthilus in front of every password login (issue 10), against a real Nauthilus: good
logins on IMAP, POP3 and submission pass through it; a wrong password is refused; distinct
wrong passwords from one address get that address banned by Nauthilus while this machine
still logs in; a flush lifts the ban; Nauthilus stopped means a temporary failure, never a
login let through.

No package registry ships Nauthilus, so those tests run only against a lab inventory that
pins the operator's artifact and enables it (`mailstack lab with-nauthilus`, docs/lab.md);
elsewhere each is skipped with that reason. Dovecot's side is tested everywhere: the main lab's
Dovecot gets, for one test, the files the deploy renders with Nauthilus on, while no
Nauthilus runs, and must fail every password login temporarily."""

import json
import shutil
import urllib.request

import pytest
from helpers import PASSWORD, login_replies, named_context
from labenv import INVENTORY, ROOT, host, ssh

from deploys import configured, nauthilus
from mailstack import artifacts
from mailstack.inventory import check_text
from mailstack.lab.recipes import with_nauthilus
from mailstack.logins import auth_host, backchannel
from mailstack.plan import plans
from mailstack.secrets import secrets_dir

needs_nauthilus = pytest.mark.skipif(
    not INVENTORY.nauthilus["enabled"],
    reason=f"{INVENTORY.file} does not enable Nauthilus: no package registry ships it, so the lab has no "
           "artifact; pin one (artifacts.nauthilus) and set nauthilus.enabled with an 'auth' host, see docs/lab.md")

USER = "alice@example.test"


def login_host():
    return INVENTORY.hosts_with("mailbox")[0]


def said(ca_file: str, user: str, secret: str) -> dict[str, str]:
    """What IMAP, POP3 and submission on the login host answer to this login, from this machine."""
    return login_replies(login_host().address, login_host().fqdn, ca_file, user, secret)


def api(ca_file: str, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
    """Nauthilus's API as Dovecot reaches it (HTTPS by name, the backchannel credentials)."""
    auth = auth_host(INVENTORY)
    request = urllib.request.Request(f"https://{auth.address}:{INVENTORY.nauthilus['port']}{path}", method=method,
                                     data=json.dumps(body).encode() if body else None,
                                     headers={"Authorization": f"Basic {backchannel(INVENTORY)}",
                                              "Content-Type": "application/json"})
    try:  # the address is dialled, the certificate checked for the auth host's name
        with urllib.request.urlopen(request, context=named_context(ca_file, auth.fqdn), timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@needs_nauthilus
def test_logins_pass_through_nauthilus(ca_file):
    auth = host(auth_host(INVENTORY).name)
    since = auth.check_output("date +%s")
    assert said(ca_file, USER, PASSWORD) == {"imap": "OK", "pop3": "+OK Logged in.", "smtp": "235"}
    log = auth.check_output(f"journalctl -u mailstack-nauthilus --since @{since} -o cat")
    for protocol in nauthilus.PROTOCOLS:
        assert protocol in log and USER in log, f"Nauthilus did not see the {protocol} login"


@needs_nauthilus
def test_a_wrong_password_is_refused(ca_file):
    found = said(ca_file, USER, "not the password")
    assert "AUTHENTICATIONFAILED" in found["imap"] and "-ERR" in found["pop3"] and found["smtp"].startswith("535"), found


@needs_nauthilus
def test_distinct_failures_ban_one_address_and_a_flush_lifts_it(ext, mail, ca_file):
    """From ext, distinct wrong passwords: Nauthilus bans ext (fail2ban's own ban is lifted
    so that Nauthilus's can be seen); this machine, on the never-ban list, still logs in."""
    ext_address, failures = INVENTORY.host("ext").address, INVENTORY.bruteforce["max_failures"]
    server = login_host().address
    for i in range(failures + 2):
        ext.run(f"python3 -c 'import imaplib, ssl; c = ssl._create_unverified_context(); "
                f"imaplib.IMAP4_SSL(\"{server}\", 993, ssl_context=c).login(\"{USER}\", \"wrong {i}\")'")
    mail.run(f"fail2ban-client unban {ext_address}")
    status, listing = api(ca_file, "GET", "/api/v1/bruteforce/list")
    assert status == 200 and ext_address.encode() in listing, listing
    assert said(ca_file, USER, PASSWORD)["imap"] == "OK", "another address must still log in"
    right = ext.run(f"python3 -c 'import imaplib, ssl; c = ssl._create_unverified_context(); "
                    f"imaplib.IMAP4_SSL(\"{server}\", 993, ssl_context=c).login(\"{USER}\", \"{PASSWORD}\")'")
    assert right.rc != 0, "a banned address must not log in, even with the right password"
    for bucket in ("mailstack_ipv4",):
        assert api(ca_file, "DELETE", "/api/v1/bruteforce/flush", {"ip_address": ext_address,
                                                                    "rule_name": bucket})[0] == 200
    again = ext.run(f"python3 -c 'import imaplib, ssl; c = ssl._create_unverified_context(); "
                    f"imaplib.IMAP4_SSL(\"{server}\", 993, ssl_context=c).login(\"{USER}\", \"{PASSWORD}\")'")
    assert again.rc == 0, again.stderr


@needs_nauthilus
def test_nauthilus_down_means_try_again_later(ca_file):
    auth = host(auth_host(INVENTORY).name)
    auth.run("systemctl stop mailstack-nauthilus")
    try:
        found = said(ca_file, USER, PASSWORD)
    finally:
        auth.run("systemctl start mailstack-nauthilus")
    assert "UNAVAILABLE" in found["imap"] and "SYS/TEMP" in found["pop3"], found
    assert found["smtp"][:3] in {"454", "535"}, found  # never 235


@pytest.mark.skipif(INVENTORY.nauthilus["enabled"] or INVENTORY.file != str(ROOT / "inventories" / "lab.yml"),
                    reason="Dovecot's side is tried on the main lab, which has no Nauthilus")
def test_dovecot_never_lets_a_login_through_when_nauthilus_cannot_answer(mail, ca_file, tmp_path, monkeypatch):
    """The deploy's own Lua passdb and passdb order on the real Dovecot; nothing listens
    where Nauthilus would: the script posts, fails to connect, and every login fails
    temporarily. Without the gate the same logins would succeed."""
    monkeypatch.setattr(artifacts, "CACHE", tmp_path / "cache")
    program = tmp_path / "nauthilus"
    program.write_bytes(b"only hashed: this test needs no Nauthilus program\n")
    secrets = tmp_path / "secrets"  # a copy: the variant's other names must not reissue the lab's certificates
    shutil.copytree(secrets_dir(INVENTORY), secrets / INVENTORY.platform["name"])
    text = with_nauthilus((ROOT / "inventories" / "lab.yml").read_text(), program).replace(
        "platform:\n", f"platform:\n  secrets_dir: '{secrets}'\n", 1)
    plan = plans(check_text(text, "lab-with-nauthilus.yml"))["mail"]
    files = {f.path: f for c in plan.components for s in configured(c, plan) for f in s.files}
    conf = "/etc/dovecot/dovecot.conf"
    assert {"  skip = unauthenticated", "  result_failure = return-fail"} <= set(files[conf].lines)
    since = mail.check_output("date +%s")
    try:
        for path in ("/etc/dovecot/mailstack/nauthilus-passdb.conf", "/etc/dovecot/mailstack/nauthilus.lua"):
            ssh("mail", f"cat > {path} && chgrp dovecot {path} && chmod 640 {path}", files[path].content)
        ssh("mail", f"cp {conf} /root/dovecot.conf.saved && sed -i 's/^  skip = never$/  skip = unauthenticated/; "
                    f"s/^  result_failure = continue$/  result_failure = return-fail/' {conf} && "
                    "doveconf -n >/dev/null && systemctl reload dovecot && sleep 1")
        found = said(ca_file, USER, PASSWORD)
    finally:
        # Postfix's idle smtpd processes keep their connection to the auth server a reload
        # replaced; the next SASL login on each would fail once: they are recycled too
        ssh("mail", f"mv /root/dovecot.conf.saved {conf}; rm -f /etc/dovecot/mailstack/nauthilus-passdb.conf "
                    "/etc/dovecot/mailstack/nauthilus.lua; systemctl reload dovecot; postfix reload; sleep 1")
    assert "UNAVAILABLE" in found["imap"] and "SYS/TEMP" in found["pop3"], found
    assert found["smtp"] != "235", found
    log = mail.check_output(f"journalctl -u dovecot --since @{since} -o cat")
    assert "passdb-lua: nauthilus answered" in log, "the deploy's Lua passdb did not run"
    assert said(ca_file, USER, PASSWORD)["imap"] == "OK", "restored: logins work again"
