"""Hosts with `mx` and/or `submission`: Postfix.

mx: port 25 behind postscreen, only the domains this host is MX for, unknown
recipients refused at RCPT (postmaster@ every domain reaches the platform's postmaster
unless the inventory has that address), no relaying, delivery over LMTP to Dovecot.
submission: 587 (STARTTLS) and 465 (implicit TLS), AUTH only after TLS via Dovecot
SASL, a user may send only as its own addresses. Both pass rspamd as milter; when
rspamd cannot be reached mail is deferred (4xx), never accepted unscanned.
"""

from __future__ import annotations

import re
from ipaddress import ip_network

from deploys.ops import directory
from mailstack import tls
from mailstack.component import (
    Component,
    ExtensionConflict,
    File,
    Opening,
    Service,
    guard,
    render,
    schema_fragment,
    table,
)
from mailstack.conventions import ORIGINATING, SMIME_CONTENT, SMIME_DECRYPTED, SUBMISSION_VIA_GATEWAY
from mailstack.dns import Record, smtp_name
from mailstack.inventory import Host, Inventory
from mailstack.plan import MILTER_PORT, HostPlan, own_authserv_ids

MAPS = "/etc/postfix/mailstack"
MAIN_CF, MASTER_CF = "/etc/postfix/main.cf", "/etc/postfix/master.cf"
RETIRED = (f"{MAPS}/smime-recipients",)  # what earlier versions rendered: S/MIME tenants' mail all via the gateway
LOCAL_ALIASES = ("root", "postmaster", "abuse", "hostmaster", "mailer-daemon")


def header_rules(*patterns: str) -> str:
    """A regexp: table that drops every header matching one of `patterns`."""
    return "\n".join(f"/{guard(p)}/ IGNORE" for p in patterns)


def postmasters(plan: HostPlan) -> list[tuple[str, str]]:
    """postmaster@ each domain this MX takes mail for (RFC 5321 requires it; DMARC and TLS
    reports go there), to the platform's postmaster, unless the inventory has that address."""
    taken = {u.address for u in plan.inv.users} | {a.address for a in plan.inv.aliases}
    return [(f"postmaster@{d.name}", plan.inv.platform["postmaster"]) for d in plan.mx_domains
            if f"postmaster@{d.name}" not in taken]


def to_gateway(plan: HostPlan) -> str:
    """The header check that sends inbound encrypted and opaque-signed mail (a Content-Type naming
    pkcs7-mime, of the message or of any part: Postfix checks MIME headers with header_checks too)
    through the S/MIME gateway, when this MX has tenants with S/MIME. Signed and plain mail go on
    without the hop; rspamd writes their verdict instead. Submitted mail has its own checks and
    always passes the gateway (content_filter)."""
    if not plan.gateway or not any(d.smime_enabled for d in plan.mx_domains):
        return ""
    return f"/^Content-Type[ \\t]*:.*{SMIME_CONTENT}/ FILTER smime:{plan.gateway.nexthop(plan.inv.smime['port'])}"


DENIED = "REJECT 5.7.1 refused by the policy of the recipient's domain"


def deny_classes(plan: HostPlan) -> list[tuple[str, str, object]]:
    """(restriction class, domain, its deny list) for each domain this host receives that
    refuses someone: Postfix checks them per recipient, at RCPT time."""
    return [(f"mailstack_deny_{i}", d.name, d.deny) for i, d in
            enumerate((d for d in plan.mx_domains if d.deny["senders"] or d.deny["ips"]), 1)]


def deny_maps(plan: HostPlan) -> dict[str, str]:
    """tenant-deny (recipient domain -> its class) and each class's sender and client tables;
    @example.org refuses example.org and its subdomains (Postfix access map matching)."""
    classes = deny_classes(plan)
    result = {"tenant-deny": table((domain, name) for name, domain, _ in classes)}
    for name, _, deny in classes:
        result[f"{name}-senders"] = table((e.lower().removeprefix("@"), DENIED) for e in deny["senders"])
        result[f"{name}-ips"] = table((ip_network(n, strict=False), DENIED) for n in deny["ips"])
    return result


