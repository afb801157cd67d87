"""Every host: its certificate and key, and trust in the CAs the platform's own certificates
come from.

`lab-ca` issues from a CA kept in the secrets directory (a certificate for each group of
names, `tls.grouped`, all with the host's one key); `files` installs the operator's
files (checked to exist by `mailstack check`); under `acme` the host gets only its key from
here (made once on this machine, so that TLSA records stay true) and the `acme` component
fetches the certificate on the host. Where they go and how services use them is the
platform's convention (mailstack/tls.py), which every component reads."""

from __future__ import annotations

from pathlib import Path

from deploys.ops import directory
from mailstack import tls
from mailstack.component import Component, File, Service, schema_fragment
from mailstack.inventory import Positions, Problem
from mailstack.plan import HostPlan
from mailstack.secrets import host_key
from mailstack.tls import CA, CERT, KEY, TLS_DIR

TRUST_ANCHORS = "/usr/local/share/ca-certificates"
# the most trust anchors a host can have: the lab CA, `tls.acme_roots`, the lab's ACME CA's
ANCHOR_SLOTS = 1 + tls.MAX_ROOTS + tls.LAB_ACME_ROOTS


def roots(inv) -> list[File]:
    """The trusted CAs as update-ca-certificates reads them: one certificate a file."""
    return [File.text(f"{TRUST_ANCHORS}/mailstack-{i}.crt", block)
            for i, block in enumerate(tls.trusted_certificates(inv))]


def configure(plan: HostPlan) -> list[Service]:
    if tls.by_acme(plan):
        services = [Service(None, (File.copy(KEY, host_key(plan.inv, plan.name), mode="0600", secret=True),))]
    else:
        cert, key, _ = tls.local_files(plan)
        services = [Service(None, (File.copy(CERT, cert), File.copy(KEY, key, mode="0600", secret=True)))]
        if tls.source(plan.inv, plan.host) == "lab-ca":  # the others, served by SNI
            services.append(Service(None, (*(File.copy(path, local) for path, local in tls.local_sni_files(plan)),
                                           File.text(tls.CERTIFICATES, tls.certificate_list(plan)))))
    anchors = roots(plan.inv)
    if anchors:
        services.append(Service(None, (File.text(CA, "\n".join(f.content.decode() for f in anchors)),)))
    # the files it wrote before (other names, or a CA no longer trusted) go; then the store is rebuilt
    unused = tuple(f"{TRUST_ANCHORS}/mailstack-{i}.crt" for i in range(len(anchors), ANCHOR_SLOTS))
    services.append(Service(None, tuple(anchors), on_change="update-ca-certificates --fresh",
                            absent=unused + (f"{TRUST_ANCHORS}/mailstack-ca.crt",)))
    return services


def install(plan: HostPlan) -> None:
    directory(TLS_DIR, mode="0755")
    directory(tls.SNI_DIR, mode="0755")


def rules(data: dict, pos: Positions) -> list[Problem]:
    """Every host has a certificate the deploy can read on this machine; the ACME CA's roots,
    if named, are certificates."""
    problems = []
    settings = data["tls"]
    if "acme_roots" in settings:
        path = Path(settings["acme_roots"]).expanduser()
        found = len(tls.pem_blocks(path.read_text(errors="replace"))) if path.is_file() else 0
        if not 0 < found <= tls.MAX_ROOTS:
            problems.append(pos.problem(("tls", "acme_roots"), f"{settings['acme_roots']} is not a PEM file of 1 to "
                                        f"{tls.MAX_ROOTS} certificates on this machine"))
    hosts = {h["name"] for h in data["hosts"]}
    covered = {f["host"] for f in settings["files"]}
    if settings["source"] == "files":
        for i, host in enumerate(data["hosts"]):
            if host["name"] not in covered:
                problems.append(pos.problem(("hosts", i, "name"), "tls.source is 'files' but "
                                            "tls.files has no certificate for this host"))
    for i, entry in enumerate(settings["files"]):
        if entry["host"] not in hosts:
            problems.append(pos.problem(("tls", "files", i, "host"),
                                        f"host {entry['host']!r} is not defined under hosts"))
        for key in ("certificate", "key"):
            if settings["source"] == "files" and not Path(entry[key]).expanduser().is_file():
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
