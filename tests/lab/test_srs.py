"""SRS (deploys/srs/, postsrsd): mail an alias forwards off the platform leaves with an
envelope sender of the platform's SRS domain, mail delivered here keeps its sender, a
bounce to an SRS address returns to the original sender, and a made-up SRS address is
refused. `ext` plays the original sender's domain (ext.test) and the forwarding target.

Attacker first: an outside client on port 25 that forges or tampers with SRS addresses
to get mail relayed. Then the operator: the forward, the bounce, postsrsd down."""

import re
import smtplib
import time

import dkim
import pytest
from helpers import imap_find, lab_resolver, message, submit

SRS_DOMAIN = "example.test"  # srs.domain left out of the lab inventory: its first platform domain


def return_path(raw: bytes) -> str:
    found = re.search(rb"^Return-Path: <([^>]*)>", raw, re.M)
    assert found, "no Return-Path header"
    return found.group(1).decode()


def rcpt_reply(server: str, recipient: str, sender: str = "") -> tuple[int, bytes]:
    """MAIL FROM and RCPT TO on port 25 as an outside client; the server's RCPT reply."""
    with smtplib.SMTP(server, 25, timeout=30, local_hostname="client.lab.test") as client:
        client.ehlo()
        client.mail(sender)
        return client.rcpt(recipient)


@pytest.fixture(scope="module")
def forwarded(addr, fqdn, ca_file, rspamd_ready):
    """carol@ext.test writes through ext's own server to forward@example.test (which forwards
    to her) and to alice@example.test: the copy that comes back to ext, and alice's copy."""
    tag = f"mailstack-srs-{time.monotonic_ns()}"
    msg = message("carol@ext.test", "forward@example.test, alice@example.test", tag)
    submit(addr["ext"], fqdn["ext"], ca_file, "carol@ext.test", msg)
    came_back = imap_find(addr["ext"], fqdn["ext"], ca_file, "carol@ext.test", tag, timeout=90)
    delivered = imap_find(addr["mail"], fqdn["mail"], ca_file, "alice@example.test", tag, timeout=30)
    assert came_back is not None, "the forward did not reach carol@ext.test"
    assert delivered is not None, "alice's copy was not delivered"
    return came_back, delivered


# --- the attacker: SRS addresses that would make the platform relay ---

def test_a_made_up_srs_address_is_refused_like_an_unknown_user(addr, rspamd_ready):
    code, text = rcpt_reply(addr["mail"], f"SRS0=abcd=AB=victim.example=someone@{SRS_DOMAIN}")
    assert code == 550 and b"unknown" in text.lower(), (code, text)


def test_a_real_srs_address_with_its_hash_changed_is_refused(addr, forwarded):
    genuine = return_path(forwarded[0])
    hash_ = genuine.split("=")[1]
    forged = genuine.replace(f"={hash_}=", f"={hash_[::-1] if hash_[::-1] != hash_ else 'zzzz'}=", 1)
    assert rcpt_reply(addr["mail"], genuine)[0] == 250  # the genuine one is taken (the bounce test below)
    code, text = rcpt_reply(addr["mail"], forged)
    assert code == 550, (forged, code, text)
    # nor can an SRS address of the platform send anywhere else: its target is inside the hash
    redirected = genuine.replace("=ext.test=carol@", "=elsewhere.example=carol@", 1)
    assert rcpt_reply(addr["mail"], redirected)[0] == 550


# --- the operator: the forward, local delivery, the bounce, postsrsd down ---

def test_forwarded_mail_leaves_with_an_srs_sender_that_spf_lets_through(forwarded, addr, nameserver):
    sender = return_path(forwarded[0])
    assert re.fullmatch(rf"SRS0=[^=]+=[^=]+=ext\.test=carol@{re.escape(SRS_DOMAIN)}", sender), sender
    # the receiver checks SPF for the SRS domain: its record names the forwarding host
    spf = [b"".join(r.strings).decode() for r in lab_resolver(nameserver).resolve(SRS_DOMAIN, "TXT")
           if b"".join(r.strings).startswith(b"v=spf1")]
    assert spf and f"ip4:{addr['mail']}" in spf[0].split() and spf[0].endswith("-all"), spf


