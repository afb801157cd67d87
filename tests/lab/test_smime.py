"""The S/MIME gateway in the platform: real submission, real partners, real openssl."""

import json
import re
import smtplib
import subprocess
import time
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from helpers import Sending, imap_find, message, named_context, submit
from labenv import INVENTORY, run_deploy

from deploys.clamav import EICAR
from mailstack.secrets import domain_certificate, lab_ca


def cms(*args: str, data: bytes) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", "cms", *args], input=data, capture_output=True, timeout=60)


def header_values(raw: bytes, name: str) -> list[str]:
    return [m.decode() for m in re.findall(rb"(?mi)^" + name.encode() + rb": (.*?)\r?$", raw)]


@pytest.fixture(scope="module")
def gateway_up(mail):
    assert mail.service("mailstack-smime").is_running


def test_outbound_to_partner_is_encrypted_and_signed(addr, fqdn, ca_file, tag, gateway_up, rspamd_ready,
                                                     tmp_path):
    submit(addr["mail"], fqdn["mail"], ca_file, "alice@example.test",
           message("alice@example.test", "carol@ext.test", tag, body=f"Confidential {tag}\n"))
    raw = imap_find(addr["ext"], fqdn["ext"], ca_file, "carol@ext.test", tag)
    assert raw is not None, "nothing reached ext"
    assert f"Confidential {tag}".encode() not in raw  # not in clear on the way
    assert b"application/pkcs7-mime" in raw and b"enveloped-data" in raw
    partner_cert, partner_key = domain_certificate(INVENTORY, "ext.test")
    opened = cms("-decrypt", "-recip", str(partner_cert), "-inkey", str(partner_key), data=raw)
    assert opened.returncode == 0, opened.stderr
    signer = tmp_path / "signer.pem"
    verified = cms("-verify", "-CAfile", str(lab_ca(INVENTORY)[0]), "-signer", str(signer), data=opened.stdout)
    assert verified.returncode == 0, verified.stderr
    assert f"Confidential {tag}".encode() in verified.stdout
    tenant_cert = domain_certificate(INVENTORY, "example.test")[0].read_bytes()
    assert signer.read_bytes().strip() in tenant_cert  # signed with tenant A's certificate


def test_mail_between_tenants_takes_exactly_one_gateway_pass(mail, addr, fqdn, ca_file, tag, gateway_up,
                                                             rspamd_ready):
    submit(addr["mail"], fqdn["mail"], ca_file, "alice@example.test",
           message("alice@example.test", "dave@tenant-b.test", tag, body=f"Between tenants {tag}\n"))
    raw = imap_find(addr["mail"], fqdn["mail"], ca_file, "dave@tenant-b.test", tag)
    assert raw is not None
    assert f"Between tenants {tag}".encode() in raw  # stored readable for the user
    assert header_values(raw, "X-Mailstack-SMIME") == [
        "decrypted=no; signature=verified; signer=example.test"]
    passes = header_values(raw, "X-Mailstack-SMIME-Pass")
    assert len(passes) == 1, passes
    pass_id = passes[0].split()[-1]
    log = mail.check_output("journalctl -u mailstack-smime --no-pager -o cat")
    assert len(re.findall(rf"pass={pass_id} .* done", log)) == 1
    assert len(re.findall(r"X-Mailstack-SMIME-Pass", raw.decode(errors="replace"))) == 1


