"""Hosts with `smime`: the multi-tenant S/MIME gateway (smimegw/) on Debian's python3 (its
aiosmtpd and cryptography), run by a dedicated user under a hardened systemd unit, TLS-only
towards Postfix."""

from __future__ import annotations

import json
from pathlib import Path

from deploys.ops import directory, gone, system_user
from deploys.parts import smimegw_unit
from mailstack import tls
from mailstack.component import Component, File, Opening, Service, schema_fragment
from mailstack.inventory import Positions, Problem
from mailstack.plan import HostPlan
from mailstack.secrets import domain_certificate

USER = UNIT = "mailstack-smime"
HOME = "/opt/mailstack-smime"
ETC = "/etc/mailstack-smime"
SOURCE = Path(__file__).resolve().parents[2] / "smimegw"
OWNED = {"user": USER, "group": USER}


def _tenant_files(plan: HostPlan, domain) -> tuple[str | Path, str | Path]:
    """A tenant's (certificate, key) on the control machine: the inventory's files, else
    the lab CA's (`mailstack check` refuses other sources without files)."""
    if "certificate" in domain.smime and "key" in domain.smime:
        return domain.smime["certificate"], domain.smime["key"]
    return domain_certificate(plan.inv, domain.name)


def tenant_certificate(domain: str) -> str:
    """Where the gateway reads a tenant's certificate (its key beside it, .key)."""
    return f"{ETC}/tenants/{domain}.pem"


def certificates(inv, host) -> list[str]:
    """The tenants' certificates the gateway signs and decrypts with: their expiry is watched."""
    return [tenant_certificate(d.name) for d in inv.own_domains() if d.smime_enabled]


def tenants_and_partners(plan: HostPlan) -> tuple[dict, dict, list[File]]:
    """Tenants and partners as the gateway sees them, and their certificate files."""
    tenants, partners, installed = {}, {}, []
    for domain in plan.own_domains:
        # every own domain is local to the gateway; only S/MIME tenants get certificates
        tenants[domain.name] = {"sign": domain.smime["sign"], "encrypt": domain.smime["encrypt"]}
        if domain.smime_enabled:
            cert, key = _tenant_files(plan, domain)
            certificate = tenant_certificate(domain.name)
            paths = {"cert": certificate, "key": certificate.removesuffix(".pem") + ".key"}
            tenants[domain.name].update(paths)
            installed += [File.copy(paths["cert"], cert, **OWNED),
                          File.copy(paths["key"], key, mode="0600", secret=True, **OWNED)]
    for partner in plan.inv.smime["partners"]:
        name = partner["domain"]
        cert = partner.get("certificate")
        if name in plan.lab_partner_certificates:
            cert = domain_certificate(plan.inv, name)[0]
        entry = {"sign": partner["sign"], "encrypt": partner["encrypt"], "cert": None}
        if cert:
            entry["cert"] = f"{ETC}/partners/{name}.pem"
            installed.append(File.copy(entry["cert"], cert, **OWNED))
        partners[name] = entry
    return tenants, partners, installed


def config(plan: HostPlan, tenants: dict, partners: dict, cert: str, key: str) -> dict:
    """The gateway's settings; `cert`, `key`: where it reads the host's certificate."""
    inv, hop, settings = plan.inv, plan.gateway, plan.inv.smime
    plaintext = hop.plaintext
    return {
        "hostname": plan.host.fqdn,
        "listen": hop.gateway_listen,
        "port": settings["port"],
        "submission_port": settings["submission_port"],
        "max_message_size": inv.postfix["message_size_limit"],
        "max_mime_depth": settings["max_mime_depth"],
        "max_mime_parts": settings["max_mime_parts"],
        "openssl_timeout": settings["openssl_timeout"],
        "trust": tls.TRUST_DIR,  # signatures checked for each message: load only the CAs needed
        "tls_cert": None if plaintext else cert,
        "tls_key": None if plaintext else key,
        "clients": ["127.0.0.1"] if plaintext else list(hop.mta_addresses),
        # each copy goes back to the Postfix host it came from, checked by that host's name
        "returns": {"127.0.0.1": plan.host.fqdn} if plaintext else
        {h.address: h.fqdn for h in inv.hosts if h.address in hop.mta_addresses},
        "reinject_ca": None if plaintext else tls.TRUST,
        "inbound_port": settings["reinject_port"],
        "outbound_port": settings["reinject_outbound_port"],
        "decrypted_port": settings["reinject_decrypted_port"],
        "on_missing_certificate": settings["on_missing_certificate"],
        "tenants": tenants,
        "partners": partners,
    }


