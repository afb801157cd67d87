"""Users from a directory (lesson 13): campus.test's users exist only in the LDAP
directory ext plays (slapd); the tests add them there, never to the inventory. The
operator's side: such a user receives mail, logs in and sends; a change in the directory
counts at once; the directory down means "try again later", never a lost message. The
attacker's: another address, a filter wildcard, a directory entry claiming an inventory
domain's address, a LAN host at the directory, the bind account at the password hashes."""

from __future__ import annotations

import imaplib
import poplib
import secrets
import smtplib
import socket
import time

import pytest
from helpers import NamedContext, imap_find, message, submit, tls_context
from labenv import INVENTORY, ssh

from deploys.ldap import bind_password
from mailstack.conventions import DOVECOT_ETC
from mailstack.tls import TRUST

LDAP = INVENTORY.ldap
PEOPLE = f"ou=people,{LDAP['base_dn']}"
DOMAIN = next(d.name for d in INVENTORY.domains if d.user_source == "ldap")
DIRECTORY = INVENTORY.hosts_with("directory")[0]


def add_entry(uid: str, address: str, secret: str) -> None:
    """An inetOrgPerson in the directory, added by root on the directory host (ldapi)."""
    ssh(DIRECTORY.name, f"H=$(slappasswd -s '{secret}') && printf 'dn: uid={uid},{PEOPLE}\\nobjectClass: "
                        f"inetOrgPerson\\nuid: {uid}\\ncn: {uid}\\nsn: {uid}\\nmail: {address}\\nuserPassword: %s\\n' "
                        f"\"$H\" | ldapadd -Q -Y EXTERNAL -H ldapi:/// >/dev/null")


def delete_entry(uid: str) -> None:
    ssh(DIRECTORY.name, f"ldapdelete -Q -Y EXTERNAL -H ldapi:/// 'uid={uid},{PEOPLE}' || true")


@pytest.fixture
def person():
    """(address, password) of a user that exists only in the directory, for this test."""
    uid = f"dir{secrets.token_hex(4)}"
    secret = secrets.token_urlsafe(12)
    add_entry(uid, f"{uid}@{DOMAIN}", secret)
    yield f"{uid}@{DOMAIN}", secret, uid
    delete_entry(uid)


def imap_login(addr, fqdn, ca_file, user: str, secret: str) -> str:
    """'OK', or the server's refusal."""
    with imaplib.IMAP4_SSL(addr["mail"], 993, ssl_context=NamedContext(tls_context(ca_file), fqdn["mail"]),
                           timeout=30) as imap:
        try:
            return imap.login(user, secret)[0]
        except imaplib.IMAP4.error as err:
            return str(err)


def imap_subjects(addr, fqdn, ca_file, user: str, secret: str, tag: str) -> int:
    with imaplib.IMAP4_SSL(addr["mail"], 993, ssl_context=NamedContext(tls_context(ca_file), fqdn["mail"]),
                           timeout=30) as imap:
        imap.login(user, secret)
        imap.select("INBOX", readonly=True)
        return len(imap.search(None, "SUBJECT", f'"{tag}"')[1][0].split())


def rcpt(addr, recipient: str) -> tuple[int, bytes]:
    with smtplib.SMTP(addr["mail"], 25, timeout=60, local_hostname="client.lab.test") as client:
        client.ehlo()
        client.mail("carol@ext.test")
        return client.rcpt(recipient)


def test_a_directory_user_receives_logs_in_everywhere_and_sends_as_itself(person, addr, fqdn, ca_file, tag,
                                                                          rspamd_ready):
    address, secret, _ = person
    submit(addr["ext"], fqdn["ext"], ca_file, "carol@ext.test", message("carol@ext.test", address, tag))
    for _ in range(60):
        if imap_subjects(addr, fqdn, ca_file, address, secret, tag):
            break
        time.sleep(1)
    assert imap_subjects(addr, fqdn, ca_file, address, secret, tag) == 1, "the message did not arrive"
    pop = poplib.POP3_SSL(addr["mail"], 995, context=NamedContext(tls_context(ca_file), fqdn["mail"]), timeout=30)
    try:
        pop.user(address)
        assert pop.pass_(secret).startswith(b"+OK")
        assert pop.stat()[0] >= 1
    finally:
        pop.quit()
    reply = f"{tag}-reply"
    submit(addr["mail"], fqdn["mail"], ca_file, address, message(address, "carol@ext.test", reply), password=secret)
    assert imap_find(addr["ext"], fqdn["ext"], ca_file, "carol@ext.test", reply) is not None
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:  # the address in its entry, and no other
        submit(addr["mail"], fqdn["mail"], ca_file, address, message("alice@example.test", "carol@ext.test", tag),
               password=secret, from_addr="alice@example.test", port=465)
    code, text = refused.value.recipients["carol@ext.test"]
    assert code == 553 and b"not owned by user" in text, text
    assert "AUTHENTICATIONFAILED" in imap_login(addr, fqdn, ca_file, address, secret + "x")


def test_the_directory_decides_at_once_nothing_is_cached(person, addr, fqdn, ca_file):
    address, secret, uid = person
    assert imap_login(addr, fqdn, ca_file, address, secret) == "OK"
    ssh(DIRECTORY.name, f"ldappasswd -Q -Y EXTERNAL -H ldapi:/// -s 'changed {secret}' 'uid={uid},{PEOPLE}'")
    assert "AUTHENTICATIONFAILED" in imap_login(addr, fqdn, ca_file, address, secret)
    assert imap_login(addr, fqdn, ca_file, address, f"changed {secret}") == "OK"
    assert rcpt(addr, address)[0] == 250
    delete_entry(uid)
    assert "AUTHENTICATIONFAILED" in imap_login(addr, fqdn, ca_file, address, f"changed {secret}")
    assert rcpt(addr, address)[0] == 550


