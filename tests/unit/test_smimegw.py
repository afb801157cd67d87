"""The S/MIME gateway over real SMTP on loopback, interoperating with `openssl smime`."""

from __future__ import annotations

import datetime
import os
import smtplib
import socket
import ssl
import subprocess

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from mailstack.secrets import issue, new_ca
from smimegw.gateway import Gateway
from smimegw.policy import Config, Domain

PEM = serialization.Encoding.PEM


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A throwaway CA with S/MIME certificates for tenants a.test, b.test and partner p.test."""
    base = tmp_path_factory.mktemp("pki")
    ca, ca_key = new_ca("test CA", days=2)
    (base / "ca.pem").write_bytes(ca.public_bytes(PEM))
    files = {"ca": str(base / "ca.pem")}
    for domain in ("a.test", "b.test", "p.test"):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = issue(ca, ca_key, key, [domain], "smime")
        (base / f"{domain}.pem").write_bytes(cert.public_bytes(PEM))
        (base / f"{domain}.key").write_bytes(key.private_bytes(
            PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        files[domain] = (str(base / f"{domain}.pem"), str(base / f"{domain}.key"))
    return files


class Sink:
    """Postfix's re-injection listeners, played by aiosmtpd: keeps what arrives."""

    def __init__(self, reply: str = "250 OK"):
        self.messages: list[tuple[int, str, list[str], bytes]] = []
        self.peers: list[tuple] = []
        self.reply = reply

    async def handle_DATA(self, server, session, envelope):
        self.peers.append(session.peer)
        if self.reply.startswith("250"):
            self.messages.append((server.port, envelope.mail_from, envelope.rcpt_tos,
                                  envelope.content.replace(b"\r\n", b"\n")))
        return self.reply


class PortSMTP(SMTP):
    def __init__(self, handler, port, **kwargs):
        super().__init__(handler, **kwargs)
        self.port = port


def start(handler, port, hostname="127.0.0.1", **kwargs) -> Controller:
    controller = Controller(handler, hostname=hostname, port=port)
    controller.factory = lambda: PortSMTP(handler, port, **kwargs)
    controller.start()
    return controller


@pytest.fixture
def lab(pki):
    """Gateway on loopback (plaintext allowed there) between client and two sinks."""
    sink = Sink()
    inbound, outbound, decrypted, gateway_port = free_port(), free_port(), free_port(), free_port()

    def make(**overrides):
        settings = dict(
            hostname="gw.test", listen="127.0.0.1", port=gateway_port, trust=pki["ca"],
            returns={"127.0.0.1": "mta.test"}, inbound_port=inbound,
            outbound_port=outbound, decrypted_port=decrypted, reinject_ca=None,
            tenants={"a.test": Domain("always", "opportunistic", *pki["a.test"]),
                     "b.test": Domain("always", "never", *pki["b.test"])},
            partners={"p.test": Domain("always", "required", pki["p.test"][0]),
                      "nocert.test": Domain("never", "required", None)})
        settings.update(overrides)
        config = Config(**settings)
        config.check()
        return config

    state = {"controllers": [start(sink, inbound), start(sink, outbound), start(sink, decrypted)]}

    def run(submitted=False, **overrides):
        """Start the gateway's submission listener (`submitted`) or its inbound one."""
        gateway = start(Gateway(make(**overrides), submitted=submitted), gateway_port)
        state["controllers"].append(gateway)
        return gateway_port

    def restart_sink():
        """Postfix restarts: connections kept open to it die."""
        state["controllers"].pop(0).stop()
        state["controllers"].append(start(sink, inbound))

    run.restart_sink = restart_sink
    run.decrypted_port = decrypted
    yield run, sink, inbound, outbound
    for controller in state["controllers"]:
        controller.stop()


def send(port, sender, recipients, data: bytes, source: str = "127.0.0.1"):
    """smtplib sends bytes as they are: give it CRLF line ends, as SMTP requires."""
    data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=30, source_address=(source, 0)) as client:
        return client.sendmail(sender, recipients, data)


def plain(sender="alice@a.test", to="x@p.test", subject="hello") -> bytes:
    return (f"From: {sender}\nTo: {to}\nSubject: {subject}\nMessage-ID: <{subject}@t>\n"
            "Content-Type: text/plain; charset=utf-8\n\nSecret text.\n").encode()


def openssl(*args, data: bytes) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *args], input=data, capture_output=True)


