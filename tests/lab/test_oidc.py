"""OpenID Connect login (lesson 12): tokens from the platform's own IdP (Glewlwyd on the
host with role `idp`) log a user in on IMAP, POP3 and submission, checked by Dovecot at
the IdP on every login. The attacker's side: another user's, a tampered, a forged or a
revoked token; the IdP's well-known default admin password; plain HTTP. The operator's:
a tokens-only domain refuses passwords, the IdP survives a restart, and with the IdP
down logins fail temporarily, never open."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import imaplib
import json
import poplib
import re
import smtplib
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import PASSWORD, NamedContext, tls_context
from labenv import INVENTORY, run_deploy

from deploys.idp import PORT, user_password_name
from mailstack.secrets import password

IDP = INVENTORY.hosts_with("idp")[0]
GLEWLWYD_DB = "/var/lib/dbconfig-common/sqlite3/glewlwyd/glewlwyd"  # Debian's, with sqlite3
CLIENT_ID = INVENTORY.oidc["client_id"]


def idp_request(ca_file: str, path: str, form: dict, client_auth: bool = True) -> tuple[int, dict]:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if client_auth:
        secret = password(INVENTORY, "idp-client")
        headers["Authorization"] = "Basic " + base64.b64encode(f"{CLIENT_ID}:{secret}".encode()).decode()
    connection = http.client.HTTPSConnection(IDP.address, PORT, timeout=30,
                                             context=NamedContext(tls_context(ca_file), IDP.fqdn))
    connection.request("POST", path, urllib.parse.urlencode(form), headers)
    response = connection.getresponse()
    body = response.read()
    return response.status, json.loads(body) if body.startswith(b"{") else {}


def token(ca_file: str, user: str) -> str:
    """An access token with the mail scope, from the password grant (the lab's stand-in
    for a mail app's browser login)."""
    status, answer = idp_request(ca_file, "/api/oidc/token", {
        "grant_type": "password", "username": user, "password": password(INVENTORY, user_password_name(user)),
        "scope": f"openid {INVENTORY.oidc['scope']}"})
    assert status == 200, answer
    return answer["access_token"]


def xoauth2(user: str, access_token: str) -> str:
    return f"user={user}\x01auth=Bearer {access_token}\x01\x01"


def responder(first: str):
    """SASL answers as a mail app gives them: the token first; to the server's error
    details (a JSON challenge, RFC 7628) an empty answer, which ends the exchange."""
    answers = iter([first])
    return lambda challenge=None: next(answers, "")


def imap_token_login(server: str, name: str, ca_file: str, user: str, access_token: str,
                     mechanism: str = "XOAUTH2") -> str:
    """The server's answer to AUTHENTICATE: 'OK', or the error text."""
    answer = responder(xoauth2(user, access_token) if mechanism == "XOAUTH2" else
                       f"n,a={user},\x01auth=Bearer {access_token}\x01\x01")
    with imaplib.IMAP4_SSL(server, 993, ssl_context=NamedContext(tls_context(ca_file), name), timeout=30) as imap:
        try:
            return imap.authenticate(mechanism, lambda challenge: answer(challenge).encode())[0]
        except imaplib.IMAP4.error as err:
            return str(err)


def pop3_token_login(server: str, name: str, ca_file: str, user: str, access_token: str) -> str:
    client = poplib.POP3_SSL(server, 995, context=NamedContext(tls_context(ca_file), name), timeout=30)
    try:
        initial = base64.b64encode(xoauth2(user, access_token).encode()).decode()
        answer = client._shortcmd(f"AUTH XOAUTH2 {initial}").decode()
        if answer.startswith("+ "):  # the server's error details (JSON): an empty line ends the exchange
            answer = client._shortcmd("").decode()
        return answer
    except poplib.error_proto as err:
        return err.args[0].decode()
    finally:
        client.close()


REFUSED = {535, 454}  # 454 where Postfix lost its Dovecot auth connection after a refused token


def smtp_token_login(server: str, name: str, ca_file: str, user: str, access_token: str) -> int:
    with smtplib.SMTP(server, 587, timeout=30, local_hostname="client.lab.test") as client:
        client.starttls(context=NamedContext(tls_context(ca_file), name))
        client.ehlo()
        try:
            return client.auth("XOAUTH2", responder(xoauth2(user, access_token)), initial_response_ok=True)[0]
        except smtplib.SMTPAuthenticationError as err:
            return err.smtp_code


def password_imap_login(server: str, name: str, ca_file: str, user: str) -> bool:
    with imaplib.IMAP4_SSL(server, 993, ssl_context=NamedContext(tls_context(ca_file), name), timeout=30) as imap:
        try:
            imap.login(user, PASSWORD)
            return True
        except imaplib.IMAP4.error:
            return False


@pytest.fixture(scope="module")
def alice_token(ca_file) -> str:
    return token(ca_file, "alice@example.test")


def test_a_token_logs_in_on_imap_pop3_and_submission(addr, fqdn, ca_file, alice_token):
    server, name, user = addr["mail"], fqdn["mail"], "alice@example.test"
    assert imap_token_login(server, name, ca_file, user, alice_token) == "OK"
    assert imap_token_login(server, name, ca_file, user, alice_token, "OAUTHBEARER") == "OK"
    assert pop3_token_login(server, name, ca_file, user, alice_token).startswith("+OK")
    assert smtp_token_login(server, name, ca_file, user, alice_token) == 235


def test_a_token_logs_in_only_the_user_it_was_issued_to(addr, fqdn, ca_file, alice_token):
    server, name = addr["mail"], fqdn["mail"]
    assert imap_token_login(server, name, ca_file, "bob@example.test", alice_token) != "OK"
    assert smtp_token_login(server, name, ca_file, "bob@example.test", alice_token) in REFUSED
    assert pop3_token_login(server, name, ca_file, "bob@example.test", alice_token).startswith("-ERR")


def forged(genuine: str) -> str:
    """A token with the genuine one's header and claims, signed with a key the attacker made."""
    header, claims, _ = genuine.split(".")
    signature = hmac.new(b"the attacker's own key", f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def test_tampered_forged_and_made_up_tokens_are_refused(addr, fqdn, ca_file, alice_token):
    server, name, user = addr["mail"], fqdn["mail"], "alice@example.test"
    tampered = alice_token[:-4] + ("AAAA" if not alice_token.endswith("AAAA") else "BBBB")
    # at once, each on its own connection: Dovecot slows every further failure down more
    with ThreadPoolExecutor(max_workers=4) as pool:
        imap = [pool.submit(imap_token_login, server, name, ca_file, user, bad)
                for bad in (tampered, forged(alice_token), "not-a-token")]
        smtp = pool.submit(smtp_token_login, server, name, ca_file, user, forged(alice_token))
        assert [attempt.result() != "OK" for attempt in imap] == [True, True, True]
        assert smtp.result() in REFUSED


def test_a_revoked_token_stops_working_at_once(addr, fqdn, ca_file):
    server, name, user = addr["mail"], fqdn["mail"], "bob@example.test"
    bobs = token(ca_file, user)
    assert imap_token_login(server, name, ca_file, user, bobs) == "OK"
    status, _ = idp_request(ca_file, "/api/oidc/revoke", {"token": bobs, "token_type_hint": "access_token"})
    assert status == 200
    assert imap_token_login(server, name, ca_file, user, bobs) != "OK"


def test_a_tokens_only_domain_refuses_the_right_password(addr, fqdn, ca_file):
    server, name, user = addr["mail"], fqdn["mail"], "hana@sso.test"
    assert not INVENTORY.domain("sso.test").password_login
    assert not password_imap_login(server, name, ca_file, user)
    with smtplib.SMTP(server, 587, timeout=30) as client:
        client.starttls(context=NamedContext(tls_context(ca_file), name))
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login(user, PASSWORD)
    assert imap_token_login(server, name, ca_file, user, token(ca_file, user)) == "OK"
    assert password_imap_login(server, name, ca_file, "bob@example.test")  # other domains keep passwords


def test_the_idp_keeps_no_default_admin_password_and_speaks_only_tls(addr, fqdn, ca_file):
    for admin_password in ("password", ""):
        connection = http.client.HTTPSConnection(addr["mail"], PORT, timeout=30,
                                                 context=NamedContext(tls_context(ca_file), fqdn["mail"]))
        connection.request("POST", "/api/auth/", json.dumps({"username": "admin", "password": admin_password}),
                           {"Content-Type": "application/json"})
        assert connection.getresponse().status == 401
    plain = http.client.HTTPConnection(addr["mail"], PORT, timeout=10)
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        plain.request("GET", "/api/oidc/.well-known/openid-configuration")
        plain.getresponse()


def test_idp_down_means_a_temporary_failure_and_a_restart_keeps_everything(mail, addr, fqdn, ca_file, alice_token):
    server, name, user = addr["mail"], fqdn["mail"], "alice@example.test"
    mail.check_output("systemctl stop glewlwyd")
    try:
        answer = imap_token_login(server, name, ca_file, user, alice_token)
        assert "UNAVAILABLE" in answer, answer  # "try again later", never a login
        assert smtp_token_login(server, name, ca_file, user, alice_token) in REFUSED
    finally:
        mail.check_output("systemctl start glewlwyd")
    mail.check_output(f"timeout 30 sh -c 'until ss -ltn | grep -q :{PORT}; do sleep 0.5; done'")
    # the same token, issued before the restart, still logs in: tokens and accounts are kept
    assert imap_token_login(server, name, ca_file, user, alice_token) == "OK"


def admin_login(addr, fqdn, ca_file, admin_password: str) -> int:
    connection = http.client.HTTPSConnection(addr["mail"], PORT, timeout=30,
                                             context=NamedContext(tls_context(ca_file), fqdn["mail"]))
    connection.request("POST", "/api/auth/", json.dumps({"username": "admin", "password": admin_password}),
                       {"Content-Type": "application/json"})
    return connection.getresponse().status


def wait_for_idp(mail) -> None:
    mail.check_output(f"timeout 30 sh -c 'until ss -ltn | grep -q :{PORT}; do sleep 0.5; done'")


def packaged(secret: str) -> str:
    """A password as the package's database stores it (PBKDF2-SHA256, 1000 rounds, salt after the digest)."""
    salt = b"mailstacktestslt"
    return base64.b64encode(hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, 1000) + salt).decode()


def test_the_packaged_admin_password_never_answers_not_even_on_a_fresh_database(mail, addr, fqdn, ca_file):
    """The package's database starts with admin/"password" (as on a fresh install): it is
    replaced offline before Glewlwyd starts, so not one request meets it."""
    mail.check_output(f"sqlite3 {GLEWLWYD_DB} \"UPDATE g_user_password SET guw_password = '{packaged('password')}' "
                      "WHERE gu_id = (SELECT gu_id FROM g_user WHERE gu_username = 'admin')\"")
    mail.check_output("systemctl restart glewlwyd")
    wait_for_idp(mail)
    assert admin_login(addr, fqdn, ca_file, "password") == 401
    assert admin_login(addr, fqdn, ca_file, password(INVENTORY, "idp-admin")) == 200


def on_idp(mail, users_kept, extra: str = "") -> str:
    """Run the deploy's setup tool on the IdP host with the deployed state, keeping only
    the users `users_kept` says (a changed inventory, as the next deploy would hand it)."""
    script = ("import json, subprocess; s = json.load(open('/etc/mailstack/idp.json')); "
              f"s['users'] = [u for u in s['users'] if {users_kept}]; "
              "open('/root/idp-test.json', 'w').write(json.dumps(s)); "
              f"{extra}"
              "done = subprocess.run(['/usr/local/sbin/mailstack-idp-setup', '/root/idp-test.json'], "
              "capture_output=True, text=True); print(done.stdout, done.stderr); assert done.returncode == 0")
    try:
        return mail.check_output(f"umask 077; python3 -c \"{script}\"")
    finally:
        mail.run("rm -f /root/idp-test.json")


def refresh(ca_file: str, refresh_token: str) -> int:
    return idp_request(ca_file, "/api/oidc/token", {"grant_type": "refresh_token", "refresh_token": refresh_token})[0]


def test_a_user_the_inventory_drops_loses_its_account_sessions_and_tokens(mail, ca_file):
    user = "bob@example.test"
    status, answer = idp_request(ca_file, "/api/oidc/token", {
        "grant_type": "password", "username": user, "password": password(INVENTORY, user_password_name(user)),
        "scope": f"openid {INVENTORY.oidc['scope']}"})
    assert status == 200 and refresh(ca_file, answer["refresh_token"]) == 200
    try:
        said = on_idp(mail, f"u['username'] != '{user}'")
        assert f"deleted user {user}" in said, said
        assert refresh(ca_file, answer["refresh_token"]) != 200  # the refresh token is dead
    finally:
        on_idp(mail, "True")  # the inventory as it is: bob again, with his first password
    assert token(ca_file, user)


def as_admin(addr, fqdn, ca_file) -> tuple[http.client.HTTPSConnection, str]:
    """A connection to the IdP's API (from this machine) and the admin's session cookie."""
    connection = http.client.HTTPSConnection(addr["mail"], PORT, timeout=30,
                                             context=NamedContext(tls_context(ca_file), fqdn["mail"]))
    connection.request("POST", "/api/auth/", json.dumps({"username": "admin",
                                                         "password": password(INVENTORY, "idp-admin")}),
                       {"Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    return connection, response.getheader("Set-Cookie").split(";")[0]


def admin_set_password(addr, fqdn, ca_file, user: str, new_password: str) -> int:
    """As the IdP's admin: set `user`'s password."""
    connection, cookie = as_admin(addr, fqdn, ca_file)
    connection.request("GET", f"/api/user/{urllib.parse.quote(user)}", headers={"Cookie": cookie})
    account = json.loads(connection.getresponse().read())
    connection.request("PUT", f"/api/user/{urllib.parse.quote(user)}", json.dumps({**account, "password": new_password}),
                       {"Content-Type": "application/json", "Cookie": cookie})
    response = connection.getresponse()
    response.read()
    return response.status


def password_grant(ca_file: str, user: str, secret: str) -> int:
    return idp_request(ca_file, "/api/oidc/token", {"grant_type": "password", "username": user, "password": secret,
                                                    "scope": f"openid {INVENTORY.oidc['scope']}"})[0]


def test_an_account_mailstack_did_not_create_gets_the_inventory_password(mail, addr, fqdn, ca_file):
    """Someone made bob's account before mailstack did (mailstack's record does not list
    it), with a password of their own: the next run gives it the inventory's first password
    and ends its sessions and tokens."""
    user, theirs = "bob@example.test", "chosen by the intruder"
    forget = ("import pathlib; p = pathlib.Path('/var/lib/mailstack/idp-accounts.json'); "
              f"p.write_text(json.dumps([n for n in json.loads(p.read_text()) if n != '{user}'])); ")
    assert admin_set_password(addr, fqdn, ca_file, user, theirs) == 200
    assert password_grant(ca_file, user, theirs) == 200
    said = on_idp(mail, "True", extra=forget)
    assert "mailstack had not created it" in said, said
    assert password_grant(ca_file, user, theirs) != 200
    assert token(ca_file, user)  # the inventory's first password


def test_guessing_passwords_at_the_idp_bans_the_client_from_every_login(mail, ext, addr, fqdn, ca_file):
    """ext tries alice's password at the IdP's login API: after the inventory's number of
    failures it reaches neither the IdP nor any mail login port; this machine still does."""
    guesses = INVENTORY.bruteforce["max_failures"] + 1
    probe = ("python3 -c 'import http.client, json, ssl, sys\n"
             "for i in range(int(sys.argv[1])):\n"
             f"  c = http.client.HTTPSConnection(\"{addr['mail']}\", {PORT}, timeout=5, "
             "context=ssl._create_unverified_context())\n"
             "  c.request(\"POST\", \"/api/auth/\", json.dumps({\"username\": \"alice@example.test\", "
             "\"password\": f\"guess {i}\"}), {\"Content-Type\": \"application/json\"})\n"
             f"  print(c.getresponse().status)' {guesses}")
    try:
        answers = ext.check_output(probe)
        assert "401" in answers and "200" not in answers, answers
        deadline = time.monotonic() + 30
        while addr["ext"] not in mail.check_output("fail2ban-client get mailstack-idp banned"):
            assert time.monotonic() < deadline, "ext was not banned"
            time.sleep(1)
        for port in (PORT, 993):
            assert ext.run(f"timeout 5 bash -c '</dev/tcp/{addr['mail']}/{port}'").rc != 0, port
        assert admin_login(addr, fqdn, ca_file, "wrong") == 401  # never_ban: this machine is still served
    finally:
        mail.run(f"fail2ban-client set mailstack-idp unbanip {addr['ext']}")
    assert ext.run(f"timeout 5 bash -c '</dev/tcp/{addr['mail']}/{PORT}'").rc == 0


def test_the_setup_tool_run_again_unchanged_writes_no_account(mail):
    """The tool reads Glewlwyd's accounts in one listing and writes only those that differ from
    the inventory: run again on the deployed state it writes none (a platform of ten thousand
    accounts that adds one writes one)."""
    said = on_idp(mail, "True")
    assert not any(f"{verb} user" in said for verb in ("added", "updated", "deleted")), said


def test_an_account_made_by_hand_goes_when_the_record_is_removed(mail, addr, fqdn, ca_file):
    """With its record of what it last wrote, the tool asks Glewlwyd only about accounts the
    inventory changed (one, on a platform of ten thousand). Removing the record has every
    account checked: one that someone made by hand, which no inventory lists, is deleted."""
    intruder = "made-by-hand@example.test"
    connection, cookie = as_admin(addr, fqdn, ca_file)
    connection.request("POST", "/api/user/", json.dumps({"username": intruder, "password": "their own",
                                                         "enabled": True, "scope": [INVENTORY.oidc["scope"]]}),
                       {"Content-Type": "application/json", "Cookie": cookie})
    response = connection.getresponse()
    response.read()
    assert response.status == 200 and password_grant(ca_file, intruder, "their own") == 200
    try:
        said = on_idp(mail, "True")
        assert intruder not in said, said  # only what the inventory changed is asked about
        said = on_idp(mail, "True", extra="import os; os.remove('/var/lib/mailstack/idp-applied.json'); ")
        assert f"deleted user {intruder}" in said, said
        assert password_grant(ca_file, intruder, "their own") != 200
        assert not any(f"{verb} user" in said for verb in ("added", "updated")), said  # the others were right
    finally:
        connection.request("DELETE", f"/api/user/{urllib.parse.quote(intruder)}", headers={"Cookie": cookie})
        connection.getresponse().read()


def test_a_deploy_that_could_not_apply_its_files_applies_them_the_next_time(mail, ca_file, tmp_path):
    """Nothing lost: a deploy wrote the accounts a new user needs, then the IdP did not answer
    its accounts tool. The next deploy of the same inventory finds its files current, yet runs
    the tool again (a marker stayed from the failed run), and the account comes."""
    user = "late@example.test"
    lab = Path(INVENTORY.file).read_text()
    grown = tmp_path / "lab.yml"
    hashed = re.search(r"  - address: alice@example.test\n(?:    .*\n)*?    password: (.*)\n", lab).group(1)
    grown.write_text(lab.replace("\nusers:\n", f"\nusers:\n  - address: {user}\n    password: {hashed}\n", 1))
    blocked = ("nft add table inet mailstack-test; nft add chain inet mailstack-test out "
               "'{ type filter hook output priority 0; }'; "
               f"nft add rule inet mailstack-test out tcp dport {PORT} reject with tcp reset")
    mail.check_output(blocked)  # the host's own calls to the IdP's API fail
    try:
        failed = run_deploy(grown)
        assert failed.returncode != 0 and "Apply /etc/mailstack/idp.json" in failed.stdout + failed.stderr
    finally:
        mail.check_output("nft delete table inet mailstack-test")
    try:
        done = run_deploy(grown)
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        assert password_grant(ca_file, user, password(INVENTORY, user_password_name(user))) == 200
        again = run_deploy(grown)  # applied: the marker is gone, nothing left to do
        said = again.stdout + again.stderr
        assert again.returncode == 0 and re.search(r"Grand total\s+\d+\s+-\s", said), said[-2000:]
    finally:
        assert run_deploy().returncode == 0

