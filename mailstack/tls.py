"""The platform's TLS conventions, shared by every component that speaks TLS: where a host's
certificate, key and trusted CAs live, the ciphers, and the settings templates use. The `tls`
component (deploys/tls/) puts the files there; the others only refer to them."""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mailstack.component import File
from mailstack.conventions import ACME_CA_ROLE
from mailstack.secrets import host_certificate, host_key, lab_acme_roots, lab_ca, secrets_dir, sni_certificate

TLS_DIR = "/etc/mailstack/tls"
CERT = f"{TLS_DIR}/cert.pem"
KEY = f"{TLS_DIR}/key.pem"
# the host's other certificates (see `grouped`), each in a file named after its first name
SNI_DIR = f"{TLS_DIR}/sni"
# which file carries which names: a line a certificate, "path name name ...", the host's own first
CERTIFICATES = f"{TLS_DIR}/certificates"
CA = f"{TLS_DIR}/ca.pem"
# what a host trusts when it checks another platform host: the system's store, which holds
# the platform CA too (lab-ca) or the public CAs of the operator's certificates (files)
TRUST = "/etc/ssl/certs/ca-certificates.crt"
TRUST_DIR = "/etc/ssl/certs"  # the same store, hashed: a reader loads only the CAs a chain needs
MAX_ROOTS = 8  # how many roots `tls.acme_roots` may hold
LAB_ACME_ROOTS = 4  # how many roots of its own ACME CA a lab keeps (the newest: earlier certificates chain to them)
# Mozilla "intermediate": TLS 1.2+, forward-secret AEAD ciphers only.
CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
           "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
           "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")


def source(inv, host) -> str:
    """Where this host's certificate comes from: `tls.source`, except that a lab's hosts that
    play the outside world keep the lab CA when the platform's come by ACME."""
    wanted = inv.tls["source"]
    return "lab-ca" if wanted == "acme" and host.outside else wanted


def lab_ca_issues(source_setting: str, lab: bool) -> bool:
    """Whether the lab CA issues anything (server certificates, S/MIME test certificates): with
    `lab-ca`, and in a lab whose platform gets ACME certificates (its outside hosts keep it)."""
    return source_setting == "lab-ca" or (lab and source_setting == "acme")


def by_acme(plan) -> bool:
    """Whether the host gets (and renews) its certificate itself, by ACME."""
    return source(plan.inv, plan.host) == "acme"


def lab_acme_ca(inv) -> bool:
    """Whether the platform gets its certificates from the lab's own ACME CA (an `acme_ca`
    host), whose roots the lab keeps itself (`secrets.lab_acme_roots`)."""
    return inv.platform["lab"] and inv.tls["source"] == "acme" and bool(inv.hosts_with(ACME_CA_ROLE))


def trusted(inv) -> list[Path]:
    """CA certificates on this machine every host adds to its trust store: the lab CA where
    some host's certificate comes from it, the ACME CA's roots the inventory names, and the
    roots of the lab's own ACME CA once the lab has fetched them."""
    found = [lab_ca(inv)[0]] if lab_ca_issues(inv.tls["source"], inv.platform["lab"]) else []
    if inv.tls.get("acme_roots"):
        found.append(Path(inv.tls["acme_roots"]).expanduser())
    if lab_acme_ca(inv) and lab_acme_roots(inv).is_file():
        found.append(lab_acme_roots(inv))
    return found


def pem_blocks(text: str) -> list[str]:
    """The certificates of a PEM text, each from BEGIN to END."""
    return re.findall(r"-----BEGIN CERTIFICATE-----\n.*?-----END CERTIFICATE-----", text, re.S)


def trusted_certificates(inv) -> list[str]:
    """Each certificate of the `trusted` files (PEM), in their order."""
    return [block for path in trusted(inv) for block in pem_blocks(path.read_text())]


def trusted_file(inv) -> Path:
    """Every CA of `trusted` in one PEM file on this machine (rewritten at each call): what a
    client here (the tests, the benches, an operator's openssl) verifies the platform with."""
    path = secrets_dir(inv) / "trusted.pem"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(block + "\n" for block in trusted_certificates(inv)))
    return path


def own_copy(plan, unit: str, directory: str, **owner) -> tuple[tuple[File, ...], str, str]:
    """(files, certificate, key) for the daemon of `unit`, which runs as its own user: its own
    copy of the host's certificate and key in `directory` (a new one from this machine rewrites
    it and restarts the daemon); or, where the host renews its certificate itself (ACME),
    systemd hands the daemon the host's files at each start (LoadCredential), so no copy falls
    behind a renewal. (Credentials need a host that lets systemd mount: not Vagrant's docker
    provider, which the lab runs with lab-ca.)"""
    if by_acme(plan):
        base = f"/run/credentials/{unit}.service"
        dropin = File.text(f"/etc/systemd/system/{unit}.service.d/mailstack-certificate.conf",
                           f"# Managed by mailstack: the host's certificate ({context(plan)['tls_fingerprint']})\n"
                           f"[Service]\nLoadCredential=cert.pem:{CERT}\nLoadCredential=key.pem:{KEY}\n")
        return (dropin,), f"{base}/cert.pem", f"{base}/key.pem"
    cert, key, _ = local_files(plan)
    return ((File.copy(f"{directory}/cert.pem", cert, **owner),
             File.copy(f"{directory}/key.pem", key, mode="0600", secret=True, **owner)),
            f"{directory}/cert.pem", f"{directory}/key.pem")


