"""Every host: packages, names, time zone, sysctl, and a local unbound resolver."""

from __future__ import annotations

from pyinfra.api import deploy as pyinfra_deploy
from pyinfra.operations import apt, files, server

from deploys.common import ConfigFile, configure_service, install, inventory, template, text, this_host
from mailstack.dns import zones
from mailstack.firewall import openings

PACKAGES = ("unbound", "openssl", "ca-certificates", "systemd-timesyncd", "nftables")


def resolver_context() -> dict:
    """unbound settings: in a lab (`platform.lab`), resolve only the platform's zones
    through its `dns` host and refuse everything else; otherwise a validating recursive
    resolver, whatever hosts the inventory has."""
    inv = inventory()
    nameservers = inv.hosts_with("dns")
    isolated = bool(inv.platform["lab"] and nameservers)
    return {
        "module_config": "iterator" if isolated else "validator iterator",
        "refuse_everything_else": isolated,
        "stub_zones": sorted(zones(inv)) if isolated else [],
        "stub_addresses": [h.address for h in nameservers],
        # a static anchor kept current by the dns-root-data package: no network at start
        "trust_anchor_file": "" if isolated else "/usr/share/dns/root.key",
    }


@pyinfra_deploy("mailstack base")
def deploy() -> None:
    me = this_host()
    apt.update(name="Refresh package lists (daily)", cache_time=86400)
    install("base", PACKAGES)

    names = [
        files.put(name="Host name", src=text(me.name), dest="/etc/hostname"),
        files.template(name="/etc/hosts", src=template("base/hosts.j2"), dest="/etc/hosts",
                       address=me.address, fqdn=me.fqdn, short_name=me.name),
        files.put(name="/etc/mailname", src=text(me.fqdn), dest="/etc/mailname"),
    ]
    server.shell(name="Apply the host name", commands=["hostname -F /etc/hostname"],
                 _if=names[0].did_change)
    files.link(name="Time zone UTC", path="/etc/localtime", target="/usr/share/zoneinfo/Etc/UTC")
    files.put(name="/etc/timezone", src=text("Etc/UTC"), dest="/etc/timezone")
    sysctl = files.template(name="sysctl settings", src=template("base/sysctl.conf.j2"),
                            dest="/etc/sysctl.d/60-mailstack.conf")
    server.shell(name="Apply sysctl settings (not inside containers)",
                 commands=["systemd-detect-virt -cq || sysctl -q -p /etc/sysctl.d/60-mailstack.conf"],
                 _if=sysctl.did_change)

    configure_service("nftables", [ConfigFile("/etc/nftables.conf", template="base/nftables.conf.j2", mode="0755")],
                      {"rules": [o.rule() for o in openings(inventory(), me)]}, check="nft -c -f /etc/nftables.conf")

    context = resolver_context()
    files.file(name="No self-updating trust anchor (network at start)",
               path="/etc/unbound/unbound.conf.d/root-auto-trust-anchor-file.conf", present=False)
    configure_service("unbound", [
        ConfigFile("/etc/unbound/unbound.conf.d/mailstack.conf", template="base/unbound.conf.j2"),
        ConfigFile("/etc/default/unbound", template="base/unbound.default.j2"),
    ], context, check="unbound-checkconf")
    files.put(name="Use the local resolver", src=text("nameserver 127.0.0.1\noptions edns0"),
              dest="/etc/resolv.conf")