def transports(plan: HostPlan) -> list[tuple[str, str]]:
    """Where each domain's mail goes (its first mailbox host), and each user whose mailbox
    is on another of the domain's hosts (Postfix looks the address up before the domain)."""
    domains = {d.name: d for d in plan.mx_domains}
    return [*((d.name, plan.lmtp_target(d.mailbox[0])) for d in plan.mx_domains),
            *((u.address, plan.lmtp_target(u.mailbox)) for u in plan.inv.users
              if u.domain in domains and u.mailbox != domains[u.domain].mailbox[0])]


def maps(plan: HostPlan) -> dict[str, str]:
    """The lookup tables (texthash) this host needs, by file name."""
    inv = plan.inv
    mx_names = {d.name for d in plan.mx_domains}
    strip = inv.postfix["strip_internal_headers"]
    ours = ("^X-Mailstack-", own_authserv_ids(plan))  # headers only the platform writes, or claims in its name
    return {
        "domains": table((d, "OK") for d in sorted(mx_names)),
        "mailboxes": table((u.address, f"{u.domain}/{u.address.split('@')[0]}/")
                           for u in inv.users if u.domain in mx_names),
        "aliases": table([*((a.address, ",".join(a.to)) for a in inv.aliases if a.domain in mx_names),
                          *postmasters(plan)]),
        "transport": table(transports(plan)),
        "senders": table((a, ",".join(u)) for a, u in
                         inv.senders({d.name for d in plan.submission_domains}).items()),
        "submission-null-sender": table([("<>", "REJECT 5.7.1 a logged-in user may not send with a null sender")]),
        "local-aliases": table((name, inv.platform["postmaster"]) for name in LOCAL_ALIASES),
        "sni": table((name, f"{tls.KEY} {sni['cert']}") for sni in tls.sni(plan) for name in sni["names"]),
        "header-checks": "\n".join(filter(None, (header_rules(*ours), to_gateway(plan)))),  # every way in
        "submission-header-checks": header_rules(*ours, *(["^Received:", "^X-Originating-IP:"] if strip else [])),
        "outbound-header-checks": header_rules(*ours, "^X-Spam-Status:") if strip else "",
        **deny_maps(plan),
    }


SUBMISSION = ("smtpd_sasl_auth_enable=yes", "smtpd_client_restrictions=permit_sasl_authenticated,reject",
              "smtpd_helo_restrictions=",
              f"smtpd_sender_restrictions=check_sender_access,texthash:{MAPS}/submission-null-sender,"
              "reject_non_fqdn_sender,reject_authenticated_sender_login_mismatch",
              "smtpd_recipient_restrictions=", "smtpd_relay_restrictions=permit_sasl_authenticated,reject",
              "cleanup_service_name=submission-cleanup")
GATEWAY_ONLY = ("content_filter=", "smtpd_client_restrictions=permit_mynetworks,reject", "smtpd_helo_restrictions=",
                "smtpd_sender_restrictions=", "smtpd_recipient_restrictions=permit_mynetworks,reject",
                "smtpd_relay_restrictions=permit_mynetworks,reject")
NO_CHECKS = "no_unknown_recipient_checks,no_header_body_checks,no_address_mappings"


def return_listen(plan: HostPlan) -> str:
    """Where Postfix here takes mail back from the S/MIME gateway."""
    return "127.0.0.1" if plan.gateway.plaintext else plan.host.address


