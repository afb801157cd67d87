"""Mail in and out of the platform with real clients: SMTP, submission, IMAP, POP3."""

import json
import poplib
import smtplib
import time

import dkim
import pytest
from helpers import PASSWORD, imap_find, lab_resolver, message, named_context, pop3_find, submit
from labenv import ssh

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def from_outside(addr, fqdn, ca_file, msg):
    """carol@ext.test sends through her own provider (ext), which relays to our MX."""
    submit(addr["ext"], fqdn["ext"], ca_file, "carol@ext.test", msg)


def test_inbound_mail_is_read_over_imap_and_pop3(addr, fqdn, ca_file, tag, rspamd_ready):
    from_outside(addr, fqdn, ca_file, message("carol@ext.test", "alice@example.test", tag))
    raw = imap_find(addr["mail"], fqdn["mail"], ca_file, "alice@example.test", tag)
    assert raw is not None, "the message did not arrive"
    assert b"Authentication-Results: mail.lab.test" in raw  # rspamd saw it
    assert b"spf=pass" in raw  # ext's address is in ext.test's SPF record
    raw_pop = pop3_find(addr["mail"], fqdn["mail"], ca_file, "alice@example.test", tag)
    assert raw_pop is not None and tag.encode() in raw_pop


def test_alias_delivers_to_every_target(addr, fqdn, ca_file, tag, rspamd_ready):
    from_outside(addr, fqdn, ca_file, message("carol@ext.test", "info@example.test", tag))
    for user in ("alice@example.test", "bob@example.test"):
        assert imap_find(addr["mail"], fqdn["mail"], ca_file, user, tag) is not None, user


def smtp_from_test_machine(addr):
    client = smtplib.SMTP(addr["mail"], 25, timeout=60, local_hostname="client.lab.test")
    client.ehlo()
    return client


def test_unknown_recipient_is_refused_at_rcpt(addr):
    with smtp_from_test_machine(addr) as client:
        client.mail("carol@ext.test")
        code, text = client.rcpt("nobody@example.test")
    assert code == 550 and b"User unknown" in text


def test_no_relaying_for_unauthenticated_clients(ext, addr):
    script = (
        "import smtplib\n"
        f"c = smtplib.SMTP('{addr['mail']}', 25, timeout=60)\n"
        "c.ehlo('ext.lab.test'); c.mail('carol@ext.test')\n"
        "print(c.rcpt('someone@elsewhere.test'))\n"
    )
    result = ext.run(f"python3 -c \"{script}\"")
    assert result.rc == 0, result.stderr
    assert result.stdout.startswith("(554,") and "Relay access denied" in result.stdout


def test_auth_only_after_starttls_on_587(addr, fqdn, ca_file):
    with smtplib.SMTP(addr["mail"], 587, timeout=30) as client:
        client.ehlo()
        assert "starttls" in client.esmtp_features
        assert "auth" not in client.esmtp_features
        client.starttls(context=named_context(ca_file, fqdn["mail"]))
        client.ehlo()
        assert "PLAIN" in client.esmtp_features["auth"]


@pytest.mark.parametrize("port", [587, 465])
def test_wrong_password_is_refused(addr, fqdn, ca_file, port):
    with pytest.raises(smtplib.SMTPAuthenticationError) as err:
        submit(addr["mail"], fqdn["mail"], ca_file, "alice@example.test",
               message("alice@example.test", "carol@ext.test", "x"), password="wrong", port=port)
    assert err.value.smtp_code == 535


def test_user_cannot_send_as_another_user(addr, fqdn, ca_file, tag):
    # Postfix answers at RCPT (smtpd_delay_reject), for every recipient
    with pytest.raises(smtplib.SMTPRecipientsRefused) as err:
        submit(addr["mail"], fqdn["mail"], ca_file, "alice@example.test",
               message("bob@example.test", "carol@ext.test", tag))
    code, text = err.value.recipients["carol@ext.test"]
    assert code == 553 and b"not owned by user alice@example.test" in text


def test_user_may_send_as_an_alias_that_reaches_them(addr, fqdn, ca_file, tag, rspamd_ready):
    submit(addr["mail"], fqdn["mail"], ca_file, "alice@example.test",
           message("info@example.test", "carol@ext.test", tag), port=465)
    assert imap_find(addr["ext"], fqdn["ext"], ca_file, "carol@ext.test", tag) is not None


