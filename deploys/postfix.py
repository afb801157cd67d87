"""Hosts with `mx` and/or `submission`: Postfix.

mx: port 25 behind postscreen, only the domains this host is MX for, unknown
recipients refused at RCPT, no relaying, delivery over LMTP to Dovecot.
submission: 587 (STARTTLS) and 465 (implicit TLS), AUTH only after TLS via Dovecot
SASL, a user may send only as its own addresses. Both pass rspamd as milter; when
rspamd cannot be reached mail is deferred (4xx), never accepted unscanned.
"""

from __future__ import annotations

from pyinfra.api import deploy as pyinfra_deploy
from pyinfra.operations import files

from deploys import rspamd, smime, tls
from deploys.common import ConfigFile, configure_service, install, inventory, this_host

PACKAGES = ("postfix",)
MAPS = "/etc/postfix/mailstack"
LOCAL_ALIASES = ("root", "postmaster", "abuse", "hostmaster", "mailer-daemon")


def table(rows) -> str:
    return "\n".join(f"{key} {value}" for key, value in rows)


def maps() -> dict[str, str]:
    """The lookup tables (texthash) this host needs, by file name."""
    inv, me = inventory(), this_host()
    mx_domains = [d for d in inv.domains if me.name in d.mx]
    mx_names = {d.name for d in mx_domains}
    transport = []
    for domain in mx_domains:
        store = domain.mailbox[0]
        target = ("lmtp:unix:private/dovecot-lmtp" if store == me.name
                  else f"lmtp:inet:[{inv.host(store).fqdn}]:24")
        transport.append((domain.name, target))
    logins: dict[str, set[str]] = {}
    submit_domains = {d.name for d in inv.domains if me.name in d.submission}
    local_users = {u.address for u in inv.users}
    for user in inv.users:
        if user.domain in submit_domains:
            for address in (user.address, *user.send_as):
                logins.setdefault(address, set()).add(user.address)
    for alias in inv.aliases:
        for target in alias.to:
            if target in local_users and alias.domain in submit_domains:
                logins.setdefault(alias.address, set()).add(target)
    nexthop = smime_nexthop()
    return {
        "smime-recipients": table((d.name, f"FILTER smime:{nexthop}") for d in mx_domains
                                  if nexthop and smime.smime_enabled(d)),
        "domains": table((d, "OK") for d in sorted(mx_names)),
        "mailboxes": table((u.address, f"{u.domain}/{u.address.split('@')[0]}/")
                           for u in inv.users if u.domain in mx_names),
        "aliases": table((a.address, ",".join(a.to)) for a in inv.aliases if a.domain in mx_names),
        "transport": table(transport),
        "senders": table((a, ",".join(sorted(u))) for a, u in sorted(logins.items())),
        "local-aliases": table((name, inv.platform["postmaster"]) for name in LOCAL_ALIASES),
    }


def smime_nexthop() -> str | None:
    """Where this host's Postfix hands mail to the S/MIME gateway, if it uses one."""
    gateway = smime.gateway_host()
    if gateway is None or this_host().outside:
        return None
    settings = inventory().smime
    name = "127.0.0.1" if settings["plaintext_loopback"] else gateway.fqdn
    return f"[{name}]:{settings['port']}"


def smime_context() -> dict:
    """master.cf settings of the gateway hops: out over TLS, back on two listeners that
    only the gateway may use (inbound: already scanned; outbound: rspamd signs there)."""
    nexthop = smime_nexthop()
    if nexthop is None:
        return {"smime": False}
    inv, me = inventory(), this_host()
    settings = inv.smime
    loopback = settings["plaintext_loopback"]
    listen = "127.0.0.1" if loopback else me.address
    return {
        "smime": True,
        "smime_nexthop": nexthop,
        "smime_tls_level": "none" if loopback else "secure",
        "smime_return_tls_level": "none" if loopback else "encrypt",
        "smime_return_inbound": f"{listen}:{settings['reinject_port']}",
        "smime_return_outbound": f"{listen}:{settings['reinject_outbound_port']}",
        "smime_clients": "127.0.0.1/32" if loopback else f"{smime.gateway_host().address}/32",
    }


@pyinfra_deploy("mailstack postfix")
def deploy() -> None:
    install("Postfix", PACKAGES)
    inv, me = inventory(), this_host()
    settings = inv.postfix
    files.directory(name=MAPS, path=MAPS, mode="0755")
    items = [ConfigFile("/etc/postfix/main.cf", template="postfix/main.cf.j2"),
             ConfigFile("/etc/postfix/master.cf", template="postfix/master.cf.j2")]
    items += [ConfigFile(f"{MAPS}/{name}", content=content) for name, content in maps().items()]
    milter = rspamd.milter_address(me)
    context = {
        **tls.context(),
        "fqdn": me.fqdn,
        "platform_domain": inv.platform["domain"],
        "maps": MAPS,
        "mx": "mx" in me.roles,
        "submission": "submission" in me.roles,
        "postscreen": settings["postscreen"],
        "message_size_limit": settings["message_size_limit"],
        "relay_host": settings.get("relay_host", ""),
        "milters": f"inet:{milter}:{rspamd.MILTER_PORT}" if milter else "",
        "milter_default_action": inv.rspamd["milter_default_action"],
        # the lab resolver refuses the root zone: skip Postfix's DNSSEC probe of it
        "dnssec_probe": "" if inv.hosts_with("dns") else "ns:.",
        **smime_context(),
    }
    configure_service("postfix", items, context, check="postfix check")
