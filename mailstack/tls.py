"""The platform's TLS conventions, shared by every component that speaks TLS: where a host's
certificate, key and trusted CAs live, the ciphers, and the settings templates use. The `tls`
component (deploys/tls/) puts the files there; the others only refer to them."""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mailstack.secrets import host_certificate, host_key, lab_ca

TLS_DIR = "/etc/mailstack/tls"
CERT = f"{TLS_DIR}/cert.pem"
KEY = f"{TLS_DIR}/key.pem"
CA = f"{TLS_DIR}/ca.pem"
# what a host trusts when it checks another platform host: the system's store, which holds
# the platform CA too (lab-ca) or the public CAs of the operator's certificates (files)
TRUST = "/etc/ssl/certs/ca-certificates.crt"
TRUST_DIR = "/etc/ssl/certs"  # the same store, hashed: a reader loads only the CAs a chain needs
# Mozilla "intermediate": TLS 1.2+, forward-secret AEAD ciphers only.
CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
           "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
           "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")


def local_files(plan) -> tuple[Path, Path, Path | None]:
    """(certificate, key, CA) on the control machine for this host."""
    inv = plan.inv
    if inv.tls["source"] == "lab-ca":
        cert, key = host_certificate(inv, plan.name, plan.certificate_names)
        return cert, key, lab_ca(inv)[0]
    entry = next(f for f in inv.tls["files"] if f["host"] == plan.name)
    return Path(entry["certificate"]).expanduser(), Path(entry["key"]).expanduser(), None


def key_digest(inv, host) -> str:
    """SHA-256 of the host's public key (SubjectPublicKeyInfo): what its TLSA 3 1 1 records
    pin. The key outlives certificate renewals (lab-ca keeps it; with `files`, renew keeping
    the key, or publish the new key's records before the switch)."""
    if inv.tls["source"] == "files":
        entry = next(f for f in inv.tls["files"] if f["host"] == host.name)
        public = x509.load_pem_x509_certificate(Path(entry["certificate"]).expanduser().read_bytes()).public_key()
    else:
        path = host_key(inv, host.name)
        public = serialization.load_pem_private_key(path.read_bytes(), None).public_key()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def context(plan) -> dict:
    """TLS settings every service template uses; the fingerprint changes with the
    certificate, so services that embed it restart on renewal."""
    cert, _, _ = local_files(plan)
    return {"tls_cert": CERT, "tls_key": KEY, "tls_ca": TRUST, "tls_ciphers": CIPHERS,
            "tls_min_version": plan.inv.tls["min_version"],
            "tls_fingerprint": hashlib.sha256(cert.read_bytes()).hexdigest()[:16]}
