"""Allow and deny lists are each tenant's own: example.test refuses @spam.ext.test and
tenant-b.test always accepts @ext.test; neither list acts for the other tenant's users.
A list change reaches Postfix and rspamd by a reload: neither restarts."""

import smtplib
from pathlib import Path

from helpers import imap_find, message
from labenv import ROOT, run_deploy, ssh
from test_mail_flow import from_outside, smtp_from_test_machine

DENIED = "bulk@spam.ext.test"  # on example.test's deny list only


def test_a_deny_list_refuses_only_its_own_tenants_recipients(addr, fqdn, ca_file, tag, rspamd_ready):
    with smtp_from_test_machine(addr) as client:
        assert client.mail(DENIED)[0] == 250
        code, reply = client.rcpt("alice@example.test")
        assert code == 554 and b"refused by the policy of the recipient's domain" in reply, reply
        assert client.rcpt("dave@tenant-b.test")[0] == 250
        assert client.data(message(DENIED, "dave@tenant-b.test", tag).as_bytes())[0] == 250
    for folder in ("INBOX", "Junk"):  # from the test machine, SPF fails: it may be filed as spam
        if imap_find(addr["mail"], fqdn["mail"], ca_file, "dave@tenant-b.test", tag, mailbox=folder, timeout=20):
            break
    else:
        raise AssertionError("tenant-b's user did not get the mail example.test refuses")
    assert imap_find(addr["mail"], fqdn["mail"], ca_file, "alice@example.test", tag, mailbox="INBOX", timeout=3) is None


def with_zip(recipients: list[str], tag: str):
    msg = message("carol@ext.test", ", ".join(recipients), tag)
    msg.add_attachment(b"PK\x05\x06" + bytes(18) + tag.encode(), maintype="application", subtype="zip",
                       filename="Photos.ZIP")  # new to Peekaboo every time
    return msg


def test_refused_attachment_types_are_the_tenants_own(ext, addr, fqdn, ca_file, tag, rspamd_ready):
    with smtp_from_test_machine(addr) as client:
        try:
            client.send_message(with_zip(["alice@example.test"], tag))
            raise AssertionError("example.test accepted a .zip attachment it refuses")
        except smtplib.SMTPDataError as err:
            assert err.smtp_code == 554 and b"attachment type .zip refused by example.test" in err.smtp_error, err
    from_outside(addr, fqdn, ca_file, with_zip(["dave@tenant-b.test"], tag))
    # tenant-b.test does not wait for Peekaboo: a new sample is deferred once, then delivered
    for _ in range(20):
        if imap_find(addr["mail"], fqdn["mail"], ca_file, "dave@tenant-b.test", tag, timeout=2):
            break
        ext.check_output("postqueue -f")
    else:
        raise AssertionError("tenant-b.test did not get the .zip that only example.test refuses")


def allowed(*recipients: str, sender: str = "carol@ext.test", ip: str = "10.77.0.20") -> bool:
    """rspamd's verdict (over its own protocol) on a plain message: is MAILSTACK_ALLOWED set?"""
    rcpts = " ".join(f"-r {r}" for r in recipients)
    out = ssh("mail", f"rspamc -h 127.0.0.1:11333 -i {ip} -F {sender} {rcpts} symbols",
              b"From: carol@ext.test\nSubject: list check\n\nhello\n")
    return "MAILSTACK_ALLOWED" in out


def test_an_allow_list_counts_only_when_every_recipient_allows(rspamd_ready):
    assert allowed("dave@tenant-b.test")
    assert not allowed("alice@example.test")  # example.test has no such entry
    assert not allowed("dave@tenant-b.test", "alice@example.test")  # one tenant cannot allow for another
    assert not allowed("dave@tenant-b.test", sender="someone@elsewhere.test")


def test_an_allow_list_never_trusts_a_forged_sender(rspamd_ready):
    """MAIL FROM is the attacker's to choose: ceo@ext.test from a host ext.test's SPF does not
    name (the test machine) gets no bonus; the same sender from ext, which SPF names, does."""
    assert allowed("dave@tenant-b.test", sender="ceo@ext.test")
    assert not allowed("dave@tenant-b.test", sender="ceo@ext.test", ip="10.77.0.1")
    assert not allowed("dave@tenant-b.test", sender="ceo@EXT.test", ip="10.77.0.1")


def main_pids(mail) -> str:
    return mail.check_output("systemctl show -p MainPID --value postfix@- rspamd")


def deploy(inventory: Path) -> None:
    proc = run_deploy(inventory)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]


def test_a_list_change_is_a_reload_not_a_restart(mail, addr, tmp_path, rspamd_ready):
    before = main_pids(mail)
    changed = tmp_path / "lab.yml"
    changed.write_text((ROOT / "inventories" / "lab.yml").read_text().replace(
        '      senders: ["@ext.test"]\n', '      senders: ["@ext.test"]\n    deny:\n      senders: ["@later.ext.test"]\n'))
    try:
        deploy(changed)
        with smtp_from_test_machine(addr) as client:
            client.mail("news@later.ext.test")
            assert client.rcpt("dave@tenant-b.test")[0] == 554
        assert main_pids(mail) == before  # same Postfix master, same rspamd main process
    finally:
        deploy(ROOT / "inventories" / "lab.yml")
    with smtp_from_test_machine(addr) as client:
        client.mail("news@later.ext.test")
        assert client.rcpt("dave@tenant-b.test")[0] == 250
