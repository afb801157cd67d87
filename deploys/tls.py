"""Every host: its certificate and key, and trust in the platform CA.

`lab-ca` issues from a CA kept in the secrets directory; `files` installs the
operator's files; `acme` is reserved in the schema and refused here until built.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pyinfra.api import deploy as pyinfra_deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import files, server

from deploys.common import install, inventory, put_secret, this_host
from mailstack.dns import service_names
from mailstack.secrets import host_certificate, lab_ca

PACKAGES = ("openssl", "ca-certificates")
TLS_DIR = "/etc/mailstack/tls"
CERT = f"{TLS_DIR}/cert.pem"
KEY = f"{TLS_DIR}/key.pem"
CA = f"{TLS_DIR}/ca.pem"
# Mozilla "intermediate": TLS 1.2+, forward-secret AEAD ciphers only.
CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
           "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
           "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")


def local_files() -> tuple[Path, Path, Path | None]:
    """(certificate, key, CA) on the control machine for this host."""
    inv, me = inventory(), this_host()
    source = inv.tls["source"]
    if source == "lab-ca":
        cert, key = host_certificate(inv, me.name, service_names(inv, me))
        return cert, key, lab_ca(inv)[0]
    if source == "files":
        entry = next(f for f in inv.tls["files"] if f["host"] == me.name)
        return Path(entry["certificate"]).expanduser(), Path(entry["key"]).expanduser(), None
    raise DeployError("tls.source 'acme' is not available yet; use 'lab-ca' or 'files'")


def fingerprint() -> str:
    """Changes whenever the certificate does: services embed it to restart on renewal."""
    cert, _, _ = local_files()
    return hashlib.sha256(cert.read_bytes()).hexdigest()[:16]


def context() -> dict:
    """TLS settings every service template uses."""
    return {"tls_cert": CERT, "tls_key": KEY, "tls_ca": CA, "tls_ciphers": CIPHERS,
            "tls_min_version": inventory().tls["min_version"], "tls_fingerprint": fingerprint()}


@pyinfra_deploy("mailstack tls")
def deploy() -> None:
    install("TLS", PACKAGES)
    cert, key, ca = local_files()
    files.directory(name=TLS_DIR, path=TLS_DIR, mode="0755")
    files.put(name="Host certificate", src=str(cert), dest=CERT, mode="0644")
    put_secret("Host key", KEY, src=key)
    if ca is not None:
        files.put(name="Platform CA certificate", src=str(ca), dest=CA, mode="0644")
        trust = files.put(name="Trust the platform CA", src=str(ca),
                          dest="/usr/local/share/ca-certificates/mailstack-ca.crt", mode="0644")
        server.shell(name="Update the CA store", commands=["update-ca-certificates"],
                     _if=trust.did_change)
