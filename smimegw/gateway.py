"""The SMTP side: Postfix hands mail in; every copy goes back, processed, in one pass."""

from __future__ import annotations

import asyncio
import logging
import queue
import smtplib
import ssl
import time
import uuid
from collections import defaultdict

from cryptography import x509

from smimegw import cms, mime
from smimegw.policy import Config, Plan

log = logging.getLogger("smimegw")
RESULT = b"X-Mailstack-SMIME"
MAX_IDLE = 5.0  # seconds a re-injection connection may wait for reuse
MAX_KEPT = 4  # re-injection connections kept open per listener and worker
TRACE = b"X-Mailstack-SMIME-Pass"
INTERNAL = b"X-Mailstack-"  # headers only the platform writes: dropped from what comes in


class ReinjectError(Exception):
    def __init__(self, code: int, text: str):
        super().__init__(f"{code} {text}")
        self.code, self.text = code, text


def signer_domain(pem: bytes) -> str:
    if not pem:
        return "unknown"
    cert = x509.load_pem_x509_certificate(pem)
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = names.get_values_for_type(x509.DNSName)
        if dns:
            return dns[0]
    except x509.ExtensionNotFound:
        pass
    return cert.subject.rfc4514_string()


async def verdict(entity: bytes, decrypted: bool, trust: str, timeout: float) -> bytes:
    """What a local copy's X-Mailstack-SMIME says: opened or not, and its signature checked
    against `trust` (the gateway's, and the first-pass check's for signed mail: smimegw.verifier)."""
    parts = [f"decrypted={'yes' if decrypted else 'no'}"]
    if mime.is_encrypted(entity):
        parts.append("encrypted=not-for-this-recipient")
    elif mime.is_signed(entity):
        result = await cms.verify(mime.join([], mime.unfolded(entity)), trust, timeout)
        signer = signer_domain(result.signer_pem)
        parts.append(f"signature=verified; signer={signer}" if result.ok
                     else f"signature=INVALID; signer={signer}; reason={result.reason[:120]}")
    else:
        parts.append("signature=none")
    return "; ".join(parts).encode()