def grouped(inv, host, names) -> tuple[tuple[str, ...], ...]:
    """The host's names (its FQDN first) as certificates of at most `tls.names_per_certificate`
    names. The first, the host's own, begins with the FQDN and the names of no domain; then each
    domain's names stay together, in the inventory's order, filling a certificate before the
    next begins (so a domain added at the end leaves the others' certificates as they are).
    The operator's files are one certificate."""
    names = list(names)
    if source(inv, host) == "files":
        return (tuple(names),)
    domains = {d.name: [] for d in inv.domains}
    units = [[names[0]]]
    for name in names[1:]:
        labels = name.split(".")
        owner = next((".".join(labels[i:]) for i in range(len(labels)) if ".".join(labels[i:]) in domains), None)
        if owner is None:
            units.append([name])
        else:
            domains[owner].append(name)
    certificates, current = [], []
    for unit in [*units, *(found for found in domains.values() if found)]:
        if current and len(current) + len(unit) > inv.tls["names_per_certificate"]:
            certificates.append(tuple(current))
            current = []
        current += unit
    return (*certificates, tuple(current))


def certificate_files(plan) -> list[tuple[str, tuple[str, ...]]]:
    """(path on the host, names) of each of the host's certificates, its own (CERT) first."""
    return _files(plan.certificates)


@functools.cache
def _files(certificates: tuple[tuple[str, ...], ...]) -> list[tuple[str, tuple[str, ...]]]:
    return [(CERT if i == 0 else f"{SNI_DIR}/{names[0]}.pem", names) for i, names in enumerate(certificates)]


@functools.cache
def _file_of(certificates: tuple[tuple[str, ...], ...]) -> dict[str, str]:
    """name -> the file of the certificate that carries it (a provider's host asks thousands)."""
    return {name: path for path, names in _files(certificates) for name in names}


def certificate_list(plan) -> str:
    """CERTIFICATES' text."""
    return "".join(f"{path} {' '.join(names)}\n" for path, names in certificate_files(plan))


def sni(plan) -> list[dict]:
    """The certificates beyond the host's own, as templates use them: their names and file."""
    return [{"names": names, "cert": path} for path, names in certificate_files(plan)[1:]]


def certificate_of(plan, name: str) -> str:
    """The file of the host's certificate that carries `name` (its own if none does)."""
    return _file_of(plan.certificates).get(name, CERT)


def by_certificate(plan, names) -> list[dict]:
    """`names` grouped by the file of the certificate that carries them, for a server block
    each: [{"names": "name name ...", "cert": path}], in the order the certificates come."""
    found: dict[str, list[str]] = {}
    for name in names:
        found.setdefault(certificate_of(plan, name), []).append(name)
    return [{"names": " ".join(found[path]), "cert": path} for path, _ in certificate_files(plan) if path in found]


def readers(*units: str):
    """What a component adds at `tls.readers`: its daemons that serve the host's certificate."""
    return lambda inv, host: list(units)


def local_files(plan) -> tuple[Path, Path, Path | None]:
    """(certificate, key, CA) on the control machine for this host (not for ACME's hosts,
    whose certificates are made on the hosts themselves)."""
    inv = plan.inv
    if source(inv, plan.host) == "lab-ca":
        cert, key = host_certificate(inv, plan.name, plan.certificates[0])
        return cert, key, lab_ca(inv)[0]
    entry = next(f for f in inv.tls["files"] if f["host"] == plan.name)
    return Path(entry["certificate"]).expanduser(), Path(entry["key"]).expanduser(), None


def local_sni_files(plan) -> list[tuple[str, Path]]:
    """(path on the host, file on the control machine) of each certificate beyond the host's
    own, from the lab CA (ACME's hosts fetch theirs; `files` has one a host)."""
    if source(plan.inv, plan.host) != "lab-ca":
        return []
    return [(path, sni_certificate(plan.inv, plan.name, names)) for path, names in certificate_files(plan)[1:]]


def key_digest(inv, host) -> str:
    """SHA-256 of the host's public key (SubjectPublicKeyInfo): what its TLSA 3 1 1 records
    pin. The key outlives certificate renewals (lab-ca keeps it; with `files`, renew keeping
    the key, or publish the new key's records before the switch)."""
    if source(inv, host) == "files":
        entry = next(f for f in inv.tls["files"] if f["host"] == host.name)
        public = x509.load_pem_x509_certificate(Path(entry["certificate"]).expanduser().read_bytes()).public_key()
    else:
        path = host_key(inv, host.name)
        public = serialization.load_pem_private_key(path.read_bytes(), None).public_key()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def nginx_protocols(inv) -> str:
    """nginx's `ssl_protocols` for the inventory's minimum version."""
    return "TLSv1.3" if inv.tls["min_version"] == "TLSv1.3" else "TLSv1.2 TLSv1.3"


def context(plan) -> dict:
    """TLS settings every service template uses (`tls_sni`: the certificates beyond the host's
    own, which a daemon serves by the name asked); the fingerprint changes with the
    certificates, so services that embed it restart on renewal (an ACME host renews on its own
    and reloads them then: its fingerprint is the key's, which renewals keep)."""
    if by_acme(plan):
        fingerprint = "key " + key_digest(plan.inv, plan.host)[:16]
    else:
        digest = hashlib.sha256(local_files(plan)[0].read_bytes())
        for _, path in local_sni_files(plan):
            digest.update(path.read_bytes())
        fingerprint = digest.hexdigest()[:16]
    return {"tls_cert": CERT, "tls_key": KEY, "tls_ca": TRUST, "tls_ciphers": CIPHERS, "tls_sni": sni(plan),
            "tls_min_version": plan.inv.tls["min_version"], "tls_fingerprint": fingerprint}
