"""Hosts with `filter`: rspamd as Postfix milter, with Redis (deploys/redis/); DKIM/ARC signing,
SPF/DKIM/DMARC/ARC evaluation, per-domain and per-user spam and malware policies, allow lists (a tenant's list
counts only for mail to that tenant: Postfix applies deny lists per recipient), and the
rule that binds a logged-in user's header From/Sender to the addresses granted to it."""

from __future__ import annotations

import json
import re

from pyinfra.operations import server

from deploys.ops import absent, directory, restart, unless
from mailstack.component import Component, File, Service, guard, schema_fragment, table
from mailstack.conventions import (
    ORIGINATING,
    REDIS_PASSWORD,
    REDIS_PORT,
    SMIME_CONTENT,
    SMIME_DECRYPTED,
    SMIME_RESULT,
    SUBMISSION_VIA_GATEWAY,
)
from mailstack.dkim import key_name, selectors, signing_selector
from mailstack.plan import MILTER_PORT, HostPlan
from mailstack.secrets import dkim_key, password

ETC = "/etc/rspamd"
DKIM_DIR = "/var/lib/rspamd/dkim"
MAPS_DIR = "/etc/rspamd/maps.d"
# local.d merges with Debian's defaults; override.d replaces them (options.inc must:
# merged, Debian's local_addrs would count every private network as "local").
CONFIG = ("override.d/options.inc", "local.d/worker-proxy.inc", "local.d/worker-normal.inc",
          "local.d/actions.conf", "local.d/dkim_signing.conf", "local.d/arc.conf",
          "local.d/milter_headers.conf", "local.d/greylist.conf", "local.d/settings.conf")
# what earlier versions rendered: platform-wide lists that let one tenant's entries act for all
RETIRED = ("local.d/multimap.conf", *(f"maps.d/{kind}_{what}.map" for kind in ("allow", "deny")
                                      for what in ("addresses", "domains", "ips")))
# files with a password: never shown, readable by rspamd only
SECRET_CONFIG = ("override.d/worker-controller.inc", "local.d/redis.conf")


def allow_table(plan: HostPlan) -> str:
    """Each own domain's allow list (addresses, @domains, networks) as one map line."""
    return table((d.name, ",".join([*(e.lower() for e in d.allow["senders"]), *d.allow["ips"]]))
                 for d in plan.own_domains if d.allow["senders"] or d.allow["ips"])


def forwarding(plan: HostPlan) -> list[str]:
    """The aliases whose mail leaves the platform: an outside target, directly or through other aliases."""
    own, targets = {d.name for d in plan.own_domains}, {a.address: a.to for a in plan.inv.aliases}

    def leaves(address: str, seen: frozenset[str]) -> bool:
        return address.split("@")[1] not in own or any(leaves(t, seen | {address})
                                                       for t in targets.get(address, ()) if t not in seen)
    return [a.address for a in plan.inv.aliases if leaves(a.address, frozenset())]


def forwarding_pattern(plan: HostPlan) -> str:
    """A regular expression (UCL-quoted) matching a recipient that forwards off the platform
    (none: one that matches nothing)."""
    found = forwarding(plan)
    return json.dumps(f"/^(?:{'|'.join(re.escape(a) for a in found)})$/i" if found else "/(?!)/")


def policies(plan: HostPlan) -> list[tuple[str, dict]]:
    """Spam and malware policy of each own domain, and of each user that overrides its domain's."""
    by_domain = {d.name: {"spam": d.inbound["spam"], "malware": d.inbound["malware"],
                          "quarantine": d.inbound.get("quarantine", "")} for d in plan.own_domains}
    return [*by_domain.items(), *((u.address, {**by_domain[u.domain], **u.inbound})
                                  for u in plan.inv.users if u.inbound and u.domain in by_domain)]


def _signing(plan: HostPlan) -> list[dict]:
    """DKIM keys the platform's own domains sign with: (name, selector, path on the host).
    A domain in a rotation signs with its new key only once the DNS serves it."""
    nameservers = plan.inv.lab_nameservers()
    signing = [(d, signing_selector(plan.inv, d, nameservers)) for d in plan.own_domains if d.dkim["enabled"]]
    for d, selector in signing:
        if selector != d.dkim["selector"]:
            print(f"DKIM: {d.name} signs with {selector!r} until the DNS serves "
                  f"{key_name(d, d.dkim['selector'])}: deploy again then (`mailstack dkim rotate` waits for it)")
    return [{"name": d.name, "selector": selector, "path": f"{DKIM_DIR}/{d.name}.{selector}.key"}
            for d, selector in signing]


PACKAGED_TLDS = "/usr/share/rspamd/effective_tld_names.dat"
LAB_TLDS, TLDS = f"{ETC}/mailstack-lab-tlds.dat", f"{ETC}/mailstack-tlds.dat"


def lab_tlds(plan: HostPlan) -> list[str]:
    """A lab's made-up top-level domains (`test`): rspamd takes no address or URL in a domain
    it does not know as real (a DMARC report to carol@ext.test would go nowhere)."""
    zones = plan.resolver.zones if plan.resolver.isolated else ()
    return sorted({zone.rsplit(".", 1)[-1] for zone in zones if not zone.endswith(".arpa")})


