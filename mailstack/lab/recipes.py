"""Variants of the main lab inventory for what the main lab cannot carry by default."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

DIRECTORY_DOMAIN = ("  - name: campus.test  # its users live only in the directory ext plays (slapd): none is listed"
                    " below\n    tenant: campus\n    mx: [mail]\n"
                    "    dmarc: {policy: quarantine, testing: true, rua: [postmaster@campus.test]}\n"
                    "    user_source: ldap\n")
DIRECTORY_SECTION = "ldap:  # the directory ext plays"


def closed(lab: str) -> str:
    """The main lab inventory (`lab`, its text) with every certificate from the lab CA instead
    of by ACME from the lab's public CA."""
    tls = re.compile(r"^tls:.*\n(?:[ #].*\n)*", re.M)
    if not tls.search(lab):
        raise ValueError("the lab inventory changed: no tls section found")
    return tls.sub("tls: {source: lab-ca}  # every certificate from the lab CA\n", lab, count=1)


def with_nauthilus(lab: str, program: Path) -> str:
    """The main lab inventory (`lab`, its text) with Nauthilus on `mail` from `program`
    (the operator's copy, pinned by its sha256), less what Nauthilus does not front yet:
    the directory domain, its `ldap` section, ext's `directory` role and ACME certificates."""
    lab = closed(lab)
    start = lab.index(DIRECTORY_SECTION)
    section = lab[start:lab.index("\n\n", start) + 2]
    for part in (DIRECTORY_DOMAIN, "storage, web, webmail]", "siem, pager, directory]"):
        if part not in lab:
            raise ValueError(f"the lab inventory changed: {part!r} not found")
    digest = hashlib.sha256(program.read_bytes()).hexdigest()
    return (lab.replace(DIRECTORY_DOMAIN, "").replace(section, "")
            .replace("storage, web, webmail]", "storage, web, webmail, auth]")
            .replace("siem, pager, directory]", "siem, pager]")
            + f"\nnauthilus: {{enabled: true}}\nartifacts:\n  nauthilus:\n    version: local\n"
              f"    sha256: {digest}\n    mirror: {program}\n")