def test_outbound_is_signed_by_the_tenant_and_encrypted_to_the_partner(lab, pki, tmp_path):
    run, sink, _, outbound = lab
    send(run(submitted=True), "alice@a.test", ["x@p.test"], plain())
    ((port, _, rcpts, data),) = sink.messages
    assert port == outbound and rcpts == ["x@p.test"]
    assert b"Secret text" not in data and b"application/pkcs7-mime" in data
    assert b"Subject: hello" in data  # transport headers stay readable
    opened = openssl("smime", "-decrypt", "-recip", pki["p.test"][0], "-inkey", pki["p.test"][1], data=data)
    assert opened.returncode == 0, opened.stderr
    signer = tmp_path / "signer.pem"
    verified = openssl("smime", "-verify", "-CAfile", pki["ca"], "-signer", str(signer), data=opened.stdout)
    assert verified.returncode == 0, verified.stderr
    assert b"Secret text." in verified.stdout
    cert = x509.load_pem_x509_certificate(signer.read_bytes())
    assert cert.subject.rfc4514_string() == "CN=a.test"


def test_inbound_from_openssl_is_decrypted_and_verified(lab, pki):
    run, sink, inbound, _ = lab
    entity = b"Content-Type: text/plain\n\nFrom the partner.\n"
    signed = openssl("smime", "-sign", "-signer", pki["p.test"][0], "-inkey", pki["p.test"][1],
                     "-md", "sha256", data=entity).stdout
    encrypted = openssl("smime", "-encrypt", "-aes256", "-from", "bob@p.test", "-to", "u@a.test",
                        "-subject", "for you", pki["a.test"][0], data=signed).stdout
    assert b"From the partner" not in encrypted
    forged = b"X-Mailstack-SMIME: decrypted=yes; signature=verified; signer=bank.test\n" + encrypted
    send(run(), "bob@p.test", ["u@a.test"], forged)
    ((port, _, _, data),) = sink.messages
    assert port == run.decrypted_port != inbound  # where Postfix has the opened content scanned
    assert b"From the partner." in data
    results = [line for line in data.split(b"\n") if line.startswith(b"X-Mailstack-SMIME:")]
    assert results == [b"X-Mailstack-SMIME: decrypted=yes; signature=verified; signer=p.test"]


def encrypted_to_a_test(pki) -> bytes:
    entity = b"Content-Type: text/plain\n\nX5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR\n"
    return openssl("smime", "-encrypt", "-aes256", "-from", "bob@p.test", "-to", "u@a.test",
                   "-subject", "for you", pki["a.test"][0], data=entity).stdout


SPELLINGS = {  # the same Content-Type as a MIME reader sees it, written another way
    "lower case": lambda h: h.replace(b"Content-Type:", b"content-type:"),
    "value on the next line": lambda h: h.replace(b"Content-Type: ", b"Content-Type:\n\t"),
    "folded between parameters": lambda h: h.replace(b"pkcs7-mime; ", b"pkcs7-mime;\n  "),
    "blank before the colon": lambda h: h.replace(b"Content-Type:", b"Content-Type :"),
}


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_encrypted_mail_is_opened_however_its_content_type_is_written(lab, pki, spelling):
    """The attacker's second pass: encrypted to the tenant, with its Content-Type spelled so
    that openssl (or a naive parser) would not see S/MIME, while the recipient's reader does.
    The gateway opens it all the same, for the listener that scans it."""
    run, sink, inbound, _ = lab
    head, _, body = encrypted_to_a_test(pki).partition(b"\n\n")
    send(run(), "bob@p.test", ["u@a.test"], SPELLINGS[spelling](head) + b"\n\n" + body)
    ((port, _, _, data),) = sink.messages
    assert port == run.decrypted_port != inbound and b"EICAR" in data, data[:300]


def test_decrypted_mail_never_returns_where_nothing_scans_it(lab, pki):
    """No listener for decrypted mail configured: it is deferred (451), never returned to
    the unscanned inbound listener; mail the gateway did not open still goes there."""
    run, sink, inbound, _ = lab
    port = run(decrypted_port=None)
    with pytest.raises(smtplib.SMTPDataError) as deferred:
        send(port, "bob@p.test", ["u@a.test"], encrypted_to_a_test(pki))
    assert deferred.value.smtp_code == 451 and not sink.messages
    send(port, "bob@p.test", ["u@a.test"], plain(sender="bob@p.test", to="u@a.test"))
    assert [m[0] for m in sink.messages] == [inbound]