def services(plan: HostPlan) -> list[dict]:
    """The master.cf listeners this host needs beyond Postfix's internal services."""
    inv, hop, result = plan.inv, plan.gateway, []
    if "mx" in plan.roles and inv.postfix["postscreen"]:
        result += [{"line": "smtp      inet  n       -       n       -       1       postscreen"},
                   {"line": "smtpd     pass  -       -       n       -       -       smtpd"},
                   {"line": "dnsblog   unix  -       -       n       -       0       dnsblog"},
                   {"line": "tlsproxy  unix  -       -       n       -       0       tlsproxy"}]
    elif "mx" in plan.roles:
        result.append({"line": "smtp      inet  n       -       n       -       -       smtpd"})
    if "submission" in plan.roles:
        # rspamd checks submitted mail here (header From bound to the login); with the
        # S/MIME gateway it signs DKIM only when the mail comes back (10027), after S/MIME
        via_gateway = ([f"content_filter=smime:{hop.nexthop(inv.smime['submission_port'])}",
                        f"milter_macro_daemon_name={SUBMISSION_VIA_GATEWAY}"]
                       if hop else [f"milter_macro_daemon_name={ORIGINATING}"])
        result += [
            {"line": "submission-cleanup unix n - n - 0 cleanup",
             "options": [f"header_checks=regexp:{MAPS}/submission-header-checks"]},
            {"line": "submission inet n       -       n       -       -       smtpd",
             "options": ["syslog_name=postfix/submission", "smtpd_tls_security_level=encrypt",
                         "smtpd_tls_auth_only=yes", *SUBMISSION, *via_gateway]},
            {"line": "submissions inet n      -       n       -       -       smtpd",
             "options": ["syslog_name=postfix/submissions", "smtpd_tls_wrappermode=yes", *SUBMISSION,
                         *via_gateway]},
        ]
    if any(target.startswith("lmtp-tls:") for _, target in transports(plan)):
        # mailbox hosts elsewhere: LMTP inside TLS from the first byte (their stunnel), this
        # host's certificate shown (root's key, loaded before Postfix drops privileges)
        # and theirs checked by name
        result.append({"line": "lmtp-tls  unix  -       -       n       -       -       lmtp",
                       "options": ["syslog_name=postfix/lmtp-tls", "lmtp_tls_wrappermode=yes",
                                   "lmtp_tls_security_level=secure", "lmtp_tls_secure_cert_match=nexthop",
                                   f"lmtp_tls_cert_file={tls.CERT}", f"lmtp_tls_key_file={tls.KEY}"]})
    if hop:
        listen = return_listen(plan)
        returning = [f"mynetworks={'127.0.0.1' if hop.plaintext else hop.gateway.address}/32",
                     f"smtpd_tls_security_level={'none' if hop.plaintext else 'encrypt'}", *GATEWAY_ONLY]
        result += [
            {"line": "smime     unix  -       -       n       -       10      smtp",
             "options": ["syslog_name=postfix/smime",
                         f"smtp_tls_security_level={'none' if hop.plaintext else 'secure'}",
                         "smtp_tls_secure_cert_match=nexthop", f"smtp_tls_CAfile={tls.TRUST}",
                         "smtp_host_lookup=native", "smtp_send_xforward_command=no", "smtp_header_checks=",
                         "smtp_tls_policy_maps="]},  # its policy is the one above, never a domain's
            {"line": f"{listen}:{inv.smime['reinject_port']} inet n - n - - smtpd",
             "options": ["syslog_name=postfix/smime-inbound", f"receive_override_options={NO_CHECKS},no_milters",
                         "smtpd_milters=", *returning]},
            # what the gateway decrypted was scanned as ciphertext only: rspamd scans it here as
            # inbound mail (ClamAV, Peekaboo, attachment lists, policies); a reject becomes a hold
            {"line": f"{listen}:{inv.smime['reinject_decrypted_port']} inet n - n - - smtpd",
             "options": ["syslog_name=postfix/smime-decrypted", f"receive_override_options={NO_CHECKS}",
                         f"milter_macro_daemon_name={SMIME_DECRYPTED}", *returning]},
            {"line": f"{listen}:{inv.smime['reinject_outbound_port']} inet n - n - - smtpd",
             "options": ["syslog_name=postfix/smime-outbound", f"receive_override_options={NO_CHECKS}",
                         f"milter_macro_daemon_name={ORIGINATING}", *returning]},
        ]
    return [{"options": [], **service} for service in result]


def extended(plan: HostPlan, point: str, own: str) -> str:
    """main.cf or master.cf with what other components here add to it (extension points
    postfix.main and postfix.master); a parameter or service Postfix sets itself is theirs
    to leave alone."""
    if not plan.added[point]:
        return own
    mine = set(re.findall(r"^([A-Za-z0-9_-]+)\s", own, re.MULTILINE))
    for component, items in plan.added[point]:
        for name in (items if point == "postfix.main" else (s["line"].split()[0] for s in items)):
            if name in mine:
                raise ExtensionConflict(f"component {component!r} sets {point} {name!r}, which postfix sets itself")
    main = point == "postfix.main"
    return own.rstrip("\n") + "\n" + render(
        "postfix/main-added.cf.j2" if main else "postfix/master-added.cf.j2",
        {"added": [{"component": component, "entries": sorted(items.items()) if main else items}
                   for component, items in plan.added[point]]}, MAIN_CF if main else MASTER_CF)