def configure(plan: HostPlan) -> list[Service]:
    inv, settings = plan.inv, plan.inv.rspamd
    signing = _signing(plan)
    tlds = lab_tlds(plan)
    context = {
        "proxy_bind": "127.0.0.1",  # Postfix hosts elsewhere come through the TLS tunnel (filter_link)
        "milter_port": MILTER_PORT,
        "dns_timeout": settings["dns_timeout"],
        "reject_score": settings["reject_score"],
        "add_header_score": settings["add_header_score"],
        # a seal helps only the receiver of a forward: mail kept here is not sealed (issue 24:
        # two RSA signatures were half of rspamd's cost per message)
        "arc_enabled": "true" if settings["arc"] and forwarding(plan) else "false",
        "forwarding": forwarding_pattern(plan),
        "signing": signing,
        "maps_dir": MAPS_DIR,
        "policies": policies(plan),
        # outbound mail comes back from the S/MIME gateway unauthenticated: sign it there
        "sign_networks": json.dumps([plan.gateway.gateway.address] if plan.gateway else []),
        "submission_via_gateway": SUBMISSION_VIA_GATEWAY,
        "smime_decrypted": SMIME_DECRYPTED,
        "originating": ORIGINATING,
        # plain mail for these domains passes no gateway: its result is written here
        "smime_tenants": [d.name for d in plan.own_domains if d.smime_enabled],
        "smime_content": SMIME_CONTENT,
        "smime_result": SMIME_RESULT,
        "refused_attachments": [(d.name, d.deny["attachments"]) for d in plan.own_domains if d.deny["attachments"]],
        "redis_password": password(inv, REDIS_PASSWORD),
        "controller_password": password(inv, "rspamd-controller"),
        "url_tld": TLDS if tlds else "",
    }
    secret = {"secret": True, "group": "_rspamd", "mode": "0640"}
    lab = [Service(None, (File.text(LAB_TLDS, "\n".join(tlds)),),
                   on_change=f"cat {PACKAGED_TLDS} {LAB_TLDS} > {TLDS}")] if tlds else []
    return [
        *lab,
        Service("rspamd", (
            *(File.template(f"{ETC}/{name}", f"rspamd/{name.split('/')[1]}.j2", context) for name in CONFIG),
            *(File.template(f"{ETC}/{name}", f"rspamd/{name.split('/')[1]}.j2", context, **secret)
              for name in SECRET_CONFIG),
            File.template(f"{ETC}/rspamd.local.lua", "rspamd/rspamd.local.lua.j2", context),
            File.text(f"{MAPS_DIR}/tenant_allow.map", allow_table(plan)),
            File.text(f"{MAPS_DIR}/directory-domains.map",
                      "\n".join(guard(d.name) for d in inv.domains if d.user_source == "ldap")),
            File.text(f"{MAPS_DIR}/senders.map",
                      table((address, ",".join(logins)) for address, logins in inv.senders().items())),
            # every key the DNS publishes, the previous one of a rotation too: a worker of the
            # configuration before the switch may still sign with it (its file goes once retired)
            *(File.copy(f"{DKIM_DIR}/{d.name}.{selector}.key", dkim_key(inv, d.name, selector, d.dkim["bits"]),
                        secret=True, group="_rspamd", mode="0640")
              for d in plan.own_domains if d.dkim["enabled"] for selector in selectors(d)),
        ), check="rspamadm configtest -q", reload=True,
           absent=(*(f"{ETC}/{name}" for name in RETIRED), *(() if tlds else (LAB_TLDS, TLDS)))),
    ]


def loopback_clients(plan: HostPlan) -> dict[int, tuple[str, ...]]:
    """The milter for Postfix here and the TLS tunnel's server end; the scanner and the
    controller for root alone (a local user there could have mail DKIM-signed, or learn)."""
    here = {c.name for c in plan.components}
    milter = tuple(user for component, user in (("postfix", "postfix"), ("filter-link", "stunnel4"))
                   if component in here)
    return {MILTER_PORT: milter, 11333: (), 11334: (), REDIS_PORT: ("_rspamd",)}  # and it is Redis's client


def install(plan: HostPlan) -> None:
    if any(c.name == "clamav" for c in plan.components):  # clamd's socket is for its group alone
        joined = unless("id -nG _rspamd | tr ' ' '\\n' | grep -qx clamav", server.user,
                        name="rspamd may use clamd's socket", user="_rspamd", groups=["clamav"], append=True,
                        ensure_home=False)
        restart(name="rspamd takes its new group", unit="rspamd", _if=joined.did_change)
    directory(DKIM_DIR, user="root", group="_rspamd", mode="0750")
    directory(MAPS_DIR, mode="0755")
    absent(f"{ETC}/local.d/worker-controller.inc", name="No controller settings left in local.d (override.d has them)")



COMPONENT = Component(
    name="rspamd",
    schema=schema_fragment(__file__),
    roles=frozenset({"filter"}),
    packages=("rspamd",),
    units=("rspamd",),
    local=(("127.0.0.1", MILTER_PORT), ("127.0.0.1", 11333), ("127.0.0.1", 11334)),
    loopback_clients=loopback_clients,
    section="rspamd",
    install=install,
    configure=configure,
)
