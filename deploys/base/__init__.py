"""Every host: names, time zone, kernel settings, the host firewall, and a local
unbound resolver."""

from __future__ import annotations

from pyinfra.operations import server

from deploys.ops import absent, symlink, unless
from mailstack.component import Component, File, Service
from mailstack.conventions import NFT_INCLUDED
from mailstack.plan import HostPlan

SYSCTL = {"net.ipv4.tcp_syncookies": 1, "net.core.somaxconn": 1024, "net.ipv4.tcp_fin_timeout": 30,
          "fs.file-max": 1048576}
SYSCTL_FILE = "/etc/sysctl.d/60-mailstack.conf"


def resolver_context(plan: HostPlan) -> dict:
    """unbound settings: it always validates. An isolated lab resolver answers only the
    platform's zones from its `dns` hosts, trusting each zone's key, and refuses everything
    else; otherwise it resolves from the root, whose static trust anchor the dns-root-data
    package keeps current."""
    resolver = plan.resolver
    return {
        "refuse_everything_else": resolver.isolated,
        "stub_zones": resolver.zones,
        "stub_addresses": resolver.nameservers,
        "trust_anchors": resolver.anchors,
        "trust_anchor_file": "" if resolver.isolated else "/usr/share/dns/root.key",
    }


def configure(plan: HostPlan) -> list[Service]:
    me = plan.host
    return [
        Service(None, (
            File.template("/etc/hosts", "base/hosts.j2", {"address": me.address, "fqdn": me.fqdn,
                                                         "short_name": me.name}),
            File.text("/etc/mailname", me.fqdn),
            File.text("/etc/timezone", "Etc/UTC"),
        )),
        Service("nftables", (File.template("/etc/nftables.conf", "base/nftables.conf.j2",
                                           {"rules": [o.rule() for o in plan.openings],
                                            "included": NFT_INCLUDED}, mode="0755"),),
                # reloaded, never restarted: stopping the unit flushes every table, fail2ban's bans too
                check="nft -c -f /etc/nftables.conf", reload=True),
        Service("unbound", (
            File.template("/etc/unbound/unbound.conf.d/mailstack.conf", "base/unbound.conf.j2",
                          resolver_context(plan)),
            File.template("/etc/default/unbound", "base/unbound.default.j2", {}),
        ), check="unbound-checkconf"),
        # after unbound runs: the host resolves through it from here on
        # trust-ad: the C library passes the resolver's "validated" (AD) bit on to programs
        Service(None, (File.text("/etc/resolv.conf", "nameserver 127.0.0.1\noptions edns0 trust-ad"),)),
    ]


def install(plan: HostPlan) -> None:
    unless(f"[ \"$(uname -n)\" = {plan.name} ]", server.hostname, name="Host name", hostname=plan.name)
    symlink("/etc/localtime", "/usr/share/zoneinfo/Etc/UTC", name="Time zone UTC")
    if plan.tune_kernel:  # a container shares its kernel with the lab machine
        for key, value in SYSCTL.items():
            server.sysctl(name=f"sysctl {key}", key=key, value=value, persist=True, persist_file=SYSCTL_FILE)
    absent("/etc/unbound/unbound.conf.d/root-auto-trust-anchor-file.conf",
           name="No self-updating trust anchor (network at start)")


COMPONENT = Component(
    name="base",
    roles=None,
    packages=("unbound", "openssl", "ca-certificates", "systemd-timesyncd", "nftables"),
    units=("unbound", "nftables"),
    disabled_units=("unbound-resolvconf.service",),
    local=(("127.0.0.1", 53),),
    install=install,
    configure=configure,
)