def test_partner_mail_encrypted_to_tenant_is_read_decrypted(addr, fqdn, ca_file, tag, gateway_up, rspamd_ready):
    partner_cert, partner_key = domain_certificate(INVENTORY, "ext.test")
    tenant_cert = domain_certificate(INVENTORY, "example.test")[0]
    entity = f"Content-Type: text/plain; charset=utf-8\n\nFrom the partner {tag}\n".encode()
    signed = cms("-sign", "-signer", str(partner_cert), "-inkey", str(partner_key), "-md", "sha256",
                 data=entity).stdout
    encrypted = cms("-encrypt", "-aes-256-cbc", "-from", "carol@ext.test", "-to", "alice@example.test",
                    "-subject", tag, str(tenant_cert), data=signed).stdout
    assert encrypted and f"From the partner {tag}".encode() not in encrypted
    forged = (b"X-Mailstack-SMIME: decrypted=yes; signature=verified; signer=bank.test\n"
              + f"Date: {format_datetime(datetime.now(UTC))}\n".encode()
              + f"Message-ID: <{tag}@ext.test>\n".encode() + encrypted)
    with smtplib.SMTP(addr["ext"], 587, timeout=30) as client:  # carol's own provider
        client.starttls(context=named_context(ca_file, fqdn["ext"]))
        client.login("carol@ext.test", "correct horse lab")
        client.sendmail("carol@ext.test", ["alice@example.test"], forged.replace(b"\n", b"\r\n"))
    raw = imap_find(addr["mail"], fqdn["mail"], ca_file, "alice@example.test", tag)
    assert raw is not None
    assert f"From the partner {tag}".encode() in raw
    assert header_values(raw, "X-Mailstack-SMIME") == ["decrypted=yes; signature=verified; signer=ext.test"]


def test_required_encryption_without_certificate_is_bounced_not_sent(mail, addr, fqdn, ca_file, tag,
                                                                      gateway_up):
    submit(addr["mail"], fqdn["mail"], ca_file, "alice@example.test",
           message("alice@example.test", "someone@nocert.test", tag))
    bounce = imap_find(addr["mail"], fqdn["mail"], ca_file, "alice@example.test", tag, timeout=90,
                       criteria="TEXT")
    assert bounce is not None, "the sender was not told"
    assert b"Undelivered Mail Returned to Sender" in bounce
    assert b"encryption to nocert.test is required but no certificate" in b" ".join(bounce.split())
    log = mail.check_output("journalctl -u postfix@- --no-pager -o cat")
    assert not re.search(r"to=<someone@nocert\.test>.*status=sent", log)


@pytest.mark.parametrize("port", [10025, 10028])
def test_the_hop_to_the_gateway_is_tls_only(mail, addr, port):
    # from the platform host itself: the firewall keeps everyone else away from the gateway
    probe = (f"import smtplib; c = smtplib.SMTP('{addr['mail']}', {port}, timeout=30); c.ehlo('mail.lab.test'); "
             "print(c.mail('alice@example.test'))")
    answer = mail.check_output(f'python3 -c "{probe}"')
    assert answer.startswith("(530,") and "STARTTLS" in answer
    log = mail.check_output("journalctl SYSLOG_IDENTIFIER=postfix/smime/smtp --no-pager -o cat")
    assert "Verified TLS connection established to mail.lab.test" in log


def test_gateway_down_means_mail_waits_then_goes(mail, addr, fqdn, ca_file, tag, gateway_up, rspamd_ready):
    mail.check_output("systemctl stop mailstack-smime")
    try:
        submit(addr["mail"], fqdn["mail"], ca_file, "alice@example.test",
               message("alice@example.test", "dave@tenant-b.test", tag))
        waiting = mail.check_output(
            "for i in $(seq 60); do postqueue -j | grep -q 'dave@tenant-b.test' && break; sleep 1; done;"
            " postqueue -j")
        assert "dave@tenant-b.test" in waiting and "10028" in waiting  # the gateway's submission listener
        assert imap_find(addr["mail"], fqdn["mail"], ca_file, "dave@tenant-b.test", tag, timeout=3) is None
    finally:
        mail.check_output("systemctl start mailstack-smime")
    mail.check_output("for i in $(seq 30); do ss -ltn | grep -q ':10025 ' && break; sleep 1; done; postqueue -f")
    assert imap_find(addr["mail"], fqdn["mail"], ca_file, "dave@tenant-b.test", tag, timeout=120) is not None


def held_with(mail, tag: str) -> list[str]:
    """Queue ids of the messages in mail's hold queue that carry `tag`."""
    held = [m["queue_id"] for m in map(json.loads, mail.check_output("postqueue -j").splitlines())
            if m["queue_name"] == "hold"]
    return [q for q in held if tag in mail.check_output(f"postcat -bhq {q} || true")]


def folded(message: bytes) -> bytes:
    """The message's Content-Type in another spelling a MIME parser reads the same: the name in
    lower case, the value folded over lines."""
    return re.sub(rb"(?m)^Content-Type: (.*)$", lambda m: b"content-type:\n\t" + m.group(1).replace(b"; ", b";\n\t"),
                  message, count=1)


