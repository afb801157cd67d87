"""Secrets made once on the control machine: lab CA, host certificates, DKIM keys.

Everything lives under `platform.secrets_dir`/PLATFORM, outside the repository,
private keys with mode 0600. Nothing here prints a key.
"""

from __future__ import annotations

import base64
import datetime
import fcntl
import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailstack.inventory import Inventory

CA_DAYS = 3650
CERT_DAYS = 397
RENEW_BEFORE = datetime.timedelta(days=30)


def secrets_dir(inv: Inventory) -> Path:
    path = Path(os.path.expanduser(inv.platform["secrets_dir"])) / inv.platform["name"]
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


_depth: dict[Path, int] = {}  # this process's hold on each secrets directory's lock
_reading_only = False  # after the secrets step: planning and rendering only read secrets


class SecretMissing(RuntimeError):
    """A secret was asked for after the secrets step, which did not make it."""


def reading_only(on: bool = True) -> None:
    """From now on (in this process) a secret that does not exist is an error, not made:
    the deploy's planning and rendering are pure once its secrets step ran."""
    global _reading_only
    _reading_only = on


@contextmanager
def _making(inv: Inventory, what: str = "the secrets") -> Iterator[None]:
    """Hold the secrets directory's lock while a secret is made: two deploys (or a test
    beside a deploy) never make one secret twice with two values. Re-entrant within a
    process (a certificate makes its CA); the secrets step holds it throughout."""
    if _reading_only:
        raise SecretMissing(f"{what} would have to be made while the deploy only reads secrets: "
                            "its secrets step (deploys.make_secrets) missed it")
    directory = secrets_dir(inv)
    if _depth.get(directory):
        _depth[directory] += 1
        try:
            yield
        finally:
            _depth[directory] -= 1
        return
    with open(directory / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        _depth[directory] = 1
        try:
            yield
        finally:
            _depth[directory] = 0


@contextmanager
def making_all(inv: Inventory) -> Iterator[None]:
    """The secrets step: hold the secrets directory's lock for the whole of it."""
    with _making(inv):
        yield


def _write_private(path: Path, data: bytes) -> None:
    """Write a private file whole or not at all (a reader never sees half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(partial, path)


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def new_ca(common_name: str, days: int = CA_DAYS):
    """A fresh CA: (certificate, private key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def lab_acme_roots(inv: Inventory) -> Path:
    """The roots of a lab's own ACME CA (Pebble on its `acme_ca` host makes a new one at each
    start), newest last: kept by `mailstack lab up` and `mailstack lab acme-roots`."""
    return secrets_dir(inv) / "acme-ca-roots.pem"


def lab_ca(inv: Inventory) -> tuple[Path, Path]:
    """The platform CA (certificate, key), created on first use."""
    directory = secrets_dir(inv) / "ca"
    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    with _making(inv, "the platform CA"):
        if not (cert_path.exists() and key_path.exists()):
            cert, key = new_ca(f"mailstack {inv.platform['name']} CA")
            _write_private(key_path, _pem_key(key))
            _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
            cert_path.chmod(0o644)
    return cert_path, key_path


def _current(cert_path: Path, names: list[str]) -> bool:
    if not cert_path.exists():
        return False
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    fresh = cert.not_valid_after_utc - _now() > RENEW_BEFORE
    return fresh and sorted(sans.get_values_for_type(x509.DNSName)) == sorted(names)


def issue(ca_cert: x509.Certificate, ca_key, key, names: list[str], usage: str) -> x509.Certificate:
    """A certificate for `names` signed by the CA: `usage` "server" (TLS) or "smime"."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
    )
    if usage == "smime":
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_encipherment=True, content_commitment=True,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False,
                          crl_sign=False, encipher_only=False, decipher_only=False), critical=True,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _issued(inv: Inventory, directory: Path, names: list[str], usage: str, new_key,
            key_path: Path | None = None) -> tuple[Path, Path]:
    """cert.pem (with the CA appended) and key.pem (or `key_path`) in `directory`, issued by
    the lab CA; reissued only when the names change or it nears expiry (redeploys change nothing)."""
    cert_path, key_path = directory / "cert.pem", key_path or directory / "key.pem"
    if _current(cert_path, names) and key_path.exists():
        return cert_path, key_path
    with _making(inv, f"the certificate in {directory.name} for {', '.join(names)}"):
        if not (_current(cert_path, names) and key_path.exists()):
            _issue_into(inv, cert_path, key_path, names, usage, new_key)
    return cert_path, key_path


def _issue_into(inv: Inventory, cert_path: Path, key_path: Path, names: list[str], usage: str, new_key) -> None:
    """Issue the certificate (its key made first where there is none), under the lock."""
    ca_cert_path, ca_key_path = lab_ca(inv)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
    if key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    else:
        key = new_key()
        _write_private(key_path, _pem_key(key))
    cert = issue(ca_cert, ca_key, key, names, usage)
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM) + ca_cert_path.read_bytes())
    cert_path.chmod(0o644)


def host_key(inv: Inventory, host_name: str) -> Path:
    """A host's TLS key, made once and kept across reissues: the TLSA records that pin it
    stay true when the certificate is renewed."""
    path = secrets_dir(inv) / "hosts" / host_name / "key.pem"
    if not path.exists():
        with _making(inv, f"the TLS key of {host_name}"):
            if not path.exists():
                _write_private(path, _pem_key(ec.generate_private_key(ec.SECP256R1())))
    return path


def host_certificate(inv: Inventory, host_name: str, names: list[str]) -> tuple[Path, Path]:
    """TLS certificate and key of a host for `names` (its FQDN first)."""
    host_key(inv, host_name)
    return _issued(inv, secrets_dir(inv) / "hosts" / host_name, names, "server", None)


def sni_certificate(inv: Inventory, host_name: str, names: list[str]) -> Path:
    """Another TLS certificate of a host, for `names` (served by SNI), with the host's key."""
    return _issued(inv, secrets_dir(inv) / "hosts" / host_name / "sni" / names[0], names, "server", None,
                   host_key(inv, host_name))[0]


def domain_certificate(inv: Inventory, domain: str) -> tuple[Path, Path]:
    """S/MIME domain certificate and key (RSA, for signing and key transport)."""
    return _issued(inv, secrets_dir(inv) / "smime" / domain, [domain], "smime",
                   lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048))


def dkim_key(inv: Inventory, domain: str, selector: str, bits: int) -> Path:
    """The DKIM private key of a domain and selector, generated once."""
    path = secrets_dir(inv) / "dkim" / f"{domain}.{selector}.key"
    if not path.exists():
        with _making(inv, f"the DKIM key {path.name}"):
            if not path.exists():
                _write_private(path, _pem_key(rsa.generate_private_key(public_exponent=65537, key_size=bits)))
    return path


def password(inv: Inventory, name: str) -> str:
    """A random service password (Redis, rspamd controller), generated once and kept
    with the other secrets; never printed."""
    path = secrets_dir(inv) / "passwords" / name
    if not path.exists():
        with _making(inv, f"the password {name}"):
            if not path.exists():
                _write_private(path, base64.urlsafe_b64encode(os.urandom(24)).rstrip(b"=") + b"\n")
    return path.read_text().strip()


def dkim_public_record(key_path: Path) -> str:
    """The TXT value that publishes the public half of a DKIM key."""
    state = key_path.stat()
    return _public_record(key_path, state.st_mtime_ns, state.st_size)


@functools.cache
def _public_record(key_path: Path, mtime_ns: int, size: int) -> str:
    # the key is mailstack's own, read from the secrets directory: its RSA consistency check
    # (some 30 ms a key, minutes for a thousand domains on every deploy) proves nothing here
    key = serialization.load_pem_private_key(key_path.read_bytes(), None, unsafe_skip_rsa_key_validation=True)
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