class Gateway:
    """aiosmtpd handler for one listener: `submitted` says whether it is the submission
    listener (mail of authenticated users) or the inbound one (mail from outside).
    Policy at RCPT (refusals go to Postfix per recipient), all processing at DATA; a
    structure over the limits is refused (5xx), any other error is a 4xx, so Postfix
    keeps the mail queued."""

    def __init__(self, config: Config, submitted: bool = False):
        self.config = config
        self.submitted = submitted
        self._idle: dict[tuple[str, int], queue.SimpleQueue] = {}  # (host, port) -> open re-injection connections

    async def handle_MAIL(self, server, session, envelope, address, options):
        peer = session.peer[0] if session.peer else ""
        if self.config.clients and peer not in self.config.clients:
            log.warning("refused client %s", peer)
            return "554 5.7.1 Client not allowed"
        envelope.mail_from, envelope.mail_options = address, options
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, options):
        plan = self.config.plan(envelope.mail_from or "", address, self.submitted)
        if plan.refuse:
            log.warning("from=<%s> to=<%s> refused: %s", envelope.mail_from, address, plan.refuse)
            return plan.refuse
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        pass_id = uuid.uuid4().hex[:16]
        peer = session.peer[0] if session.peer else ""
        if peer not in self.config.returns:  # the mail goes back to the Postfix it came from
            log.warning("pass=%s no way back to %s", pass_id, peer)
            return "451 4.3.0 S/MIME gateway cannot return mail to this client"
        try:
            copies = await self.process(envelope, pass_id)
            for (port, recipients), data in copies.items():
                await asyncio.to_thread(self.reinject, (peer, port), envelope.mail_from, recipients, data)
        except mime.MimeLimit as err:
            log.warning("pass=%s refused: %s", pass_id, err)
            return f"554 5.6.0 {err}; the S/MIME gateway does not process it"
        except ReinjectError as err:
            log.warning("pass=%s reinjection refused: %s", pass_id, err)
            code = err.code if 400 <= err.code < 600 else 451
            return f"{code} {err.text}"
        except Exception as err:  # never pass a message on unprocessed: defer it
            log.exception("pass=%s failed: %s", pass_id, err)
            return "451 4.3.0 S/MIME gateway error, try again later"
        log.info("pass=%s %s from=<%s> to=%s copies=%d done", pass_id,
                 "submission" if self.submitted else "inbound", envelope.mail_from,
                 ",".join(envelope.rcpt_tos), len(copies))
        return "250 2.0.0 OK processed"

    async def process(self, envelope, pass_id: str) -> dict[tuple[int, tuple[str, ...]], bytes]:
        config = self.config
        transport, entity = mime.split(mime.normalize(envelope.original_content or envelope.content))
        mime.check_structure(entity, config.max_mime_depth, config.max_mime_parts)
        transport = mime.drop(transport, INTERNAL)
        sender = envelope.mail_from or ""
        plans: dict[Plan, list[str]] = defaultdict(list)
        for rcpt in envelope.rcpt_tos:
            plans[config.plan(sender, rcpt, self.submitted)].append(rcpt)
        port = config.outbound_port if self.submitted else config.inbound_port
        trace = TRACE + f": {config.hostname} {pass_id}".encode()
        copies = {}
        for plan, recipients in plans.items():
            body, headers, decrypted = entity, [trace, *transport], False
            if plan.decrypt_for:
                body, decrypted = await self.decrypt(body, plan.decrypt_for)
            if plan.sign_as and not mime.is_encrypted(body):
                tenant = config.tenants[plan.sign_as]
                body = await cms.sign(body, tenant.cert, tenant.key, config.openssl_timeout)
            if plan.local:
                headers.insert(0, RESULT + b": " + await verdict(body, decrypted, config.trust,
                                                                  config.openssl_timeout))
            elif plan.encrypt_to and not mime.is_encrypted(body):
                body = await cms.encrypt(body, [plan.encrypt_to], config.openssl_timeout)
            copies[(self.return_port(port, decrypted), tuple(recipients))] = mime.join(headers, body)
            log.info("pass=%s to=%s local=%s signed=%s encrypted=%s decrypted=%s", pass_id,
                     ",".join(recipients), plan.local, plan.sign_as or "-", bool(plan.encrypt_to), decrypted)
        return copies

    def return_port(self, port: int, decrypted: bool) -> int:
        """Inbound mail the gateway opened was scanned as ciphertext only: it goes back where
        Postfix scans it again, decrypted, before any mailbox sees it."""
        if not decrypted or self.submitted:
            return port
        if self.config.decrypted_port is None:
            raise ReinjectError(451, "4.3.0 no listener scans decrypted mail; not delivered unscanned")
        return self.config.decrypted_port

    async def decrypt(self, entity: bytes, domain: str) -> tuple[bytes, bool]:
        """Open mail encrypted to the local recipient's domain, with that domain's key only."""
        if not mime.is_encrypted(entity):
            return entity, False
        tenant = self.config.tenants[domain]
        try:
            opened = await cms.decrypt(mime.join([], mime.unfolded(entity)), tenant.cert, tenant.key,
                                       self.config.openssl_timeout)
        except cms.CMSError:  # not for this domain (or damaged): delivered as it came
            return entity, False
        inner = mime.split(mime.normalize(opened))[1]
        mime.check_structure(inner, self.config.max_mime_depth, self.config.max_mime_parts)
        return inner, True

    def reinject(self, target: tuple[str, int], sender: str, recipients: tuple[str, ...], data: bytes) -> None:
        """Hand one copy back to Postfix at `target` (address, port), over a kept-open (TLS)
        connection when there is one."""
        client, reused = self._connection(target)
        try:
            refused = client.sendmail(sender, list(recipients), data.replace(b"\n", b"\r\n"))
        except (smtplib.SMTPServerDisconnected, smtplib.SMTPSenderRefused) as err:
            client.close()
            stale = isinstance(err, smtplib.SMTPServerDisconnected) or err.smtp_code == 421
            if reused and stale:  # the server timed the kept connection out: open a new one
                return self.reinject(target, sender, recipients, data)
            if isinstance(err, smtplib.SMTPSenderRefused):
                raise ReinjectError(err.smtp_code, err.smtp_error.decode(errors="replace")) from None
            raise
        except smtplib.SMTPRecipientsRefused as err:
            self._release(target, client)
            code, text = next(iter(err.recipients.values()))
            raise ReinjectError(code, text.decode(errors="replace")) from None
        except smtplib.SMTPResponseException as err:
            client.close()
            if reused and 400 <= err.smtp_code < 500:  # the kept session may be what failed (its milter
                return self.reinject(target, sender, recipients, data)  # reloaded under it): once more, fresh
            raise ReinjectError(err.smtp_code, err.smtp_error.decode(errors="replace")) from None
        except BaseException:
            client.close()
            raise
        self._release(target, client)
        if refused:  # partial refusal: defer all, Postfix retries (duplicates beat loss)
            raise ReinjectError(451, f"4.3.0 re-injection refused {sorted(refused)}")

    def _connection(self, target: tuple[str, int]) -> tuple[smtplib.SMTP, bool]:
        idle = self._idle.setdefault(target, queue.SimpleQueue())
        while True:
            try:
                since, client = idle.get_nowait()
            except queue.Empty:
                break
            if time.monotonic() - since < MAX_IDLE:
                return client, True
            client.close()
        config = self.config
        address, port = target
        client = smtplib.SMTP(address, port, local_hostname=config.hostname, timeout=120)
        try:
            if config.reinject_ca:
                context = ssl.create_default_context(cafile=config.reinject_ca)
                client.starttls(context=_Named(context, config.returns[address]))
            client.ehlo()
        except BaseException:
            client.close()
            raise
        return client, False

    def _release(self, target: tuple[str, int], client: smtplib.SMTP) -> None:
        """Keep a few connections open for the next copies; Postfix would time out idle
        ones (faster under load), so they are reused only for MAX_IDLE seconds."""
        idle = self._idle[target]
        try:
            if idle.qsize() >= MAX_KEPT:
                client.quit()
                return
            client.rset()
        except smtplib.SMTPException:
            client.close()
            return
        idle.put((time.monotonic(), client))


class _Named:
    """Verify the re-injection listener by its host name, though we connect by address."""

    def __init__(self, context: ssl.SSLContext, name: str):
        self.context, self.name = context, name

    def wrap_socket(self, sock, server_hostname=None, **kwargs):
        return self.context.wrap_socket(sock, server_hostname=self.name, **kwargs)