def test_submitted_mail_arrives_dkim_signed_and_spf_aligned(addr, fqdn, ca_file, nameserver,
                                                            tag, rspamd_ready):
    submit(addr["mail"], fqdn["mail"], ca_file, "alice@example.test",
           message("alice@example.test", "carol@ext.test", tag))
    raw = imap_find(addr["ext"], fqdn["ext"], ca_file, "carol@ext.test", tag)
    assert raw is not None, "the message did not reach ext"
    assert b"DKIM-Signature:" in raw and b"d=example.test" in raw
    # signed once, after the S/MIME gateway: a signature made before it would be broken by it
    assert raw.count(b"\nDKIM-Signature:") == 1, raw[:3000]
    resolver = lab_resolver(nameserver)

    def txt(name, timeout=5):
        answer = resolver.resolve(name.decode().rstrip("."), "TXT")
        return b"".join(answer[0].strings)

    assert dkim.verify(raw, dnsfunc=txt), "DKIM signature does not verify against lab DNS"
    # SPF and DMARC as a receiver sees them: rspamd evaluates the received message
    # for the connecting address of the platform's MX, against lab DNS.
    verdict = ssh("mail", f"rspamc -h 127.0.0.1:11334 --ip {addr['mail']} --helo {fqdn['mail']} "
                          "--from alice@example.test --rcpt carol@ext.test symbols", raw)
    assert "R_SPF_ALLOW" in verdict, verdict
    assert "R_DKIM_ALLOW (" in verdict and "DMARC_POLICY_ALLOW (" in verdict


def test_pop3_is_a_per_domain_switch(addr, fqdn, ca_file):
    context = named_context(ca_file, fqdn["mail"])
    client = poplib.POP3_SSL(addr["mail"], 995, context=context, timeout=30)
    client.user("dave@tenant-b.test")
    with pytest.raises(poplib.error_proto, match="ERR"):
        client.pass_(PASSWORD)  # tenant-b.test has pop3: false
    client = poplib.POP3_SSL(addr["mail"], 995, context=context, timeout=30)
    client.user("alice@example.test")
    assert client.pass_(PASSWORD).startswith(b"+OK")
    client.quit()


def test_pop3_on_110_needs_starttls_before_login(addr, fqdn, ca_file):
    client = poplib.POP3(addr["mail"], 110, timeout=30)
    with pytest.raises(poplib.error_proto, match="Plaintext authentication disallowed"):
        client.user("alice@example.test")
        client.pass_(PASSWORD)
    client = poplib.POP3(addr["mail"], 110, timeout=30)
    client.stls(context=named_context(ca_file, fqdn["mail"]))
    client.user("alice@example.test")
    assert client.pass_(PASSWORD).startswith(b"+OK")
    client.quit()


def test_pop3_on_110_is_a_per_domain_switch_too(addr, fqdn, ca_file):
    """legacy.test allows POP3 but not on 110; example.test on the same host allows both."""
    context = named_context(ca_file, fqdn["mail"])
    client = poplib.POP3_SSL(addr["mail"], 995, context=context, timeout=30)
    client.user("erin@legacy.test")
    assert client.pass_(PASSWORD).startswith(b"+OK")
    client.quit()
    client = poplib.POP3(addr["mail"], 110, timeout=30)
    client.stls(context=named_context(ca_file, fqdn["mail"]))
    client.user("erin@legacy.test")
    with pytest.raises(poplib.error_proto, match="ERR"):
        client.pass_(PASSWORD)


def test_gtube_is_refused_at_smtp_time(addr, tag, rspamd_ready):
    msg = message("carol@ext.test", "alice@example.test", tag, body=GTUBE + "\n")
    with smtp_from_test_machine(addr) as client, pytest.raises(smtplib.SMTPDataError) as err:
        client.send_message(msg)
    assert err.value.smtp_code == 554


def deferred_at(host, reason: str, at_least: int, timeout: float = 60) -> int:
    """How many messages the host's Postfix holds deferred with `reason`."""
    deadline = time.monotonic() + timeout
    while True:
        queued = [json.loads(line) for line in host.check_output("postqueue -j").splitlines()]
        count = sum(1 for m in queued if m["queue_name"] == "deferred"
                    and reason in m["recipients"][0].get("delay_reason", ""))
        if count >= at_least or time.monotonic() > deadline:
            return count
        time.sleep(1)


def test_filter_down_means_4xx_then_delivery(mail, ext, addr, fqdn, ca_file, tag, rspamd_ready):
    sent = 3
    mail.check_output("systemctl stop rspamd")
    try:
        with smtp_from_test_machine(addr) as client:
            code, _ = client.mail("carol@ext.test")
            if code < 400:
                code, _ = client.rcpt("alice@example.test")
        assert 400 <= code < 500, f"expected a temporary error with rspamd down, got {code}"
        for i in range(sent):
            from_outside(addr, fqdn, ca_file, message("carol@ext.test", "alice@example.test",
                                                      f"{tag}-{i}"))
        # waiting at the sender, not lost: 4.7.1 to MAIL FROM, or (a DANE sender, which needs TLS) 4.3.0
        # to STARTTLS, as Postfix answers each command with a temporary error while its milter is down
        assert deferred_at(ext, "again later", at_least=sent) >= sent
    finally:
        mail.check_output("systemctl start rspamd")
    mail.check_output("for i in $(seq 120); do rspamc -h 127.0.0.1:11334 stat >/dev/null 2>&1 "
                      "&& break; sleep 1; done")
    ext.check_output("postqueue -f")
    arrived = [imap_find(addr["mail"], fqdn["mail"], ca_file, "alice@example.test", f"{tag}-{i}",
                         timeout=120) for i in range(sent)]
    assert sum(raw is not None for raw in arrived) == sent
