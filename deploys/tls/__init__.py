"""Every host: its certificate and key, and trust in the platform CA.

`lab-ca` issues from a CA kept in the secrets directory; `files` installs the
operator's files (checked to exist by `mailstack check`). Where they go and how services use
them is the platform's convention (mailstack/tls.py), which every component reads."""

from __future__ import annotations

from pathlib import Path

from deploys.ops import directory
from mailstack.component import Component, File, Service, schema_fragment
from mailstack.inventory import Positions, Problem
from mailstack.plan import HostPlan
from mailstack.tls import CA, CERT, KEY, TLS_DIR, local_files


def configure(plan: HostPlan) -> list[Service]:
    cert, key, ca = local_files(plan)
    services = [Service(None, (File.copy(CERT, cert), File.copy(KEY, key, mode="0600", secret=True)))]
    if ca is not None:
        services.append(Service(None, (File.copy(CA, ca),)))
        services.append(Service(None, (File.copy("/usr/local/share/ca-certificates/mailstack-ca.crt", ca),),
                                on_change="update-ca-certificates"))
    return services


def install(plan: HostPlan) -> None:
    directory(TLS_DIR, mode="0755")


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
