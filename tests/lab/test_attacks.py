"""The attacker's side: a tenant's user, an outside client on port 25, a host on the LAN.

Every test here tries something the platform must refuse, with real clients against the
running lab, and checks the refusal (or that nothing of value came out)."""

import ast
import re
import smtplib
import subprocess
import time
from pathlib import Path

import pytest
from helpers import PASSWORD, imap_find, message, named_context, submit
from labenv import INVENTORY, ROOT, ssh

from mailstack.secrets import domain_certificate, password


def cms(*args: str, data: bytes) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", "cms", *args], input=data, capture_output=True, timeout=60)


def find_anywhere(addr, fqdn, ca_file, user, tag, timeout=60):
    """The message with `tag` in its subject, in INBOX or Junk (both looked at each second)."""
    deadline = time.monotonic() + timeout
    while True:
        for mailbox in ("INBOX", "Junk"):
            raw = imap_find(addr["mail"], fqdn["mail"], ca_file, user, tag, mailbox=mailbox, timeout=0)
            if raw is not None:
                return raw
        if time.monotonic() > deadline:
            return None
        time.sleep(1)


# --- the S/MIME gateway and signing: decided by the path, never by addresses ---

def test_gateway_is_no_decryption_oracle(addr, fqdn, ca_file, tag, rspamd_ready):
    """A tenant-b user sends example.test's ciphertext to the outside: it must leave as
    it came, never decrypted with example.test's key and re-encrypted for the recipient."""
    tenant_cert, tenant_key = domain_certificate(INVENTORY, "example.test")
    secret = f"example.test secret {tag}"
    encrypted = cms("-encrypt", "-aes-256-cbc", "-from", "dave@tenant-b.test", "-to", "carol@ext.test",
                    "-subject", tag, str(tenant_cert), data=f"Content-Type: text/plain\n\n{secret}\n".encode()).stdout
    with smtplib.SMTP(addr["mail"], 587, timeout=30, local_hostname="client.lab.test") as client:
        client.starttls(context=named_context(ca_file, fqdn["mail"]))
        client.login("dave@tenant-b.test", PASSWORD)
        client.sendmail("dave@tenant-b.test", ["carol@ext.test"], encrypted.replace(b"\n", b"\r\n"))
    raw = imap_find(addr["ext"], fqdn["ext"], ca_file, "carol@ext.test", tag)
    assert raw is not None, "the message did not reach ext"
    assert secret.encode() not in raw
    partner_cert, partner_key = domain_certificate(INVENTORY, "ext.test")
    assert cms("-decrypt", "-recip", str(partner_cert), "-inkey", str(partner_key), data=raw).returncode != 0
    opened = cms("-decrypt", "-recip", str(tenant_cert), "-inkey", str(tenant_key), data=raw)
    assert opened.returncode == 0 and secret.encode() in opened.stdout  # the untouched original


def test_spoofed_own_domain_mail_from_port_25_is_never_signed(addr, fqdn, ca_file, tag, rspamd_ready):
    msg = message("ceo@example.test", "alice@example.test", tag)
    with smtplib.SMTP(addr["mail"], 25, timeout=60, local_hostname="client.lab.test") as client:
        try:
            client.send_message(msg, from_addr="ceo@example.test")
        except smtplib.SMTPException:
            return  # refused outright: nothing was signed
    raw = find_anywhere(addr, fqdn, ca_file, "alice@example.test", tag)
    assert raw is not None, "accepted, but neither in INBOX nor in Junk"
    assert b"DKIM-Signature" not in raw
    assert b"multipart/signed" not in raw and b"signer=example.test" not in raw
    assert b"X-Mailstack-SMIME: decrypted=no; signature=none" in raw
    assert b"dmarc=pass" not in raw and b"dmarc=fail" in raw
    # the receiving seal (ARC, for later forwarding) attests the failure, not a pass
    arc = re.search(rb"(?s)ARC-Authentication-Results: (.*?)\r\n\S", raw)
    assert arc is None or b"dmarc=fail" in arc.group(1)


