"""Hosts with `smime`: the multi-tenant S/MIME gateway (smimegw/), in a venv on the host,
run by a dedicated user under a hardened systemd unit, TLS-only towards Postfix."""

from __future__ import annotations

import json
from pathlib import Path

from pyinfra import host as pyinfra_host
from pyinfra.api import deploy as pyinfra_deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.files import File
from pyinfra.operations import files, server

from deploys import tls
from deploys.common import ConfigFile, configure_service, install, inventory, put_secret, this_host
from mailstack.secrets import domain_certificate

PACKAGES = ("python3-aiosmtpd", "python3-cryptography", "python3-venv", "openssl")
USER = "mailstack-smime"
HOME = "/opt/mailstack-smime"
ETC = "/etc/mailstack-smime"
SOURCE = Path(__file__).resolve().parent.parent / "smimegw"
TRUST = "/etc/ssl/certs/ca-certificates.crt"  # includes the platform CA (tls deploy)


def gateway_host():
    """The gateway Postfix uses: the first `smime` host of the platform, if any."""
    hosts = [h for h in inventory().hosts_with("smime") if not h.outside]
    return hosts[0] if hosts else None


def smime_enabled(domain) -> bool:
    return domain.smime["sign"] != "never" or domain.smime["encrypt"] != "never"


def _certificate(domain: str, policy) -> tuple[str, str]:
    """A tenant's (certificate, key) on the control machine: the inventory's files, else
    the lab CA's."""
    inv = inventory()
    if "certificate" in policy and "key" in policy:
        return policy["certificate"], policy["key"]
    if inv.tls["source"] != "lab-ca":
        raise DeployError(f"S/MIME tenant {domain} needs smime.certificate and smime.key")
    cert, key = domain_certificate(inv, domain)
    return str(cert), str(key)


def domains() -> tuple[dict, dict, list[tuple[str, str, bool]]]:
    """Tenants and partners as the gateway sees them, and the files to install
    (local source, remote path, private)."""
    inv = inventory()
    tenants, partners, installs = {}, {}, []
    own = {d.name for d in inv.own_domains()}
    for domain in inv.own_domains():
        # every own domain is local to the gateway; only S/MIME tenants get certificates
        tenants[domain.name] = {"sign": domain.smime["sign"], "encrypt": domain.smime["encrypt"]}
        if smime_enabled(domain):
            cert, key = _certificate(domain.name, domain.smime)
            tenants[domain.name].update(cert=f"{ETC}/tenants/{domain.name}.pem",
                                        key=f"{ETC}/tenants/{domain.name}.key")
            installs += [(cert, tenants[domain.name]["cert"], False),
                         (key, tenants[domain.name]["key"], True)]
    for partner in inv.smime["partners"]:
        name = partner["domain"]
        cert = partner.get("certificate")
        lab_outside = name not in own and name in {d.name for d in inv.domains}
        if cert is None and lab_outside and inv.tls["source"] == "lab-ca":
            cert = str(domain_certificate(inv, name)[0])
        entry = {"sign": partner["sign"], "encrypt": partner["encrypt"], "cert": None}
        if cert:
            entry["cert"] = f"{ETC}/partners/{name}.pem"
            installs.append((cert, entry["cert"], False))
        partners[name] = entry
    return tenants, partners, installs


def mta_addresses() -> list[str]:
    """Postfix hosts that hand mail to the gateway."""
    return sorted(h.address for h in inventory().hosts
                  if not h.outside and {"mx", "submission"} & set(h.roles))


def config() -> dict:
    inv, me = inventory(), this_host()
    settings = inv.smime
    tenants, partners, _ = domains()
    loopback = settings["plaintext_loopback"]
    return {
        "hostname": me.fqdn,
        "listen": "127.0.0.1" if loopback else me.address,
        "port": settings["port"],
        "submission_port": settings["submission_port"],
        "max_message_size": inv.postfix["message_size_limit"],
        "max_mime_depth": settings["max_mime_depth"],
        "max_mime_parts": settings["max_mime_parts"],
        "openssl_timeout": settings["openssl_timeout"],
        "trust": TRUST,
        "tls_cert": None if loopback else f"{ETC}/tls/cert.pem",
        "tls_key": None if loopback else f"{ETC}/tls/key.pem",
        "clients": ["127.0.0.1"] if loopback else mta_addresses(),
        "reinject_host": me.fqdn,
        "reinject_address": "127.0.0.1" if loopback else me.address,
        "reinject_ca": None if loopback else tls.CA,
        "inbound_port": settings["reinject_port"],
        "outbound_port": settings["reinject_outbound_port"],
        "on_missing_certificate": settings["on_missing_certificate"],
        "tenants": tenants,
        "partners": partners,
    }


@pyinfra_deploy("mailstack smime")
def deploy() -> None:
    install("S/MIME gateway", PACKAGES)
    server.user(name="Gateway user", user=USER, system=True, home=HOME, shell="/usr/sbin/nologin",
                ensure_home=False)
    for path in (HOME, f"{HOME}/smimegw", ETC, f"{ETC}/tenants", f"{ETC}/partners", f"{ETC}/tls"):
        files.directory(name=path, path=path, user="root", group=USER, mode="0750")
    if not pyinfra_host.get_fact(File, path=f"{HOME}/venv/pyvenv.cfg"):
        server.shell(name="Gateway venv (Debian's aiosmtpd and cryptography)",
                     commands=[f"python3 -m venv --system-site-packages --without-pip {HOME}/venv"])
    code = [files.put(name=f"Gateway code {f.name}", src=str(f), dest=f"{HOME}/smimegw/{f.name}",
                      mode="0644") for f in sorted(SOURCE.glob("*.py"))]
    _, _, installs = domains()
    cert, key, _ = tls.local_files()
    installs += [(str(cert), f"{ETC}/tls/cert.pem", False), (str(key), f"{ETC}/tls/key.pem", True)]
    keys = [put_secret(f"Install {dest}", dest, src=src, user=USER, group=USER) if private
            else files.put(name=f"Install {dest}", src=src, dest=dest, user=USER, group=USER, mode="0644")
            for src, dest, private in installs]
    items = [ConfigFile(f"{ETC}/config.json", content=json.dumps(config(), indent=2, sort_keys=True),
                        mode="0640", group=USER),
             ConfigFile("/etc/systemd/system/mailstack-smime.service", template="smime/mailstack-smime.service.j2")]
    configure_service("mailstack-smime", items, {"service_user": USER, "home": HOME, "etc": ETC},
                      check=f"runuser -u {USER} -- env PYTHONPATH={HOME} {HOME}/venv/bin/python -m smimegw "
                            f"--check {ETC}/config.json >/dev/null",
                      extra_changes=(*code, *keys))
