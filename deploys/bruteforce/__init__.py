"""Hosts with `mailbox`, `submission` or `proxy` (where Dovecot checks every password:
IMAP, POP3, and SMTP AUTH through its SASL service), `idp` and `webmail`: fail2ban from Debian
counts failed logins in Dovecot's log (and, from deploys/idp/ and deploys/webmail/, in the
identity provider's and Roundcube's) and bans the client address on every login port, through
nftables, for a time from the inventory. Never the platform's own hosts. The protection everyone gets, with or without
Nauthilus."""

from __future__ import annotations

from mailstack.component import Component, File, Service, schema_fragment
from mailstack.conventions import LOGIN_PORTS
from mailstack.plan import HostPlan, platform_hosts


def never_ban(plan: HostPlan) -> str:
    own = sorted(h.address for h in platform_hosts(plan.inv))
    return " ".join(["127.0.0.1/8", "::1", *own, *plan.inv.bruteforce["never_ban"]])


def configure(plan: HostPlan) -> list[Service]:
    settings = plan.inv.bruteforce
    context = {"max_failures": settings["max_failures"], "window": settings["window"],
               "ban_time": settings["ban_time"], "never_ban": never_ban(plan),
               "ports": ",".join(str(p) for p in (*LOGIN_PORTS, *plan.contributed("bruteforce.ports")))}
    return [Service("fail2ban", (
        File.template("/etc/fail2ban/jail.d/mailstack.conf", "bruteforce/jail.conf.j2", context),
        File.template("/etc/fail2ban/filter.d/mailstack-logins.conf", "bruteforce/filter.conf.j2", {}),
    ), check="fail2ban-client --test >/dev/null")]


COMPONENT = Component(
    name="bruteforce",
    schema=schema_fragment(__file__),
    # idp, webmail: their jails come from deploys/idp/ and deploys/webmail/
    roles=frozenset({"mailbox", "submission", "proxy", "idp", "webmail"}),
    packages=("fail2ban", "python3-systemd"),
    units=("fail2ban",),
    section="bruteforce",
    enabled=lambda inv: inv.bruteforce["enabled"],
    configure=configure,
)