def arc_chain(raw: bytes, nameserver) -> tuple[str, str]:
    """dkimpy's ARC validation of `raw` (the lab's DNS for the keys): its verdict and why."""
    resolver = lab_resolver(nameserver)

    def txt(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        return b"".join(b"".join(r.strings) for r in resolver.resolve(name.rstrip("."), "TXT"))
    verdict, _, reason = dkim.arc_verify(raw, dnsfunc=txt)
    return verdict.decode() if isinstance(verdict, bytes) else str(verdict), reason


def test_forwarded_mail_carries_a_valid_arc_seal_of_the_platform(forwarded, nameserver):
    """The receiver of a forward can read the platform's judgement of the original (ARC), and
    an independent validator (dkimpy) finds the chain intact after SRS and the way out."""
    seal = re.search(rb"(?m)^ARC-Seal: (.*(?:\r?\n[ \t].*)*)", forwarded[0])
    assert seal and b"i=1" in seal.group(1) and b"d=example.test" in seal.group(1), seal
    assert arc_chain(forwarded[0], nameserver) == ("pass", "success"), arc_chain(forwarded[0], nameserver)


def test_mail_kept_on_the_platform_is_not_sealed(addr, fqdn, ca_file, tag, rspamd_ready):
    """Issue 24: a seal is two RSA signatures, worth it only for a forward; mail for a mailbox
    here leaves no ARC seal of the platform (it was half of rspamd's time per message)."""
    submit(addr["ext"], fqdn["ext"], ca_file, "carol@ext.test", message("carol@ext.test", "alice@example.test", tag))
    raw = imap_find(addr["mail"], fqdn["mail"], ca_file, "alice@example.test", tag, timeout=90)
    assert raw is not None and not re.search(rb"(?m)^ARC-Seal:", raw), raw[:2000]


def test_mail_delivered_on_the_platform_keeps_its_sender(forwarded):
    assert return_path(forwarded[1]) == "carol@ext.test"


def test_own_senders_are_never_rewritten(addr, fqdn, ca_file, tag, rspamd_ready):
    submit(addr["mail"], fqdn["mail"], ca_file, "alice@example.test",
           message("alice@example.test", "carol@ext.test", tag))
    raw = imap_find(addr["ext"], fqdn["ext"], ca_file, "carol@ext.test", tag, timeout=90)
    assert raw is not None and return_path(raw) == "alice@example.test"


def test_a_bounce_to_the_srs_address_reaches_the_original_sender(forwarded, addr, fqdn, ca_file, tag):
    bounce = message("MAILER-DAEMON@ext.test", return_path(forwarded[0]), tag,
                     body="Your forwarded message could not be delivered.\n")
    with smtplib.SMTP(addr["mail"], 25, timeout=30, local_hostname="mx.ext.test") as client:
        client.send_message(bounce, from_addr="")
    raw = imap_find(addr["ext"], fqdn["ext"], ca_file, "carol@ext.test", tag, timeout=90)
    assert raw is not None, "the bounce did not come back to carol@ext.test"


def test_postsrsd_down_means_a_temporary_error_never_lost_mail(mail, addr, fqdn, ca_file, tag, rspamd_ready):
    mail.run("systemctl stop postsrsd")
    try:
        with smtplib.SMTP(addr["mail"], 25, timeout=60, local_hostname="client.lab.test") as client:
            try:
                client.send_message(message("carol@ext.test", "alice@example.test", tag), from_addr="carol@ext.test")
                codes = [250]
            except smtplib.SMTPRecipientsRefused as refused:  # at RCPT
                codes = [code for code, _ in refused.recipients.values()]
            except smtplib.SMTPResponseException as refused:  # at the end of DATA
                codes = [refused.smtp_code]
        assert all(400 <= code < 500 for code in codes), codes
    finally:
        mail.run("systemctl start postsrsd")
    deadline = time.monotonic() + 30
    while not mail.socket("tcp://127.0.0.1:10001").is_listening and time.monotonic() < deadline:
        time.sleep(0.5)
    submit(addr["ext"], fqdn["ext"], ca_file, "carol@ext.test", message("carol@ext.test", "alice@example.test", tag))
    assert imap_find(addr["mail"], fqdn["mail"], ca_file, "alice@example.test", tag, timeout=90) is not None
