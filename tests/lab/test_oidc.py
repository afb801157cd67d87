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
import smtplib
import urllib.parse

import pytest
from helpers import PASSWORD, NamedContext, tls_context
from labenv import INVENTORY

from deploys.idp import PORT, user_password_name
from mailstack.secrets import password

IDP = INVENTORY.hosts_with("idp")[0]
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
    for bad in (tampered, forged(alice_token), "not-a-token"):  # (Dovecot slows each failure down more)
        assert imap_token_login(server, name, ca_file, user, bad) != "OK"
    assert smtp_token_login(server, name, ca_file, user, forged(alice_token)) in REFUSED


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