@pytest.mark.parametrize("header,value", [
    ("From", "dave@tenant-b.test"),  # another tenant's user
    ("From", "security@paypal.com"),  # a foreign brand
    ("Sender", "security@paypal.com"),
])
def test_logged_in_user_cannot_use_a_header_address_that_is_not_theirs(addr, fqdn, ca_file, tag, rspamd_ready,
                                                                        header, value):
    msg = message("alice@example.test", "carol@ext.test", tag)
    if header == "From":
        msg.replace_header("From", value)
    else:
        msg["Sender"] = value
    with pytest.raises(smtplib.SMTPDataError) as err:
        submit(addr["mail"], fqdn["mail"], ca_file, "alice@example.test", msg, from_addr="alice@example.test")
    assert 500 <= err.value.smtp_code < 600
    assert f"header {header} <{value}> is not an address of alice@example.test".encode() in err.value.smtp_error
    assert imap_find(addr["ext"], fqdn["ext"], ca_file, "carol@ext.test", tag, timeout=3) is None


@pytest.mark.parametrize("port", [587, 465])
def test_null_sender_on_submission_is_refused(addr, fqdn, ca_file, tag, port):
    msg = message("security@paypal.com", "carol@ext.test", tag)
    with pytest.raises(smtplib.SMTPRecipientsRefused) as err:
        submit(addr["mail"], fqdn["mail"], ca_file, "alice@example.test", msg, port=port, from_addr="")
    code, text = err.value.recipients["carol@ext.test"]
    assert code == 554 and b"may not send with a null sender" in text


def test_forged_internal_headers_from_outside_are_stripped(addr, fqdn, ca_file, tag, rspamd_ready):
    msg = message("carol@ext.test", "dave@tenant-b.test", tag)  # a tenant without S/MIME
    msg["X-Mailstack-SMIME"] = "decrypted=yes; signature=verified; signer=bank.test"
    msg["Authentication-Results"] = f"{fqdn['mail']}; dkim=pass header.d=bank.test"
    submit(addr["ext"], fqdn["ext"], ca_file, "carol@ext.test", msg)
    raw = find_anywhere(addr, fqdn, ca_file, "dave@tenant-b.test", tag)
    assert raw is not None
    assert b"X-Mailstack-SMIME:" not in raw and b"bank.test" not in raw
    assert b"Authentication-Results: mail.lab.test" in raw  # rspamd's own verdict is there


def test_outbound_mail_carries_no_client_address_and_no_internal_verdicts(addr, fqdn, ca_file, tag, rspamd_ready):
    submit(addr["mail"], fqdn["mail"], ca_file, "alice@example.test", message("alice@example.test", "carol@ext.test", tag))
    raw = imap_find(addr["ext"], fqdn["ext"], ca_file, "carol@ext.test", tag)
    assert raw is not None
    head = raw.split(b"\r\n\r\n")[0]
    client = re.escape(INVENTORY.lab["bridge_address"].split("/")[0].encode())  # the test machine sent it
    assert not re.search(client + rb"\b", head) and b"client.lab.test" not in head
    assert not re.search(rb"(?m)^Authentication-Results: mail\.lab\.test", head)
    assert b"X-Mailstack-" not in head and b"X-Spam-Status" not in head
    assert b"DKIM-Signature:" in head  # what must survive does


# --- SMTP smuggling, pipelining, HELO ---

RAW_SMTP = r'''
import re, socket, sys, time
sock = socket.create_connection((sys.argv[1], 25), timeout=30)
def answer():
    """What the server says within the pause: up to its first complete reply, and whatever
    follows that within a moment (a smuggled second transaction would answer there)."""
    text, deadline, complete = "", time.monotonic() + float(sys.argv[2]), None
    while time.monotonic() < (complete or deadline):
        sock.settimeout(max(0.05, (complete or deadline) - time.monotonic()))
        try:
            data = sock.recv(65536).decode()
        except socket.timeout:
            break
        if not data:
            break
        text += data
        if complete is None and re.search(r"(^|\r\n)\d{3} [^\r\n]*\r\n$", text):
            complete = time.monotonic() + 0.5
    return text
for line in sys.stdin.read().split("\n|\n"):
    if line:
        sock.sendall(line.encode().decode("unicode_escape").encode("latin-1"))
    print(repr(answer()))
'''