@pytest.mark.parametrize("spelling", ["as openssl writes it", "lower case, folded"])
def test_malware_encrypted_to_a_tenant_is_scanned_once_opened_and_held(mail, addr, fqdn, ca_file, tag, gateway_up,
                                                                       rspamd_ready, spelling):
    """The attacker encrypts EICAR to example.test's public certificate (it rides on every
    signed mail) and sends it from outside, where rspamd sees only ciphertext. Once the
    gateway opened it, rspamd scans it as inbound mail: ClamAV finds it, and as the sender's
    session is over (a reject would bounce to a forgeable sender) it waits in the hold queue,
    never in alice's INBOX. Only S/MIME content takes the gateway: another spelling of its
    Content-Type does not walk around it."""
    tenant_cert = domain_certificate(INVENTORY, "example.test")[0]
    entity = f"Content-Type: text/plain; charset=us-ascii\n\n{tag}\n{EICAR}\n".encode()
    encrypted = cms("-encrypt", "-aes-256-cbc", "-from", "carol@ext.test", "-to", "alice@example.test",
                    "-subject", tag, str(tenant_cert), data=entity).stdout
    assert encrypted and EICAR.encode() not in encrypted
    if spelling != "as openssl writes it":
        encrypted = folded(encrypted)
        assert re.search(rb"(?m)^content-type:\n\tapplication/(x-)?pkcs7-mime;\n", encrypted), encrypted[:400]
    raw = (f"Date: {format_datetime(datetime.now(UTC))}\nMessage-ID: <{tag}@ext.test>\n").encode() + encrypted
    with smtplib.SMTP(addr["ext"], 587, timeout=30) as client:  # carol's own provider
        client.starttls(context=named_context(ca_file, fqdn["ext"]))
        client.login("carol@ext.test", "correct horse lab")
        client.sendmail("carol@ext.test", ["alice@example.test"], raw.replace(b"\n", b"\r\n"))
    held = []
    try:
        for _ in range(60):
            held = held_with(mail, tag)
            if held:
                break
            time.sleep(1)
        assert held, "the decrypted virus was not held"
        assert "held" in mail.check_output(f"grep -h '<{tag}@ext.test>' /var/log/rspamd/rspamd.log")
        assert imap_find(addr["mail"], fqdn["mail"], ca_file, "alice@example.test", tag, timeout=5) is None
        assert imap_find(addr["ext"], fqdn["ext"], ca_file, "carol@ext.test", tag, criteria="TEXT",
                         timeout=5) is None, "the sender was sent a bounce"
    finally:
        for queue_id in held:
            mail.check_output(f"postsuper -d {queue_id} hold")


def test_plain_mail_for_a_tenant_takes_no_gateway_pass_and_gets_its_verdict(mail, addr, fqdn, ca_file, tag,
                                                                            gateway_up, rspamd_ready):
    """Issue 24: only S/MIME content pays the hop through the gateway. Plain mail from outside
    for an S/MIME tenant goes straight on, with the verdict the gateway would write (rspamd
    writes it, once), and arrives even while the gateway is down."""
    mail.check_output("systemctl stop mailstack-smime")
    try:
        submit(addr["ext"], fqdn["ext"], ca_file, "carol@ext.test", message("carol@ext.test", "alice@example.test", tag))
        raw = imap_find(addr["mail"], fqdn["mail"], ca_file, "alice@example.test", tag, timeout=60)
    finally:
        mail.check_output("systemctl start mailstack-smime")
    assert raw is not None, "plain mail waited for the gateway"
    assert header_values(raw, "X-Mailstack-SMIME") == ["decrypted=no; signature=none"]
    assert not header_values(raw, "X-Mailstack-SMIME-Pass")


def partner_signed(tag: str, text: str) -> bytes:
    """A message carol's S/MIME client signs (multipart/signed, ext.test's certificate)."""
    cert, key = domain_certificate(INVENTORY, "ext.test")
    entity = f"Content-Type: text/plain; charset=utf-8\n\n{text}\n".encode()
    signed = cms("-sign", "-signer", str(cert), "-inkey", str(key), "-md", "sha256", "-from", "carol@ext.test",
                 "-to", "alice@example.test", "-subject", tag, data=entity).stdout
    assert signed.count(b"multipart/signed") == 1
    return (f"Date: {format_datetime(datetime.now(UTC))}\nMessage-ID: <{tag}@ext.test>\n").encode() + signed


