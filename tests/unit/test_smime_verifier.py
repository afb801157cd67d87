"""The first-pass signature check (smimegw.verifier) over real HTTP on loopback, with mail
signed by `openssl cms` as a partner's client signs it, against the gateway's own verdict."""

from __future__ import annotations

import asyncio
import http.client
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailstack.secrets import issue, new_ca
from smimegw import cms, mime, verifier
from smimegw.gateway import verdict

PEM = serialization.Encoding.PEM


def openssl(*args: str, data: bytes) -> bytes:
    return subprocess.run(["openssl", *args], input=data, capture_output=True, check=True).stdout


def certificate(base, ca, ca_key, domain: str) -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (base / f"{domain}.pem").write_bytes(issue(ca, ca_key, key, [domain], "smime").public_bytes(PEM))
    (base / f"{domain}.key").write_bytes(key.private_bytes(PEM, serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    return str(base / f"{domain}.pem"), str(base / f"{domain}.key")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A trusted CA (in a hashed directory) with partner p.test, and a CA nobody trusts with
    forger f.test."""
    base = tmp_path_factory.mktemp("pki")
    ca, ca_key = new_ca("trusted CA", days=2)
    rogue, rogue_key = new_ca("rogue CA", days=2)
    trust = base / "trust"
    trust.mkdir()
    (trust / "ca.pem").write_bytes(ca.public_bytes(PEM))
    subprocess.run(["openssl", "rehash", str(trust)], check=True, capture_output=True)
    return {"trust": str(trust), "p.test": certificate(base, ca, ca_key, "p.test"),
            "f.test": certificate(base, rogue, rogue_key, "f.test")}


def signed(pki, domain: str, text: str) -> bytes:
    cert, key = pki[domain]
    entity = f"Content-Type: text/plain; charset=utf-8\n\n{text}\n".encode()
    return openssl("cms", "-sign", "-signer", cert, "-inkey", key, "-md", "sha256", "-from", f"x@{domain}",
                   "-to", "u@a.test", "-subject", "signed", data=entity).replace(b"\r\n", b"\n")


@pytest.fixture(scope="module")
def server(pki):
    """The verifier on a free loopback port, as the unit runs it (a thread here)."""
    settings = verifier.Settings(listen="127.0.0.1", port=0, trust=pki["trust"], timeout=30,
                                 max_message_size=1024 * 1024, max_mime_depth=4, max_mime_parts=20)
    loop = asyncio.new_event_loop()
    started = loop.run_until_complete(asyncio.start_server(
        lambda r, w: verifier.serve_connection(settings, r, w), "127.0.0.1", 0, limit=verifier.HEAD_LIMIT))
    threading.Thread(target=loop.run_forever, daemon=True).start()
    yield started.sockets[0].getsockname()[1]
    loop.call_soon_threadsafe(loop.stop)


def post(port: int, body: bytes, path: str = "/verify", connection=None) -> tuple[int, str]:
    client = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    client.request("POST", path, body, {"Content-Type": "message/rfc822"})
    answer = client.getresponse()
    return answer.status, answer.read().decode()


def test_the_verifier_says_what_the_gateway_says(server, pki):
    message = signed(pki, "p.test", "from the partner")
    assert post(server, message) == (200, "decrypted=no; signature=verified; signer=p.test")
    entity = mime.split(mime.normalize(message))[1]
    assert asyncio.run(verdict(entity, False, pki["trust"], 30)).decode() == post(server, message)[1]


def test_the_verifier_marks_changed_or_untrusted_signatures_invalid(server, pki):
    changed = signed(pki, "p.test", "pay 10 EUR").replace(b"pay 10 EUR", b"pay 9000 EUR")
    status, text = post(server, changed)
    assert status == 200 and text.startswith("decrypted=no; signature=INVALID; signer=unknown; reason=")
    status, text = post(server, signed(pki, "f.test", "from a CA nobody trusts"))
    assert status == 200 and text.startswith("decrypted=no; signature=INVALID;")
    assert post(server, b"Subject: plain\n\nno signature\n") == (200, "decrypted=no; signature=none")


def test_the_verifier_refuses_what_the_gateway_refuses(server, pki):
    deep = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n" % (i, i) for i in range(8)) + b"x\n"
    status, text = post(server, deep)
    assert status == 422 and "the S/MIME gateway does not process it" in text
    with socket.create_connection(("127.0.0.1", server), timeout=30) as oversize:  # refused before any body
        oversize.sendall(b"POST /verify HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (1024 * 1024 + 1))
        assert oversize.recv(100).startswith(b"HTTP/1.1 413 ")
    assert post(server, b"x", path="/other")[0] == 404


def test_the_verifier_keeps_a_connection_for_many_checks(server, pki):
    connection = http.client.HTTPConnection("127.0.0.1", server, timeout=30)
    message = signed(pki, "p.test", "one of many")
    assert [post(server, message, connection=connection)[0] for _ in range(5)] == [200] * 5


def test_a_ca_added_to_the_trust_directory_counts_without_a_restart(pki, tmp_path):
    """The trusted CAs are kept in memory between checks, and read again when the directory
    changes: a CA the next deploy adds is believed at once, one it removes is not."""
    trust = tmp_path / "trust"
    trust.mkdir()
    message = signed(pki, "p.test", "signed before the CA is trusted")
    assert not asyncio.run(cms.verify(message, str(trust), 30)).ok
    time.sleep(0.01)  # a new mtime, whatever the file system's resolution
    shutil.copy(os.path.join(pki["trust"], "ca.pem"), trust / "ca.pem")
    subprocess.run(["openssl", "rehash", str(trust)], check=True, capture_output=True)
    assert asyncio.run(cms.verify(message, str(trust), 30)).ok
    for name in os.listdir(trust):
        os.unlink(trust / name)
    assert not asyncio.run(cms.verify(message, str(trust), 30)).ok


def test_the_signature_check_runs_in_process(pki, monkeypatch):
    """No process per signature: with no openssl to start, checks still decide."""
    monkeypatch.setattr(cms, "OPENSSL", "/nonexistent/openssl")
    result = asyncio.run(cms.verify(signed(pki, "p.test", "in process"), pki["trust"], 30))
    assert result.ok and b"BEGIN CERTIFICATE" in result.signer_pem
