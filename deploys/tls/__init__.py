"""Every host: its certificate and key, and trust in the platform CA.

`lab-ca` issues from a CA kept in the secrets directory; `files` installs the
operator's files (checked to exist by `mailstack check`)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pyinfra.operations import files

from mailstack.component import Component, File, Service, schema_fragment
from mailstack.inventory import Positions, Problem
from mailstack.plan import HostPlan
from mailstack.secrets import host_certificate, lab_ca

TLS_DIR = "/etc/mailstack/tls"
CERT = f"{TLS_DIR}/cert.pem"
KEY = f"{TLS_DIR}/key.pem"
CA = f"{TLS_DIR}/ca.pem"
# what a host trusts when it checks another platform host: the system's store, which holds
# the platform CA too (lab-ca) or the public CAs of the operator's certificates (files)
TRUST = "/etc/ssl/certs/ca-certificates.crt"
# Mozilla "intermediate": TLS 1.2+, forward-secret AEAD ciphers only.
CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
           "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
           "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")


def local_files(plan: HostPlan) -> tuple[Path, Path, Path | None]:
    """(certificate, key, CA) on the control machine for this host."""
    inv = plan.inv
    if inv.tls["source"] == "lab-ca":
        cert, key = host_certificate(inv, plan.name, plan.certificate_names)
        return cert, key, lab_ca(inv)[0]
    entry = next(f for f in inv.tls["files"] if f["host"] == plan.name)
    return Path(entry["certificate"]).expanduser(), Path(entry["key"]).expanduser(), None


def context(plan: HostPlan) -> dict:
    """TLS settings every service template uses; the fingerprint changes with the
    certificate, so services that embed it restart on renewal."""
    cert, _, _ = local_files(plan)
    return {"tls_cert": CERT, "tls_key": KEY, "tls_ca": TRUST, "tls_ciphers": CIPHERS,
            "tls_min_version": plan.inv.tls["min_version"],
            "tls_fingerprint": hashlib.sha256(cert.read_bytes()).hexdigest()[:16]}


def configure(plan: HostPlan) -> list[Service]:
    cert, key, ca = local_files(plan)
    services = [Service(None, (File.copy(CERT, cert), File.copy(KEY, key, mode="0600", secret=True)))]
    if ca is not None:
        services.append(Service(None, (File.copy(CA, ca),)))
        services.append(Service(None, (File.copy("/usr/local/share/ca-certificates/mailstack-ca.crt", ca),),
                                on_change="update-ca-certificates"))
    return services


def install(plan: HostPlan) -> None:
    files.directory(name=TLS_DIR, path=TLS_DIR, mode="0755")


def rules(data: dict, pos: Positions) -> list[Problem]:
    """Every host has a certificate the deploy can read on this machine."""
    problems = []
    tls = data["tls"]
    hosts = {h["name"] for h in data["hosts"]}
    covered = {f["host"] for f in tls["files"]}
    if tls["source"] == "files":
        for i, host in enumerate(data["hosts"]):
            if host["name"] not in covered:
                problems.append(pos.problem(("hosts", i, "name"), "tls.source is 'files' but "
                                            "tls.files has no certificate for this host"))
    for i, entry in enumerate(tls["files"]):
        if entry["host"] not in hosts:
            problems.append(pos.problem(("tls", "files", i, "host"),
                                        f"host {entry['host']!r} is not defined under hosts"))
        for key in ("certificate", "key"):
            if tls["source"] == "files" and not Path(entry[key]).expanduser().is_file():
                problems.append(pos.problem(("tls", "files", i, key), f"{entry[key]} is not a file on this "
                                            "machine; the deploy installs it from here"))
    return problems


COMPONENT = Component(
    name="tls",
    schema=schema_fragment(__file__),
    roles=None,
    packages=("openssl", "ca-certificates"),
    section="tls",
    rules=(rules,),
    install=install,
    configure=configure,
)
