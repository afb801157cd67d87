"""TLS on every mail port: chains to the CA the certificates come from, matches the name, TLS 1.2+ only;
each name gets the certificate that carries it (the lab splits mail's names into several)."""

import smtplib
import socket
import ssl
import subprocess

import pytest
from cryptography import x509
from helpers import NamedContext, named_context
from labenv import PLANS

CERTIFICATES = PLANS["mail"].certificates  # mail's own first, then those served by the name asked

# port -> how TLS starts there (None = implicit TLS)
MAIL_PORTS = {25: "smtp", 587: "smtp", 465: None, 143: "imap", 993: None, 110: "pop3", 995: None}


def handshake(address: str, port: int, starttls: str | None, ca_file: str, name: str) -> str:
    """TLS version negotiated with full verification (CA chain + host name)."""
    return session(address, port, starttls, named_context(ca_file, name))[0]


def session(address: str, port: int, starttls: str | None, context) -> tuple[str, bytes]:
    """(TLS version, the server's certificate in DER) of a handshake with `context`."""
    if starttls == "smtp":
        with smtplib.SMTP(address, port, timeout=30) as client:
            client.starttls(context=context)
            return client.sock.version(), client.sock.getpeercert(binary_form=True)
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
        return tls.version(), tls.getpeercert(binary_form=True)


def carried(der: bytes) -> list[str]:
    """The names a certificate carries."""
    return sorted(x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName))


def unverified(name: str | None) -> NamedContext:
    """A client that asks for `name` (SNI; None: for none) and takes any certificate."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return NamedContext(context, name)


@pytest.mark.parametrize("port", sorted(MAIL_PORTS))
def test_each_name_gets_the_certificate_that_carries_it(port, addr, ca_file):
    """A client of a tenant asks for its domain's name (SNI) and verifies it: every mail port
    answers with the one of mail's certificates that carries the name, with that group's names
    only (its first and last name are asked)."""
    assert len(CERTIFICATES) > 1, "the lab inventory no longer splits mail's names into several certificates"
    for names in CERTIFICATES:
        for name in (names[0], names[-1]):
            _, der = session(addr["mail"], port, MAIL_PORTS[port], named_context(ca_file, name))
            assert carried(der) == sorted(names), (port, name)


def test_each_web_name_gets_the_certificate_that_carries_it(addr, ca_file):
    """The same on 443, for the sites (autoconfig, MTA-STS) and webmail of every domain."""
    asked = 0
    for names in CERTIFICATES:
        for name in (n for n in names if n.split(".")[0] in ("autoconfig", "mta-sts", "webmail")):
            _, der = session(addr["mail"], 443, None, named_context(ca_file, name))
            assert carried(der) == sorted(names), name
            asked += 1
    assert asked >= 10


@pytest.mark.parametrize("name", ["imap.not-a-tenant.test", None])
def test_a_client_asking_for_no_name_of_the_platform_gets_the_hosts_own_certificate(name, addr):
    """A client that asks for a name the platform does not serve, or for none (an old client,
    a scanner): the host's own certificate, never one that lists the tenants'."""
    for port in sorted(MAIL_PORTS):
        _, der = session(addr["mail"], port, MAIL_PORTS[port], unverified(name))
        assert carried(der) == sorted(CERTIFICATES[0]), port


def test_no_file_a_daemon_reads_for_its_certificates_holds_the_key_but_the_root_only_one(mail):
    """The certificates served by name share the host's key: it stays in one root-only file,
    never copied beside them or into a daemon's map."""
    found = mail.check_output("grep -rlE 'PRIVATE KEY' /etc/mailstack/tls /etc/postfix /etc/dovecot /etc/nginx "
                              "|| true").split()
    assert found == ["/etc/mailstack/tls/key.pem"]
    assert mail.file("/etc/mailstack/tls/key.pem").mode == 0o600
    assert mail.file("/etc/mailstack/tls/key.pem").user == "root"


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