def test_filter_wildcards_log_nobody_in(person, addr, fqdn, ca_file):
    address, secret, uid = person
    for login in (f"*@{DOMAIN}", f"{uid[:3]}*@{DOMAIN}", f"*)(mail=*@{DOMAIN}", "*"):
        assert imap_login(addr, fqdn, ca_file, login, secret) != "OK", login
    assert rcpt(addr, f"*@{DOMAIN}")[0] >= 500


def test_a_directory_entry_cannot_claim_an_inventory_domains_address(addr, fqdn, ca_file):
    """Only campus.test's users come from the directory: an entry with an example.test
    address (a directory admin's slip, or worse) neither logs in nor receives there."""
    uid, secret = f"intruder{secrets.token_hex(3)}", secrets.token_urlsafe(12)
    add_entry(uid, f"{uid}@example.test", secret)
    try:
        assert "AUTHENTICATIONFAILED" in imap_login(addr, fqdn, ca_file, f"{uid}@example.test", secret)
        assert rcpt(addr, f"{uid}@example.test")[0] == 550
        with pytest.raises(smtplib.SMTPAuthenticationError):
            submit(addr["mail"], fqdn["mail"], ca_file, f"{uid}@example.test",
                   message(f"{uid}@example.test", "carol@ext.test", uid), password=secret)
    finally:
        delete_entry(uid)


def test_the_bind_account_reads_no_password_hash_and_the_lan_reaches_no_directory(person, addr):
    address, _, _ = person
    found = ssh("mail", f"LDAPTLS_CACERT={TRUST} ldapsearch -LLL -x -H {LDAP['uris'][0]} -D '{LDAP['bind_dn']}' -y /dev/stdin "
                        f"-b '{LDAP['base_dn']}' '(mail={address})' mail userPassword",
                stdin=bind_password(INVENTORY).encode())
    assert f"mail: {address}" in found and "userPassword" not in found
    anonymous = ssh("mail", f"LDAPTLS_CACERT={TRUST} ldapsearch -LLL -x -H {LDAP['uris'][0]} -b '{LDAP['base_dn']}' "
                            "'(mail=*)' mail 2>&1; echo rc=$?")
    assert "mail:" not in anonymous and "dn:" not in anonymous
    assert "rc=0" not in anonymous, anonymous  # refused, over the same TLS the bound search just used
    with socket.socket() as lan:  # the test machine: a host on the lab's LAN, not a mail host
        lan.settimeout(3)
        assert lan.connect_ex((addr["ext"], 636)) != 0


def test_directory_down_means_try_again_later_for_its_users_only(person, mail, addr, fqdn, ca_file):
    address, secret, _ = person
    ssh(DIRECTORY.name, "systemctl stop slapd")
    try:
        answer = imap_login(addr, fqdn, ca_file, address, secret)
        assert "UNAVAILABLE" in answer, answer  # temporary: the client keeps the password and retries
        code, text = rcpt(addr, address)
        assert 400 <= code < 500, (code, text)  # the sender's server keeps the mail and retries
        assert imap_login(addr, fqdn, ca_file, "bob@example.test", "correct horse lab") == "OK"
    finally:
        ssh(DIRECTORY.name, "systemctl start slapd")
    for _ in range(30):
        if imap_login(addr, fqdn, ca_file, address, secret) == "OK":
            break
        time.sleep(1)
    assert imap_login(addr, fqdn, ca_file, address, secret) == "OK"


def pop3_login(addr, fqdn, ca_file, user: str, secret: str) -> str:
    """'+OK …', or the server's refusal."""
    pop = poplib.POP3_SSL(addr["mail"], 995, context=NamedContext(tls_context(ca_file), fqdn["mail"]), timeout=30)
    try:
        pop.user(user)
        return pop.pass_(secret).decode()
    except poplib.error_proto as err:
        return str(err)
    finally:
        pop.close()


def test_a_service_file_dovecot_cannot_read_refuses_the_login_never_skips_the_policy(person, addr, fqdn,
                                                                                     ca_file):
    """The directory said yes to the password; the file that says whether the user's domain
    may use POP3 cannot be read (a broken deploy, a full disk): the login fails for now. It
    never goes on without the service policy (a POP3-less domain's user would get POP3)."""
    address, secret, _ = person
    services = f"{DOVECOT_ETC}/ldap-domains-pop3"
    mode = ssh("mail", f"stat -c %a {services}").strip()
    # Dovecot's auth process (user dovecot) cannot read it; touched, so Dovecot looks again
    # (it keeps a file it read until its modification time changes)
    ssh("mail", f"chmod 000 {services} && touch {services}")
    try:
        answer = pop3_login(addr, fqdn, ca_file, address, secret)
        assert not answer.startswith("+OK"), answer
        assert "[SYS/TEMP]" in answer, answer  # temporary: the client retries, no one is let in
    finally:
        ssh("mail", f"chmod {mode} {services} && touch {services}")
    assert pop3_login(addr, fqdn, ca_file, address, secret).startswith("+OK")