def send_as_carol(addr, fqdn, ca_file, data: bytes, recipient: str = "alice@example.test") -> None:
    with smtplib.SMTP(addr["ext"], 587, timeout=30) as client:  # carol's own provider
        client.starttls(context=named_context(ca_file, fqdn["ext"]))
        client.login("carol@ext.test", "correct horse lab")
        client.sendmail("carol@ext.test", [recipient], data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))


def test_signed_mail_is_checked_in_the_first_pass_and_a_forged_or_tampered_one_is_not_believed(
        mail, addr, fqdn, ca_file, tag, gateway_up, rspamd_ready):
    """Issue 24: signed mail from outside pays no gateway pass; rspamd has its signature checked
    (smimegw.verifier) and writes the verdict. The attacker's part: a verdict header of his own
    never arrives, and a signed message changed on the way is marked INVALID. Sent while the
    gateway is down: only the first pass can have decided."""
    genuine, changed = f"{tag}-genuine", f"{tag}-changed"
    forged = b"X-Mailstack-SMIME: decrypted=no; signature=verified; signer=bank.test\n"
    tampered = partner_signed(changed, f"Pay 10 EUR {tag}").replace(b"Pay 10 EUR", b"Pay 9000 EUR")
    mail.check_output("systemctl stop mailstack-smime")
    try:
        send_as_carol(addr, fqdn, ca_file, forged + partner_signed(genuine, f"Signed by the partner {tag}"))
        send_as_carol(addr, fqdn, ca_file, forged + tampered)
        kept = imap_find(addr["mail"], fqdn["mail"], ca_file, "alice@example.test", genuine, timeout=60)
        broken = imap_find(addr["mail"], fqdn["mail"], ca_file, "alice@example.test", changed, timeout=30)
    finally:
        mail.check_output("systemctl start mailstack-smime")
    assert kept is not None and broken is not None, "signed mail waited for the gateway"
    assert header_values(kept, "X-Mailstack-SMIME") == ["decrypted=no; signature=verified; signer=ext.test"]
    assert b"Pay 9000 EUR" in broken
    assert [v.split(";")[:2] for v in header_values(broken, "X-Mailstack-SMIME")] == [
        ["decrypted=no", " signature=INVALID"]]
    assert not header_values(kept, "X-Mailstack-SMIME-Pass") and not header_values(broken, "X-Mailstack-SMIME-Pass")


def test_signed_mail_over_the_gateways_mime_limits_is_refused_in_the_first_pass(addr, fqdn, ca_file, tag,
                                                                               rspamd_ready):
    """The attacker's wide structure: a signed message of more parts than the gateway processes
    (smime.max_mime_parts, 500) is refused while it is offered (the check answers 422, rspamd
    rejects), as the gateway would refuse it; it never reaches alice unchecked, and carol's
    provider tells her why. (Deep nesting ClamAV refuses first: its recursion limit.)"""
    cert, key = domain_certificate(INVENTORY, "ext.test")
    parts = "".join(f"--wide\nContent-Type: text/plain\n\npart {n}\n" for n in range(520))
    entity = f'Content-Type: multipart/mixed; boundary="wide"\n\n{parts}--wide--\n'
    signed = cms("-sign", "-signer", str(cert), "-inkey", str(key), "-md", "sha256", "-from", "carol@ext.test",
                 "-to", "alice@example.test", "-subject", tag, data=entity.encode()).stdout
    send_as_carol(addr, fqdn, ca_file, signed)
    bounce = imap_find(addr["ext"], fqdn["ext"], ca_file, "carol@ext.test", tag, timeout=90, criteria="TEXT")
    assert bounce is not None, "carol was not told"
    said = re.sub(rb"\s+", b" ", bounce)  # the DSN folds the server's words
    assert b"554 5.7.1 more than 500 MIME parts; the S/MIME gateway does not process it" in said
    assert imap_find(addr["mail"], fqdn["mail"], ca_file, "alice@example.test", tag, timeout=3) is None