def test_tenant_to_tenant_in_one_pass(lab):
    run, sink, _, outbound = lab
    send(run(submitted=True), "alice@a.test", ["bert@b.test"], plain(to="bert@b.test"))
    ((port, _, _, data),) = sink.messages
    assert port == outbound  # back to Postfix once, never to the gateway again
    assert data.count(b"X-Mailstack-SMIME-Pass:") == 1
    assert b"Secret text." in data  # readable: local copies are never encrypted
    assert b"X-Mailstack-SMIME: decrypted=no; signature=verified; signer=a.test" in data


def test_recipients_with_different_policies_get_separate_copies(lab):
    run, sink, _, _ = lab
    send(run(submitted=True), "alice@a.test", ["x@p.test", "bert@b.test", "y@plain.test"], plain())
    copies = {tuple(r): d for _, _, r, d in sink.messages}
    assert set(copies) == {("x@p.test",), ("bert@b.test",), ("y@plain.test",)}
    assert b"enveloped-data" in copies[("x@p.test",)]
    assert b"signature=verified" in copies[("bert@b.test",)]
    # plain.test has no policy; a.test is opportunistic without a certificate: signed, clear
    assert b"multipart/signed" in copies[("y@plain.test",)] and b"Secret text." in copies[("y@plain.test",)]


@pytest.mark.parametrize("mode,code", [("bounce", 550), ("defer", 450)])
def test_required_encryption_without_certificate_never_goes_out_in_clear(lab, mode, code):
    run, sink, _, _ = lab
    with pytest.raises(smtplib.SMTPRecipientsRefused) as err:
        send(run(submitted=True, on_missing_certificate=mode), "alice@a.test", ["z@nocert.test"], plain())
    got, text = err.value.recipients["z@nocert.test"]
    assert got == code and b"encryption to nocert.test is required" in text
    assert sink.messages == []


def test_a_refused_recipient_does_not_hold_back_the_others(lab):
    run, sink, _, _ = lab
    refused = send(run(submitted=True), "alice@a.test", ["z@nocert.test", "x@p.test"], plain())
    assert set(refused) == {"z@nocert.test"}
    assert [r for _, _, r, _ in sink.messages] == [["x@p.test"]]


def test_any_processing_error_is_a_temporary_failure(lab, pki, tmp_path):
    broken = tmp_path / "broken.key"
    broken.write_text("not a key")
    run, sink, _, _ = lab
    port = run(submitted=True, tenants={"a.test": Domain("always", "never", pki["a.test"][0], str(broken))})
    with pytest.raises(smtplib.SMTPDataError) as err:
        send(port, "alice@a.test", ["x@elsewhere.test"], plain())
    assert err.value.smtp_code == 451
    assert sink.messages == []  # nothing passed on unprocessed


@pytest.mark.parametrize("reply,code", [("550 5.1.1 no such user", 550), ("452 4.3.1 full", 452)])
def test_reinjection_answers_reach_postfix(pki, reply, code):
    sink = Sink(reply)
    inbound, gateway_port = free_port(), free_port()
    controllers = [start(sink, inbound)]
    config = Config(hostname="gw.test", listen="127.0.0.1", port=gateway_port, trust=pki["ca"],
                    returns={"127.0.0.1": "mta.test"}, inbound_port=inbound,
                    outbound_port=inbound, reinject_ca=None)
    controllers.append(start(Gateway(config), gateway_port))
    try:
        with pytest.raises(smtplib.SMTPDataError) as err:
            send(gateway_port, "someone@elsewhere.test", ["u@a.test"], plain())
        assert err.value.smtp_code == code
    finally:
        for c in controllers:
            c.stop()