def lookup(plan: HostPlan, name: str) -> str:
    """Postfix's own table `name`, then those other components add (postfix.lookups)."""
    return ", ".join((f"texthash:{MAPS}/{name}",
                      *(tables[name] for _, tables in plan.added["postfix.lookups"] if name in tables)))


def configure(plan: HostPlan) -> list[Service]:
    inv, settings = plan.inv, plan.inv.postfix
    context = {
        **tls.context(plan),
        "fqdn": plan.host.fqdn,
        "platform_domain": inv.platform["domain"],
        "maps": MAPS,
        "message_size_limit": settings["message_size_limit"],
        "relay_host": settings.get("relay_host", ""),
        "milters": f"inet:{plan.milter}:{MILTER_PORT}" if plan.milter else "",
        "milter_default_action": inv.rspamd["milter_default_action"],
        "dnssec_probe": plan.dnssec_probe,
        "outbound_header_checks": f"regexp:{MAPS}/outbound-header-checks" if settings["strip_internal_headers"]
        else "",
        "services": services(plan),
        "mailbox_maps": lookup(plan, "mailboxes"),
        "sender_login_maps": lookup(plan, "senders"),
        "deny_classes": [{"name": name, "checks": f"check_client_access cidr:{MAPS}/{name}-ips, "
                                                 f"check_sender_access texthash:{MAPS}/{name}-senders"}
                         for name, _, _ in deny_classes(plan)],
    }
    return [Service("postfix", (
        File.text(MAIN_CF, extended(plan, "postfix.main", render("postfix/main.cf.j2", context, MAIN_CF))),
        File.text(MASTER_CF, extended(plan, "postfix.master", render("postfix/master.cf.j2", context, MASTER_CF))),
        *(File.text(f"{MAPS}/{name}", content) for name, content in maps(plan).items()),
    ), check="postfix check", reload=True, absent=RETIRED)]


def install(plan: HostPlan) -> None:
    directory(MAPS, mode="0755")


def tlsa_records(inv: Inventory, host: Host) -> list[Record]:
    """DANE: the host's key (TLSA 3 1 1) at its MX name for port 25 and at each submission
    name it answers for 465 and 587. Validating senders then refuse a certificate with
    another key, and a connection without STARTTLS."""
    pin = f"3 1 1 {tls.key_digest(inv, host)}"
    names = [f"_25._tcp.{host.fqdn}"] if any(host.name in d.mx for d in inv.domains) else []
    names += [f"_{port}._tcp.{smtp_name(d)}" for d in inv.domains if host.name in d.submission
              for port in (465, 587)]
    return [Record(name, "TLSA", pin) for name in names]


def _return_ports(plan: HostPlan) -> tuple[int, ...]:
    return tuple(plan.inv.smime[p] for p in ("reinject_port", "reinject_decrypted_port", "reinject_outbound_port"))


def openings(plan: HostPlan) -> list[Opening]:
    """Postfix's return listeners, for the S/MIME gateway when it runs elsewhere."""
    hop = plan.gateway
    if not hop or hop.gateway.name == plan.name:
        return []
    return [Opening(port, "tcp", "Postfix: mail back from the S/MIME gateway", (hop.gateway.address,),
                    bind=return_listen(plan)) for port in _return_ports(plan)]


def local(plan: HostPlan) -> set[tuple[str, int]]:
    """The return listeners, when the gateway runs on this host."""
    hop = plan.gateway
    if not hop or hop.gateway.name != plan.name:
        return set()
    return {(return_listen(plan), port) for port in _return_ports(plan)}


COMPONENT = Component(
    name="postfix",
    schema=schema_fragment(__file__),
    roles=frozenset({"mx", "submission"}),
    packages=("postfix",),
    preseed=("postfix postfix/main_mailer_type select No configuration",),
    units=("postfix",),
    public={"mx": ((25, "SMTP from the Internet"),),
            "submission": ((587, "submission, STARTTLS"), (465, "submission, implicit TLS"))},
    local=local,
    adds={"tls.readers": tls.readers("postfix"), "dns.records": tlsa_records},
    section="postfix",
    openings=openings,
    install=install,
    configure=configure,
)
