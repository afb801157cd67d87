"""TLS on every mail port: chains to the CA the certificates come from, matches the name, TLS 1.2+ only."""

import smtplib
import socket
import subprocess

import pytest
from helpers import named_context

# port -> how TLS starts there (None = implicit TLS)
MAIL_PORTS = {25: "smtp", 587: "smtp", 465: None, 143: "imap", 993: None, 110: "pop3", 995: None}


def handshake(address: str, port: int, starttls: str | None, ca_file: str, name: str) -> str:
    """TLS version negotiated with full verification (CA chain + host name)."""
    context = named_context(ca_file, name)
    if starttls == "smtp":
        with smtplib.SMTP(address, port, timeout=30) as client:
            client.starttls(context=context)
            return client.sock.version()
    sock = socket.create_connection((address, port), timeout=30)
    if starttls == "imap":
        sock.recv(1024)
        sock.sendall(b"a STARTTLS\r\n")
        assert b"a OK" in sock.recv(1024)
    elif starttls == "pop3":
        sock.recv(1024)
        sock.sendall(b"STLS\r\n")
        assert sock.recv(1024).startswith(b"+OK")
    with context.wrap_socket(sock) as tls:
        return tls.version()


@pytest.mark.parametrize("port", sorted(MAIL_PORTS))
def test_tls_chains_to_the_platform_ca_and_matches_name(port, addr, fqdn, ca_file):
    version = handshake(addr["mail"], port, MAIL_PORTS[port], ca_file, fqdn["mail"])
    assert version in ("TLSv1.2", "TLSv1.3")


def test_certificate_for_another_name_is_rejected(addr, ca_file):
    with pytest.raises(Exception, match="certificate verify failed|Hostname mismatch"):
        handshake(addr["mail"], 993, None, ca_file, "not-this-host.lab.test")


def openssl(address: str, port: int, starttls: str | None, version_flag: str, ca_file: str,
            name: str) -> subprocess.CompletedProcess:
    cmd = ["openssl", "s_client", "-connect", f"{address}:{port}", version_flag,
           "-cipher", "DEFAULT@SECLEVEL=0", "-CAfile", ca_file, "-verify_return_error",
           "-verify_hostname", name, "-servername", name]
    if starttls:
        cmd += ["-starttls", starttls]
    return subprocess.run(cmd, input="", capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("port", sorted(MAIL_PORTS))
@pytest.mark.parametrize("old", ["-tls1", "-tls1_1"])
def test_old_tls_versions_are_refused(port, old, addr, fqdn, ca_file):
    args = (addr["mail"], port, MAIL_PORTS[port])
    modern = openssl(*args, "-tls1_2", ca_file, fqdn["mail"])
    assert modern.returncode == 0 and "Protocol  : TLSv1.2" in modern.stdout  # the control
    refused = openssl(*args, old, ca_file, fqdn["mail"])
    assert refused.returncode != 0
    assert "Cipher is (NONE)" in refused.stdout or "Cipher is" not in refused.stdout