def test_each_copy_goes_back_to_the_postfix_it_came_from(pki):
    """Several Postfix hosts share one gateway: a copy returns to the host that sent it, and
    a client with no way back gets 451 (Postfix keeps the mail)."""
    port, gateway_port = free_port(), free_port()
    sinks = {address: Sink() for address in ("127.0.0.1", "127.0.0.2")}
    controllers = [start(sink, port, hostname=address) for address, sink in sinks.items()]
    config = Config(hostname="gw.test", listen="127.0.0.1", port=gateway_port, trust=pki["ca"],
                    returns={"127.0.0.1": "mta1.test", "127.0.0.2": "mta2.test"}, inbound_port=port,
                    outbound_port=port, reinject_ca=None)
    controllers.append(start(Gateway(config), gateway_port))
    try:
        send(gateway_port, "x@p.test", ["alice@a.test"], plain(to="alice@a.test", subject="two"), source="127.0.0.2")
        send(gateway_port, "x@p.test", ["alice@a.test"], plain(to="alice@a.test", subject="one"), source="127.0.0.1")
        assert [b"Subject: two" in m[3] for m in sinks["127.0.0.2"].messages] == [True]
        assert [b"Subject: one" in m[3] for m in sinks["127.0.0.1"].messages] == [True]
        with pytest.raises(smtplib.SMTPDataError) as err:
            send(gateway_port, "x@p.test", ["alice@a.test"], plain(to="alice@a.test"), source="127.0.0.3")
        assert err.value.smtp_code == 451
    finally:
        for c in controllers:
            c.stop()


def test_plaintext_only_on_loopback(pki):
    with pytest.raises(ValueError, match="plaintext is allowed on loopback only"):
        Config(hostname="gw", listen="192.0.2.10", port=1, trust=pki["ca"], returns={"127.0.0.1": "m"},
               inbound_port=2, outbound_port=3, reinject_ca=None).check()


def test_unknown_clients_are_refused(lab):
    run, sink, _, _ = lab
    with pytest.raises(smtplib.SMTPSenderRefused) as err:
        send(run(clients=("192.0.2.1",)), "alice@a.test", ["x@p.test"], plain())
    assert err.value.smtp_code == 554


def test_starttls_is_required_when_tls_is_configured(pki, tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gw")])) \
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gw")])).public_key(key.public_key()) \
        .serial_number(2).not_valid_before(datetime.datetime(2020, 1, 1)) \
        .not_valid_after(datetime.datetime(2099, 1, 1)).sign(key, hashes.SHA256())
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    port = free_port()
    config = Config(hostname="gw", listen="127.0.0.1", port=port, trust=pki["ca"], returns={"127.0.0.1": "m"},
                    inbound_port=1, outbound_port=1, reinject_ca=None,
                    tls_cert=str(tmp_path / "c.pem"), tls_key=str(tmp_path / "k.pem"))
    controller = start(Gateway(config), port, tls_context=context, require_starttls=True)
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo()
            code, text = client.mail("alice@a.test")
            assert code == 530 and b"STARTTLS" in text
    finally:
        controller.stop()


def test_reinjection_reuses_connections_and_survives_a_dropped_one(lab):
    run, sink, inbound, _ = lab
    port = run()
    for i in range(3):
        send(port, "someone@elsewhere.test", ["u@a.test"], plain(subject=f"m{i}"))
    assert len(sink.messages) == 3 and len(set(sink.peers)) == 1  # one kept-open connection
    run.restart_sink()
    send(port, "someone@elsewhere.test", ["u@a.test"], plain(subject="after"))
    assert [m[3].split(b"Subject: ")[1].split(b"\n")[0] for m in sink.messages][-1] == b"after"


class TimingOutSink(Sink):
    """Answers 421 to the first MAIL on a connection it has already used, as Postfix's
    smtpd does when a kept connection sat idle past its timeout."""

    def __init__(self):
        super().__init__()
        self.seen, self.timed_out = set(), 0

    async def handle_MAIL(self, server, session, envelope, address, options):
        if session.peer in self.seen and not self.timed_out:
            self.timed_out += 1
            return "421 4.4.2 mta.test Error: timeout exceeded"
        self.seen.add(session.peer)
        envelope.mail_from = address
        return "250 OK"


class ReloadedMilterSink(Sink):
    """Answers 451 at the end of DATA on a connection it has already used, as Postfix does when
    the milter session under a kept connection ended (rspamd reloaded); a new connection works."""

    def __init__(self):
        super().__init__()
        self.seen, self.refused = set(), 0

    async def handle_DATA(self, server, session, envelope):
        if session.peer in self.seen:
            self.refused += 1
            return "451 4.7.1 Service unavailable - try again later"
        self.seen.add(session.peer)
        return await super().handle_DATA(server, session, envelope)