def raw_smtp(host_name: str, target: str, steps: list[str], pause: float = 2.0) -> list[str]:
    """Send each step (escapes like \\r\\n written out) from a lab host; the answers."""
    script = ssh(host_name, "cat > /root/raw_smtp.py", RAW_SMTP.encode())
    assert script == ""
    out = ssh(host_name, f"python3 /root/raw_smtp.py {target} {pause}", "\n|\n".join(steps).encode())
    return [ast.literal_eval(line) for line in out.splitlines()]


def test_a_bare_lf_dot_does_not_end_data(addr, fqdn, ca_file, tag, rspamd_ready):
    """SMTP smuggling: after <LF>.<LF> a second, forged transaction must not begin."""
    smuggled = (f"Subject: {tag}\\r\\nFrom: carol@ext.test\\r\\n\\r\\nhello\\n.\\n"
                "MAIL FROM:<ceo@example.test>\\r\\nRCPT TO:<bob@example.test>\\r\\nDATA\\r\\n"
                f"Subject: {tag}-smuggled\\r\\n\\r\\nforged\\r\\n.\\r\\n")
    answers = raw_smtp("mail", addr["mail"], [
        "", "EHLO mail.lab.test\\r\\n", "MAIL FROM:<carol@ext.test>\\r\\n", "RCPT TO:<alice@example.test>\\r\\n",
        "DATA\\r\\n", smuggled, "QUIT\\r\\n"], pause=7)
    transcript = "".join(answers)
    assert transcript.count("queued as") <= 1, transcript
    assert imap_find(addr["mail"], fqdn["mail"], ca_file, "bob@example.test", f"{tag}-smuggled", timeout=10) is None


def test_pipelining_before_the_greeting_is_refused(addr):
    answers = raw_smtp("mail", addr["mail"], [
        "EHLO mail.lab.test\\r\\nMAIL FROM:<carol@ext.test>\\r\\nRCPT TO:<alice@example.test>\\r\\nDATA\\r\\n",
        "QUIT\\r\\n"], pause=7)
    transcript = "".join(answers)
    assert "354" not in transcript, transcript
    assert re.search(r"(503|550|554) 5\.5\.\d", transcript), transcript


def test_a_helo_that_is_no_host_name_is_refused(addr):
    with smtplib.SMTP(addr["mail"], 25, timeout=60, local_hostname="not_a_host") as client:
        client.ehlo()
        client.mail("carol@ext.test")
        code, text = client.rcpt("alice@example.test")
    assert code == 504 and b"Helo command rejected" in text


# --- the network: internal ports only for the hosts that need them ---

INTERNAL = [10025, 10026, 10027, 10028, 11332, 11333, 11334, 6379, 24, 12345]


def connects(host, address: str, port: int) -> bool:
    probe = (f"import socket; s = socket.socket(); s.settimeout(5); "
             f"print(s.connect_ex(('{address}', {port})))")
    return host.check_output(f'python3 -c "{probe}"').strip() == "0"


@pytest.mark.parametrize("port", INTERNAL)
def test_internal_ports_are_closed_to_other_hosts(ext, addr, port):
    assert not connects(ext, addr["mail"], port)


def test_the_gateway_is_reachable_from_its_own_mta(mail, addr):
    assert connects(mail, addr["mail"], 10025) and connects(mail, addr["mail"], 10028)


def test_the_public_ports_stay_open(ext, addr):
    for port in (25, 465, 587, 993, 995, 143, 110):
        assert connects(ext, addr["mail"], port), port


def test_firewall_rules_come_from_the_inventory(mail):
    rules = mail.check_output("nft list chain inet mailstack input")
    assert "policy drop" in rules and 'tcp dport 25 accept comment "mx: SMTP from the Internet"' in rules
    assert "10025" not in rules  # the gateway shares this host: only loopback reaches it


def test_redis_wants_its_password(mail):
    assert "NOAUTH" in mail.run("redis-cli -h 127.0.0.1 ping").stdout
    secret = password(INVENTORY, "redis")
    assert mail.run(f"REDISCLI_AUTH='{secret}' redis-cli -h 127.0.0.1 ping").stdout.strip() == "PONG"


