"""Real protocol clients for the lab tests: SMTP, IMAP, POP3 over TLS, and DNS."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import ssl
import threading
import time
from email.message import EmailMessage

import dns.resolver

from mailstack.lab import LAB_PASSWORD as PASSWORD


def tls_context(ca_file: str) -> ssl.SSLContext:
    """Verifies the chain to the CAs in `ca_file` and the host name."""
    return ssl.create_default_context(cafile=ca_file)


def named_context(ca_file: str, server_name: str) -> NamedContext:
    return NamedContext(tls_context(ca_file), server_name)


def message(sender: str, recipient: str, subject: str, body: str = "Hello from the lab.\n") -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, recipient, subject
    msg["Message-ID"] = f"<{subject}@lab.test>"
    msg.set_content(body)
    return msg


def submit(host: str, server_name: str, ca_file: str, user: str, msg: EmailMessage,
           password: str = PASSWORD, port: int = 587, from_addr: str | None = None) -> None:
    """Submit as an authenticated user on 587 (STARTTLS) or 465 (implicit TLS);
    `from_addr` overrides the envelope sender ("" for a null sender)."""
    context = NamedContext(tls_context(ca_file), server_name)
    if port == 465:
        client = smtplib.SMTP_SSL(host, 465, context=context, timeout=30,
                                  local_hostname="client.lab.test")
    else:
        client = smtplib.SMTP(host, port, timeout=30, local_hostname="client.lab.test")
        client.starttls(context=context)
    with client:
        client.ehlo()
        client.login(user, password)
        client.send_message(msg, from_addr=from_addr)


class NamedContext:
    """Verify `name` although the client connects to an address (the test machine does
    not resolve lab names): every stdlib client calls wrap_socket(server_hostname=addr)."""

    def __init__(self, context: ssl.SSLContext, name: str):
        self.context, self.name = context, name

    def wrap_socket(self, sock, server_hostname=None, **kwargs):
        return self.context.wrap_socket(sock, server_hostname=self.name, **kwargs)

    def __getattr__(self, attribute):  # the rest (verify_mode, ...) is the context's
        return getattr(self.context, attribute)


def imap_find(host: str, server_name: str, ca_file: str, user: str, subject: str,
              mailbox: str = "INBOX", timeout: float = 60, criteria: str = "SUBJECT") -> bytes | None:
    """Wait for a message with `subject` (or `criteria` matching it) and return it raw, or None."""
    deadline = time.monotonic() + timeout
    while True:
        with imaplib.IMAP4_SSL(host, 993, ssl_context=_imap_context(ca_file, server_name)) as imap:
            imap.login(user, PASSWORD)
            imap.select(f'"{mailbox}"', readonly=True)
            _, found = imap.search(None, criteria, f'"{subject}"')
            ids = found[0].split()
            if ids:
                _, data = imap.fetch(ids[-1], "(RFC822)")
                return data[0][1]
        if time.monotonic() > deadline:
            return None
        time.sleep(1)


def _imap_context(ca_file: str, server_name: str):
    return named_context(ca_file, server_name)


def pop3_find(host: str, server_name: str, ca_file: str, user: str, subject: str) -> bytes | None:
    client = poplib.POP3_SSL(host, 995, context=NamedContext(tls_context(ca_file), server_name), timeout=30)
    try:
        client.user(user)
        client.pass_(PASSWORD)
        count, _ = client.stat()
        for number in range(count, 0, -1):
            _, lines, _ = client.retr(number)
            raw = b"\r\n".join(lines)
            if subject.encode() in raw:
                return raw
        return None
    finally:
        client.quit()


def lab_resolver(nameserver: str) -> dns.resolver.Resolver:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [nameserver]
    resolver.lifetime = 5
    return resolver


def login_replies(server: str, server_name: str, ca_file: str, user: str, password: str = PASSWORD) -> dict[str, str]:
    """Log in with a password on IMAP (993), POP3 (995) and submission (587, STARTTLS): what
    each answered ("OK", "+OK …", "235", or the refusal's text or SMTP code and text)."""
    context, said = named_context(ca_file, server_name), {}
    try:
        with imaplib.IMAP4_SSL(server, 993, ssl_context=context, timeout=30) as imap:
            said["imap"] = imap.login(user, password)[0]
    except imaplib.IMAP4.error as err:
        said["imap"] = str(err)
    pop3 = poplib.POP3_SSL(server, 995, context=context, timeout=30)
    try:
        pop3.user(user)
        said["pop3"] = pop3.pass_(password).decode()
    except poplib.error_proto as err:
        said["pop3"] = str(err)
    finally:
        pop3.close()
    with smtplib.SMTP(server, 587, timeout=30) as smtp:
        smtp.starttls(context=context)
        try:
            said["smtp"] = str(smtp.login(user, password)[0])
        except smtplib.SMTPAuthenticationError as err:
            said["smtp"] = f"{err.smtp_code} {err.smtp_error.decode()}"
    return said


class Sending:
    """alice keeps writing to carol@ext.test, a message a second, in a thread, for as long as
    the `with` block runs (a rotation, a renewal under way): `sent` holds (subject, when each
    was accepted); `send()` sends one more."""

    def __init__(self, addr: dict, fqdn: dict, ca_file: str, tag: str):
        self.addr, self.fqdn, self.ca_file, self.tag = addr, fqdn, ca_file, tag
        self.sent: list[tuple[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep_sending)

    def send(self) -> str:
        subject = f"{self.tag}-{len(self.sent):03d}"
        submit(self.addr["mail"], self.fqdn["mail"], self.ca_file, "alice@example.test",
               message("alice@example.test", "carol@ext.test", subject, body=f"Signed {subject}\n"))
        self.sent.append((subject, time.monotonic()))
        return subject

    def _keep_sending(self) -> None:
        while not self._stop.is_set():
            self.send()
            self._stop.wait(1)

    def __enter__(self) -> Sending:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()