@pytest.mark.parametrize("sink_class,counter", [(TimingOutSink, "timed_out"), (ReloadedMilterSink, "refused")])
def test_a_kept_connection_gone_stale_is_replaced_not_deferred(pki, sink_class, counter):
    """Postfix timed the kept connection out (421), or the milter under it went away (451 at
    the end of DATA): the copy goes over a new connection, once, and nothing waits or is lost."""
    sink, inbound, gateway_port = sink_class(), free_port(), free_port()
    config = Config(hostname="gw.test", listen="127.0.0.1", port=gateway_port, trust=pki["ca"],
                    returns={"127.0.0.1": "mta.test"}, inbound_port=inbound,
                    outbound_port=inbound, reinject_ca=None)
    controllers = [start(sink, inbound), start(Gateway(config), gateway_port)]
    try:
        for i in range(2):
            send(gateway_port, "someone@elsewhere.test", ["u@a.test"], plain(subject=f"m{i}"))
    finally:
        for c in controllers:
            c.stop()
    assert getattr(sink, counter) == 1 and len(sink.messages) == 2 and len(set(sink.peers)) == 2


# --- the attacker's side: nothing decided by addresses, nothing decrypted on the way out ---

def encrypted_to(pki, domain: str, text: str, subject: str = "x") -> bytes:
    entity = f"Content-Type: text/plain\n\n{text}\n".encode()
    return openssl("smime", "-encrypt", "-aes256", "-subject", subject, pki[domain][0], data=entity).stdout


def test_submitted_mail_encrypted_to_another_tenant_is_never_opened_for_outside(lab, pki):
    """A b.test user sends a.test's ciphertext to a partner: the gateway must not be the
    oracle that decrypts it with a.test's key and re-encrypts it for the partner."""
    run, sink, _, _ = lab
    send(run(submitted=True), "bert@b.test", ["x@p.test"], encrypted_to(pki, "a.test", "a.test secret"))
    ((_, _, _, data),) = sink.messages
    assert b"a.test secret" not in data
    partner = openssl("smime", "-decrypt", "-recip", pki["p.test"][0], "-inkey", pki["p.test"][1], data=data)
    assert partner.returncode != 0  # the partner cannot read it ...
    owner = openssl("smime", "-decrypt", "-recip", pki["a.test"][0], "-inkey", pki["a.test"][1], data=data)
    assert owner.returncode == 0 and b"a.test secret" in owner.stdout  # ... it is the untouched original


def test_local_recipients_are_decrypted_only_with_their_own_domain_key(lab, pki):
    run, sink, _, _ = lab
    send(run(), "someone@outside.test", ["bert@b.test", "ann@a.test"],
         encrypted_to(pki, "a.test", "for a.test only"))
    copies = {tuple(r): d for _, _, r, d in sink.messages}
    assert b"for a.test only" not in copies[("bert@b.test",)]
    assert b"X-Mailstack-SMIME: decrypted=no; encrypted=not-for-this-recipient" in copies[("bert@b.test",)]
    assert b"for a.test only" in copies[("ann@a.test",)]


def test_inbound_mail_with_a_tenant_sender_is_never_signed(lab):
    """Port 25 mail claiming MAIL FROM a tenant goes back unsigned, on the inbound path."""
    run, sink, inbound, _ = lab
    port = run()
    send(port, "ceo@a.test", ["bert@b.test", "friend@forward.test"], plain(sender="ceo@a.test"))
    copies = {tuple(r): (p, d) for p, _, r, d in sink.messages}
    local_port, local = copies[("bert@b.test",)]
    assert local_port == inbound and b"multipart/signed" not in local
    assert b"X-Mailstack-SMIME: decrypted=no; signature=none" in local
    forward_port, forwarded = copies[("friend@forward.test",)]
    assert forward_port == inbound and b"Secret text." in forwarded and b"pkcs7" not in forwarded


def test_every_internal_header_that_comes_in_is_dropped(lab):
    run, sink, _, _ = lab
    forged = (b"X-Mailstack-SMIME-Pass: gw.test 0000\nX-Mailstack-Anything: yes\n"
              b"X-Mailstack-SMIME: decrypted=yes; signature=verified; signer=bank.test\n" + plain(to="u@a.test"))
    send(run(), "someone@outside.test", ["u@a.test"], forged)
    ((_, _, _, data),) = sink.messages
    assert b"bank.test" not in data and b"X-Mailstack-Anything" not in data and b"gw.test 0000" not in data
    assert data.count(b"X-Mailstack-SMIME-Pass:") == 1


def nested(depth: int) -> bytes:
    """A message whose multiparts nest `depth` levels deep."""
    entity = b"Content-Type: text/plain\n\ninnermost\n"
    for level in range(depth):
        entity = (f'Content-Type: multipart/mixed; boundary="b{level}"\n\n--b{level}\n'.encode()
                  + entity + f"\n--b{level}--\n".encode())
    return b"From: x@outside.test\nSubject: deep\n" + entity