def configure(plan: HostPlan) -> list[Service]:
    tenants, partners, certificates = tenants_and_partners(plan)
    server_files, cert, key = tls.own_copy(plan, UNIT, f"{ETC}/tls", **OWNED)
    return [Service(UNIT, (
        *(File.copy(f"{HOME}/smimegw/{f.name}", f) for f in sorted(SOURCE.glob("*.py"))),
        *certificates,
        File.text(f"{ETC}/config.json", json.dumps(config(plan, tenants, partners, cert, key), indent=2,
                                                   sort_keys=True),
                  mode="0640", group=USER),
        smimegw_unit(UNIT, "mailstack multi-tenant S/MIME gateway", "smimegw", HOME, f"{ETC}/config.json"),
        *server_files,
    ), check=f"runuser -u {USER} -- env PYTHONPATH={HOME} python3 -m smimegw "
              f"--check {ETC}/config.json >/dev/null")]


def install(plan: HostPlan) -> None:
    system_user(USER, home=HOME)
    for path in (HOME, f"{HOME}/smimegw", ETC, f"{ETC}/tenants", f"{ETC}/partners", f"{ETC}/tls"):
        directory(path, user="root", group=USER, mode="0750")
    gone(f"{HOME}/venv", name="No gateway venv (it ran Debian's python3 alone)")


def openings(plan: HostPlan) -> list[Opening]:
    """Both listeners, for the Postfix hosts that use this gateway from elsewhere."""
    mtas = plan.peers(h for h in plan.inv.hosts if h.address in plan.gateway.mta_addresses)
    settings = plan.inv.smime
    return [Opening(settings[port], "tcp", "smime: the S/MIME gateway for Postfix", mtas,
                    bind=plan.gateway.gateway_listen) for port in ("port", "submission_port") if mtas]


def local(plan: HostPlan) -> set[tuple[str, int]]:
    """Both listeners, when Postfix runs on this host too."""
    if plan.host.address not in plan.gateway.mta_addresses:
        return set()
    return {(plan.gateway.gateway_listen, plan.inv.smime[port]) for port in ("port", "submission_port")}


def rules(data: dict, pos: Positions) -> list[Problem]:
    """S/MIME needs a gateway; plaintext only on one host; partners are not our domains;
    tenant keys come from the inventory unless the lab CA issues them."""
    problems = []
    hosts, smime = data["hosts"], data["smime"]
    gateways = [h["name"] for h in hosts if "smime" in h["roles"] and not h["outside"]]
    mtas = [h["name"] for h in hosts if {"mx", "submission"} & set(h["roles"]) and not h["outside"]]
    outside = {h["name"] for h in hosts if h["outside"]}
    own = {d["name"] for d in data["domains"] if not set(d["mx"]) <= outside}
    lab_issues = tls.lab_ca_issues(data["tls"]["source"], data["platform"]["lab"])
    for i, domain in enumerate(data["domains"]):
        policy = domain["smime"]
        if policy["sign"] == "never" and policy["encrypt"] == "never":
            continue
        if not any("smime" in h["roles"] for h in hosts):
            problems.append(pos.problem(("domains", i, "smime"), "S/MIME is enabled but no host has the 'smime' role"))
        elif domain["name"] in own and not lab_issues and not {"certificate", "key"} <= set(policy):
            problems.append(pos.problem(("domains", i, "smime"), "an S/MIME tenant needs smime.certificate "
                                        "and smime.key (only the lab CA issues them itself)"))
    for i, host in enumerate(hosts):
        if "smime" in host["roles"] and (host["outside"] or host["name"] not in gateways[:1]):
            problems.append(pos.problem(("hosts", i, "roles"), "only one S/MIME gateway host of the platform "
                                        "is supported yet (the first 'smime' host that is not outside)"))
    if smime["plaintext_loopback"] and any(name not in gateways[:1] for name in mtas):
        problems.append(pos.problem(("smime", "plaintext_loopback"), "plaintext needs the gateway on "
                                    "the same host as every MX and submission host; mail would cross "
                                    "the network in clear"))
    for i, partner in enumerate(smime["partners"]):
        if partner["domain"] in own:
            problems.append(pos.problem(("smime", "partners", i, "domain"), f"{partner['domain']!r} is "
                                        "one of the platform's own domains; set its policy under "
                                        "domains[].smime instead"))
    return problems


COMPONENT = Component(
    name="smime",
    schema=schema_fragment(__file__),
    roles=frozenset({"smime"}),
    packages=("python3-aiosmtpd", "python3-cryptography", "openssl"),
    units=(UNIT,),
    local=local,
    section="smime",
    rules=(rules,),
    openings=openings,
    install=install,
    adds={"tls.readers": tls.readers(UNIT), "monitoring.certificates": certificates},
    configure=configure,
)