def test_no_signature_check_means_signed_mail_waits_then_goes(mail, ext, addr, fqdn, ca_file, tag, rspamd_ready):
    """Nothing lost, nothing unchecked: while the first-pass check does not answer, signed mail
    gets a temporary error (it waits in the sender's queue); once it answers, the mail arrives
    with its verdict. Plain mail goes on meanwhile."""
    plain, signed = f"{tag}-plain", f"{tag}-signed"
    mail.check_output("systemctl stop mailstack-smime-verify")
    try:
        send_as_carol(addr, fqdn, ca_file, partner_signed(signed, f"Signed while the check is down {tag}"))
        submit(addr["ext"], fqdn["ext"], ca_file, "carol@ext.test", message("carol@ext.test", "alice@example.test",
                                                                            plain))
        assert imap_find(addr["mail"], fqdn["mail"], ca_file, "alice@example.test", plain, timeout=60) is not None
        waiting = ext.check_output(
            "for i in $(seq 60); do postqueue -j | grep -q 'signature check unavailable' && break; sleep 1; done;"
            " postqueue -j")
        assert "alice@example.test" in waiting and "S/MIME signature check unavailable" in waiting
        assert imap_find(addr["mail"], fqdn["mail"], ca_file, "alice@example.test", signed, timeout=3) is None
    finally:
        mail.check_output("systemctl start mailstack-smime-verify")
    mail.check_output("for i in $(seq 30); do ss -ltn | grep -q '127.0.0.1:10030 ' && break; sleep 1; done")
    ext.check_output("postqueue -f")
    raw = imap_find(addr["mail"], fqdn["mail"], ca_file, "alice@example.test", signed, timeout=120)
    assert raw is not None
    assert header_values(raw, "X-Mailstack-SMIME") == ["decrypted=no; signature=verified; signer=ext.test"]


def test_a_renewed_tenant_certificate_is_taken_with_no_mail_lost_or_mis_signed(mail, addr, fqdn, ca_file, tag,
                                                                             gateway_up, rspamd_ready, tmp_path):
    """Issue 27: the lab CA renews example.test's certificate (same key, as a renewal does) and
    a deploy hands it to the gateway while alice keeps writing to the partner. Every message
    reaches ext, and each opens and verifies, signed with the old certificate or the new, never
    with a certificate and a key that do not belong together; after the deploy, with the new."""
    cert_path = domain_certificate(INVENTORY, "example.test")[0]
    old = cert_path.read_bytes()
    with Sending(addr, fqdn, ca_file, tag) as sending:
        cert_path.unlink()  # the next deploy has the lab CA issue it again
        done = run_deploy()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    new = cert_path.read_bytes()
    assert new != old and mail.check_output("cat /etc/mailstack-smime/tenants/example.test.pem") == new.decode().strip()
    sending.send()  # after the deploy
    partner_cert, partner_key = domain_certificate(INVENTORY, "ext.test")
    signers = []
    for subject, _ in sending.sent:
        raw = imap_find(addr["ext"], fqdn["ext"], ca_file, "carol@ext.test", subject, timeout=20)
        if raw is None:  # the gateway restarted under it: the mail waits at Postfix (4xx), sent on now
            mail.check_output("postqueue -f")
            raw = imap_find(addr["ext"], fqdn["ext"], ca_file, "carol@ext.test", subject)
        assert raw is not None, f"{subject} was lost"
        opened = cms("-decrypt", "-recip", str(partner_cert), "-inkey", str(partner_key), data=raw)
        assert opened.returncode == 0, opened.stderr
        signer = tmp_path / f"{subject}.pem"
        verified = cms("-verify", "-CAfile", str(lab_ca(INVENTORY)[0]), "-signer", str(signer), data=opened.stdout)
        assert verified.returncode == 0 and f"Signed {subject}".encode() in verified.stdout, verified.stderr
        leaf = signer.read_bytes().strip()
        assert leaf in old or leaf in new, f"{subject}: signed with neither certificate"
        signers.append("new" if leaf in new else "old")
    # the change came while mail flowed, and once made it holds (a message that waited in the
    # queue, for the gateway's restart or an earlier test's, is signed when it passes: then, new)
    assert "old" in signers and signers[-1] == "new", signers