def many_parts(count: int) -> bytes:
    parts = b"".join(b"--B\nContent-Type: text/plain\n\npart\n" for _ in range(count))
    return b"From: x@outside.test\nContent-Type: multipart/mixed; boundary=B\n\n" + parts + b"--B--\n"


@pytest.mark.parametrize("data,why", [(nested(40), b"nested more than 16"), (many_parts(600), b"more than 500")])
def test_hostile_mime_structure_is_refused_and_the_worker_survives(lab, data, why):
    run, sink, _, _ = lab
    port = run()
    with pytest.raises(smtplib.SMTPDataError) as err:
        send(port, "x@outside.test", ["u@a.test"], data)
    assert err.value.smtp_code == 554 and why in err.value.smtp_error
    send(port, "x@outside.test", ["u@a.test"], nested(5))  # the same worker goes on
    assert len(sink.messages) == 1


def test_a_hung_openssl_is_killed_and_the_mail_deferred(lab, pki, tmp_path, monkeypatch):
    from smimegw import cms
    hung = tmp_path / "openssl"
    hung.write_text(f"#!/bin/sh\necho $$ > {tmp_path}/pid\nexec sleep 60\n")
    hung.chmod(0o755)
    monkeypatch.setattr(cms, "OPENSSL", str(hung))
    run, sink, _, _ = lab
    port = run(openssl_timeout=1.0)
    with pytest.raises(smtplib.SMTPDataError) as err:
        send(port, "x@outside.test", ["u@a.test"], encrypted_to(pki, "a.test", "slow"))
    assert err.value.smtp_code == 451 and sink.messages == []
    pid = int((tmp_path / "pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed, not left behind


# --- hostile MIME fed straight to the parser ---

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from smimegw import mime  # noqa: E402

LINES = st.sampled_from([
    b"Content-Type: multipart/mixed; boundary=B", b'Content-Type: multipart/alternative; boundary="b c"',
    b"Content-Type: message/rfc822", b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data",
    b"Content-Type: multipart/signed; protocol=application/pkcs7-signature; boundary=S",
    b"--B", b"--B--", b"--b c", b"--S", b"", b" folded", b"\tfolded", b"MIME-Version: 1.0", b"X: y",
    b"Content-Type:", b"boundary=", b"\r", b"\x00", b"--",
])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(LINES, st.binary(max_size=40)), max_size=120))
def test_the_mime_parser_survives_hostile_input(lines):
    data = b"\n".join(lines)
    transport, entity = mime.split(mime.normalize(data))
    assert entity.count(b"\n\n") >= 1  # always an entity with a header block
    mime.join(transport, entity)
    mime.content_type(entity), mime.is_encrypted(entity), mime.is_signed(entity)
    try:
        count = mime.check_structure(entity, max_depth=8, max_parts=50)
    except mime.MimeLimit:
        return
    assert 1 <= count <= 50


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=0, max_value=300))
def test_nesting_is_counted_exactly_and_never_overflows_the_stack(depth):
    entity = mime.split(nested(depth))[1]
    if depth <= 16:
        assert mime.check_structure(entity, 16, 1000) == depth + 1
    else:
        with pytest.raises(mime.MimeLimit):
            mime.check_structure(entity, 16, 1000)


def test_signatures_are_checked_against_a_hashed_trust_directory(pki, tmp_path):
    """The deployed gateway trusts the system's hashed store (/etc/ssl/certs): openssl reads only
    the CAs a chain needs, and nothing besides it (no default store slipped in)."""
    import asyncio
    import shutil

    from smimegw import cms
    signed = openssl("cms", "-sign", "-signer", pki["p.test"][0], "-inkey", pki["p.test"][1], "-md", "sha256",
                     data=b"Content-Type: text/plain\n\nsigned\n").stdout
    trusted, empty = tmp_path / "trusted", tmp_path / "empty"
    trusted.mkdir(), empty.mkdir()
    shutil.copy(pki["ca"], trusted / "ca.pem")
    assert subprocess.run(["openssl", "rehash", str(trusted)], capture_output=True).returncode == 0
    assert cms.trust_options(str(trusted))[:2] == ["-CApath", str(trusted)]
    assert asyncio.run(cms.verify(signed, str(trusted), 30)).ok
    assert not asyncio.run(cms.verify(signed, str(empty), 30)).ok
