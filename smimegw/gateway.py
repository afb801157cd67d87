"""The SMTP side: Postfix hands mail in; every copy goes back, processed, in one pass."""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
import uuid
from collections import defaultdict

from cryptography import x509

from smimegw import cms, mime
from smimegw.policy import Config, Plan

log = logging.getLogger("smimegw")
RESULT = b"X-Mailstack-SMIME"
TRACE = b"X-Mailstack-SMIME-Pass"


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


class Gateway:
    """aiosmtpd handler: policy at RCPT (refusals go to Postfix per recipient), all
    processing at DATA; any error there is a 4xx, so Postfix keeps the mail queued."""

    def __init__(self, config: Config):
        self.config = config

    async def handle_MAIL(self, server, session, envelope, address, options):
        peer = session.peer[0] if session.peer else ""
        if self.config.clients and peer not in self.config.clients:
            log.warning("refused client %s", peer)
            return "554 5.7.1 Client not allowed"
        envelope.mail_from, envelope.mail_options = address, options
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, options):
        plan = self.config.plan(envelope.mail_from or "", address)
        if plan.refuse:
            log.warning("from=<%s> to=<%s> refused: %s", envelope.mail_from, address, plan.refuse)
            return plan.refuse
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        pass_id = uuid.uuid4().hex[:16]
        try:
            copies = await self.process(envelope, pass_id)
            for (port, recipients), data in copies.items():
                await asyncio.to_thread(self.reinject, port, envelope.mail_from, recipients, data)
        except ReinjectError as err:
            log.warning("pass=%s reinjection refused: %s", pass_id, err)
            code = err.code if 400 <= err.code < 600 else 451
            return f"{code} {err.text}"
        except Exception as err:  # never pass a message on unprocessed: defer it
            log.exception("pass=%s failed: %s", pass_id, err)
            return "451 4.3.0 S/MIME gateway error, try again later"
        log.info("pass=%s from=<%s> to=%s copies=%d done", pass_id, envelope.mail_from,
                 ",".join(envelope.rcpt_tos), len(copies))
        return "250 2.0.0 OK processed"

    async def process(self, envelope, pass_id: str) -> dict[tuple[int, tuple[str, ...]], bytes]:
        transport, entity = mime.split(mime.normalize(envelope.original_content or envelope.content))
        transport = mime.drop(transport, RESULT)
        sender = envelope.mail_from or ""
        plans: dict[Plan, list[str]] = defaultdict(list)
        for rcpt in envelope.rcpt_tos:
            plans[self.config.plan(sender, rcpt)].append(rcpt)
        local_domains = {r.rpartition("@")[2].lower() for p, rs in plans.items() if p.local for r in rs}
        entity, decrypted = await self.decrypt(entity, local_domains)
        outbound = sender.rpartition("@")[2].lower() in self.config.tenants
        port = self.config.outbound_port if outbound else self.config.inbound_port
        trace = TRACE + f": {self.config.hostname} {pass_id}".encode()
        copies = {}
        for plan, recipients in plans.items():
            body, headers = entity, [trace, *transport]
            if plan.sign_as and not mime.is_encrypted(body):
                tenant = self.config.tenants[plan.sign_as]
                body = await cms.sign(body, tenant.cert, tenant.key)
            if plan.local:
                headers.insert(0, RESULT + b": " + await self.describe(body, decrypted))
            elif plan.encrypt_to and not mime.is_encrypted(body):
                body = await cms.encrypt(body, [plan.encrypt_to])
            copies[(port, tuple(recipients))] = mime.join(headers, body)
            log.info("pass=%s to=%s local=%s signed=%s encrypted=%s", pass_id, ",".join(recipients),
                     plan.local, plan.sign_as or "-", bool(plan.encrypt_to))
        return copies

    async def decrypt(self, entity: bytes, domains: set[str]) -> tuple[bytes, bool]:
        """Open mail encrypted to one of our tenants (recipients' domains first)."""
        if not mime.is_encrypted(entity):
            return entity, False
        candidates = sorted(domains) + sorted(set(self.config.tenants) - domains)
        for domain in candidates:
            tenant = self.config.tenants[domain]
            if not (tenant.cert and tenant.key):
                continue
            try:
                message = mime.join([], entity)
                return mime.split(mime.normalize(await cms.decrypt(message, tenant.cert, tenant.key)))[1], True
            except cms.CMSError:
                continue
        return entity, False

    async def describe(self, entity: bytes, decrypted: bool) -> bytes:
        parts = [f"decrypted={'yes' if decrypted else 'no'}"]
        if mime.is_encrypted(entity):
            parts.append("encrypted=not-for-this-platform")
        elif mime.is_signed(entity):
            result = await cms.verify(mime.join([], entity), self.config.trust)
            signer = signer_domain(result.signer_pem)
            parts.append(f"signature=verified; signer={signer}" if result.ok
                         else f"signature=INVALID; signer={signer}; reason={result.reason[:120]}")
        else:
            parts.append("signature=none")
        return "; ".join(parts).encode()

    def reinject(self, port: int, sender: str, recipients: tuple[str, ...], data: bytes) -> None:
        config = self.config
        with smtplib.SMTP(config.reinject_address, port, local_hostname=config.hostname, timeout=120) as client:
            if config.reinject_ca:
                context = ssl.create_default_context(cafile=config.reinject_ca)
                client.starttls(context=_Named(context, config.reinject_host))
            client.ehlo()
            try:
                refused = client.sendmail(sender, list(recipients), data.replace(b"\n", b"\r\n"))
            except smtplib.SMTPRecipientsRefused as err:
                code, text = next(iter(err.recipients.values()))
                raise ReinjectError(code, text.decode(errors="replace")) from None
            except smtplib.SMTPResponseException as err:
                raise ReinjectError(err.smtp_code, err.smtp_error.decode(errors="replace")) from None
            if refused:  # partial refusal: defer all, Postfix retries (duplicates beat loss)
                raise ReinjectError(451, f"4.3.0 re-injection refused {sorted(refused)}")


class _Named:
    """Verify the re-injection listener by its host name, though we connect by address."""

    def __init__(self, context: ssl.SSLContext, name: str):
        self.context, self.name = context, name

    def wrap_socket(self, sock, server_hostname=None, **kwargs):
        return self.context.wrap_socket(sock, server_hostname=self.name, **kwargs)