def test_rspamd_controller_has_no_packaged_password(mail):
    dump = mail.check_output("rspamadm configdump worker")
    packaged = 'password = "q1"' in dump
    generated = f'password = "{password(INVENTORY, "rspamd-controller")}"' in dump
    assert not packaged and generated  # the generated one is in effect (values kept out of the report)
    assert mail.file("/etc/rspamd/override.d/worker-controller.inc").mode == 0o640


# --- secrets: never printed, never readable by others ---

SECRET_FILES = {  # path on mail -> (owner, group, mode)
    "/etc/mailstack/tls/key.pem": ("root", "root", 0o600),
    "/etc/dovecot/mailstack/passdb-imap": ("root", "dovecot", 0o640),
    "/var/lib/rspamd/dkim/example.test.mail.key": ("root", "_rspamd", 0o640),
    "/etc/rspamd/local.d/redis.conf": ("root", "_rspamd", 0o640),
    "/etc/redis/mailstack.conf": ("root", "redis", 0o640),
    "/etc/mailstack-smime/tenants/example.test.key": ("mailstack-smime", "mailstack-smime", 0o600),
}


def test_diff_and_verbose_deploys_print_no_secret(mail):
    """Remove every kind of secret file, redeploy with --diff -v: they come back, and the
    output shows none of them (pyinfra's own --diff would print them whole)."""
    mail.check_output("rm -f " + " ".join(SECRET_FILES))
    proc = subprocess.run([str(ROOT / ".venv/bin/pyinfra"), "-y", "--diff", "-v", "inventory.py", "deploy.py"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={"PATH": "/usr/bin:/bin", "MAILSTACK_INVENTORY": "inventories/lab.yml",
                               "HOME": str(Path.home())})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "Files of mailstack-smime" in output and "Files of dovecot" in output
    for needle in ("PRIVATE KEY", "$6$labsalt", password(INVENTORY, "redis"), password(INVENTORY, "rspamd-controller")):
        assert needle not in output, f"deploy output shows a secret ({needle[:12]}…)"
    for path, (user, group, mode) in SECRET_FILES.items():
        f = mail.file(path)
        assert (f.user, f.group, f.mode) == (user, group, mode), path


CONNECT_AS = ("runuser -u {user} -- python3 -c 'import socket, sys\n"
              "try:\n socket.create_connection((\"127.0.0.1\", int(sys.argv[1])), 3).close(); print(\"open\")\n"
              "except OSError as err: print(type(err).__name__)' {port}")


def test_a_local_user_reaches_no_loopback_daemon_it_has_no_business_with(mail):
    """Loopback is not private: uid nobody on the mail host would otherwise speak milter to
    rspamd (mail DKIM-signed as a tenant), use its scanner or controller, delete holds in
    Redis, ask Peekaboo, or silence alerts. The firewall refuses it; each daemon's own
    clients (Postfix at the milter, rspamd at Redis) still get through."""
    for port in (11332, 11333, 11334, 6379, INVENTORY.peekaboo["port"], 9093):
        assert mail.check_output(CONNECT_AS.format(user="nobody", port=port)) == "ConnectionRefusedError", port
    assert mail.check_output(CONNECT_AS.format(user="postfix", port=11332)) == "open"
    assert mail.check_output(CONNECT_AS.format(user="_rspamd", port=6379)) == "open"
    signed = mail.run("printf 'From: alice@example.test\\nTo: carol@ext.test\\nSubject: x\\n\\nforged\\n' | runuser -u "
                      "nobody -- rspamc -h 127.0.0.1:11333 --user alice@example.test --mime --from alice@example.test")
    assert "DKIM-Signature" not in signed.stdout
    shutdown = mail.run("runuser -u nobody -- python3 -c \"import socket; s = socket.socket(socket.AF_UNIX); "
                        "s.connect('/run/clamav/clamd.ctl'); s.sendall(b'zSHUTDOWN\\0')\"")
    assert shutdown.rc != 0 and "PermissionError" in shutdown.stderr  # clamd's socket: its group (rspamd) alone
