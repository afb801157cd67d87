"""PeekabooAV through rspamd with real mail and a real sender: a bad attachment is refused
(5xx, reason given), a harmless one delivered; for a tenant that does not wait, the first
attempt gets 4xx and the sender's retry meets the cached verdict; with Peekaboo down mail
waits at the sender and arrives once it is back; cached verdicts decide without it."""

import smtplib
import uuid

import pytest
from helpers import imap_find, message, submit
from test_mail_flow import deferred_at, from_outside, smtp_from_test_machine

WAITS = "alice@example.test"  # example.test waits for the verdict in the session (default)
NO_WAIT = "dave@tenant-b.test"  # tenant-b.test: inbound.attachment_wait 0


def with_attachment(recipient: str, tag: str, filename: str, data: bytes):
    msg = message("carol@ext.test", recipient, tag)
    msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=filename)
    return msg


def script(tag: str) -> bytes:
    """A harmless file Peekaboo's ruleset rates bad for its extension (.js), new each time."""
    return f"// {tag}\nvar greeting = 'hello';\n".encode()


def document(tag: str) -> bytes:
    return f"%PDF-1.4 harmless {tag}\n".encode()


def smtp_result(msg) -> tuple[int, bytes]:
    with smtp_from_test_machine(ADDR) as client:
        try:
            client.send_message(msg)
        except smtplib.SMTPDataError as err:
            return err.smtp_code, err.smtp_error
    return 250, b""


@pytest.fixture(scope="module", autouse=True)
def peekaboo_ready(mail, addr, rspamd_ready):
    global ADDR
    ADDR = addr
    mail.check_output("systemctl start mailstack-peekaboo; for i in $(seq 30); do "
                      "ss -ltn | grep -q '127.0.0.1:8100 ' && break; sleep 1; done")


def test_bad_attachment_is_refused_in_the_first_session(tag):
    code, reply = smtp_result(with_attachment(WAITS, tag, "invoice.js", script(tag)))
    assert code == 554 and b"attachment refused: invoice.js" in reply, (code, reply)


def deferrals(ext, tag: str) -> int:
    """How often ext's Postfix had to retry the message with Message-ID <tag@lab.test>."""
    log = ext.check_output("journalctl -u postfix@- --no-pager -o cat")
    queue_ids = {line.split(":")[0].split()[-1] for line in log.splitlines() if f"message-id=<{tag}@lab.test>" in line}
    return sum(1 for line in log.splitlines() for qid in queue_ids if f"{qid}: to=" in line and "status=deferred" in line)


def test_harmless_attachment_is_delivered_in_the_first_session(ext, addr, fqdn, ca_file, tag):
    from_outside(addr, fqdn, ca_file, with_attachment(WAITS, tag, "report.pdf", document(tag)))
    assert imap_find(addr["mail"], fqdn["mail"], ca_file, WAITS, tag) is not None
    assert deferrals(ext, tag) == 0


def test_no_wait_tenant_gets_4xx_then_the_verdict(mail, ext, addr, fqdn, ca_file, tag):
    bad, good = f"{tag}-bad", f"{tag}-good"
    from_outside(addr, fqdn, ca_file, with_attachment(NO_WAIT, bad, "order.js", script(bad)))
    from_outside(addr, fqdn, ca_file, with_attachment(NO_WAIT, good, "notes.pdf", document(good)))
    assert deferred_at(ext, "attachment under analysis", at_least=2) >= 2  # both wait at the sender
    ext.check_output("postqueue -f")
    assert imap_find(addr["mail"], fqdn["mail"], ca_file, NO_WAIT, good, timeout=120) is not None
    assert deferrals(ext, good) >= 1 and deferrals(ext, bad) >= 1
    bounce = imap_find(addr["ext"], fqdn["ext"], ca_file, "carol@ext.test", bad, criteria="TEXT", timeout=120)
    assert bounce is not None, "the sender was not told"
    assert b"attachment refused: order.js" in bounce and b"554" in bounce
    assert imap_find(addr["mail"], fqdn["mail"], ca_file, NO_WAIT, bad, timeout=3) is None


def test_peekaboo_down_means_4xx_then_delivery(mail, ext, addr, fqdn, ca_file, tag):
    sent = 2
    mail.check_output("systemctl stop mailstack-peekaboo")
    try:
        code, reply = smtp_result(with_attachment(WAITS, f"{tag}-direct", "a.pdf", document(f"{tag}-direct")))
        assert code == 451 and b"attachment analysis unavailable" in reply, (code, reply)
        for i in range(sent):
            from_outside(addr, fqdn, ca_file, with_attachment(WAITS, f"{tag}-{i}", "b.pdf", document(f"{tag}-{i}")))
        assert deferred_at(ext, "attachment analysis unavailable", at_least=sent) >= sent
    finally:
        mail.check_output("systemctl start mailstack-peekaboo; for i in $(seq 30); do "
                          "ss -ltn | grep -q '127.0.0.1:8100 ' && break; sleep 1; done")
    ext.check_output("postqueue -f")
    arrived = [imap_find(addr["mail"], fqdn["mail"], ca_file, WAITS, f"{tag}-{i}", timeout=120) for i in range(sent)]
    assert sum(raw is not None for raw in arrived) == sent


def test_a_cached_verdict_decides_without_peekaboo(mail, tag):
    known = script(tag)
    assert smtp_result(with_attachment(WAITS, tag, "first.js", known))[0] == 554
    mail.check_output("systemctl stop mailstack-peekaboo")
    try:
        code, reply = smtp_result(with_attachment(WAITS, f"{tag}-again", "first.js", known))
        assert code == 554 and b"attachment refused: first.js" in reply, (code, reply)
        renamed = smtp_result(with_attachment(WAITS, f"{tag}-renamed", "renamed.txt", known))
        assert renamed[0] == 451  # a verdict is for these bytes under that name: judged anew
        fresh = smtp_result(with_attachment(WAITS, f"{tag}-new", "new.pdf", document(uuid.uuid4().hex)))
        assert fresh[0] == 451  # unknown samples are never accepted unjudged
    finally:
        mail.check_output("systemctl start mailstack-peekaboo")


def test_mail_the_platform_sends_is_not_held(addr, fqdn, ca_file, tag):
    """Submitted mail (with the S/MIME gateway and back) is the sender's own: not judged."""
    msg = message("alice@example.test", "carol@ext.test", tag)
    msg.add_attachment(script(tag), maintype="application", subtype="octet-stream", filename="tool.js")
    submit(addr["mail"], fqdn["mail"], ca_file, "alice@example.test", msg)
    assert imap_find(addr["ext"], fqdn["ext"], ca_file, "carol@ext.test", tag) is not None


def test_a_cached_verdict_never_launders_a_bad_name(tag):
    """The attacker has harmless-looking bytes judged as notes.pdf, then sends the same bytes
    as a script, however spelled: each name is judged for itself."""
    same = script(tag)
    assert smtp_result(with_attachment(WAITS, tag, "notes.pdf", same))[0] == 250
    for name in ("invoice.js", "invoice.js.", "INVOICE.JS", "a.pdf.js", "invoice.js .."):
        code, reply = smtp_result(with_attachment(WAITS, f"{tag}-{name}", name, same))
        said = name.lower().rstrip(". ")  # the name as the recipient's system opens it
        assert code == 554 and f"attachment refused: {said}".encode() in reply, (name, code, reply)
