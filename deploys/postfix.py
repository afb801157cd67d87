"""Hosts with `mx` and/or `submission`: Postfix.

mx: port 25 behind postscreen, only the domains this host is MX for, unknown
recipients refused at RCPT, no relaying, delivery over LMTP to Dovecot.
submission: 587 (STARTTLS) and 465 (implicit TLS), AUTH only after TLS via Dovecot
SASL, a user may send only as its own addresses. Both pass rspamd as milter; when
rspamd cannot be reached mail is deferred (4xx), never accepted unscanned.
"""

from __future__ import annotations

import re

from pyinfra.api import deploy as pyinfra_deploy
from pyinfra.operations import files

from deploys import rspamd, smime, tls
from deploys.common import ConfigFile, configure_service, guard, install, inventory, table, this_host

PACKAGES = ("postfix",)
MAPS = "/etc/postfix/mailstack"
LOCAL_ALIASES = ("root", "postmaster", "abuse", "hostmaster", "mailer-daemon")


def header_rules(*patterns: str) -> str:
    """A regexp: table that drops every header matching one of `patterns`."""
    return "\n".join(f"/{guard(p)}/ IGNORE" for p in patterns)


def own_authserv_ids() -> str:
    """Authentication-Results that claim to come from one of the platform's hosts."""
    names = "|".join(re.escape(h.fqdn) for h in inventory().hosts if not h.outside)
    return rf"^Authentication-Results:\s*({names})\b"


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
    submit_domains = {d.name for d in inv.domains if me.name in d.submission}
    nexthop = smime_nexthop("port")
    strip = inv.postfix["strip_internal_headers"]
    ours = ("^X-Mailstack-", own_authserv_ids())  # headers only the platform writes, or claims in its name
    return {
        "smime-recipients": table((d.name, f"FILTER smime:{nexthop}") for d in mx_domains
                                  if nexthop and smime.smime_enabled(d)),
        "domains": table((d, "OK") for d in sorted(mx_names)),
        "mailboxes": table((u.address, f"{u.domain}/{u.address.split('@')[0]}/")
                           for u in inv.users if u.domain in mx_names),
        "aliases": table((a.address, ",".join(a.to)) for a in inv.aliases if a.domain in mx_names),
        "transport": table(transport),
        "senders": table((a, ",".join(u)) for a, u in inv.senders(submit_domains).items()),
        "submission-null-sender": table([("<>", "REJECT 5.7.1 a logged-in user may not send with a null sender")]),
        "local-aliases": table((name, inv.platform["postmaster"]) for name in LOCAL_ALIASES),
        "header-checks": header_rules(*ours),  # every way in
        "submission-header-checks": header_rules(*ours, *(["^Received:", "^X-Originating-IP:"] if strip else [])),
        "outbound-header-checks": header_rules(*ours, "^X-Spam-Status:") if strip else "",
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


def services(smime_settings: dict) -> list[dict]:
    """The master.cf listeners this host needs beyond Postfix's internal services."""
    me = this_host()
    result = []
    if "mx" in me.roles and inventory().postfix["postscreen"]:
        result += [{"line": "smtp      inet  n       -       n       -       1       postscreen"},
                   {"line": "smtpd     pass  -       -       n       -       -       smtpd"},
                   {"line": "dnsblog   unix  -       -       n       -       0       dnsblog"},
                   {"line": "tlsproxy  unix  -       -       n       -       0       tlsproxy"}]
    elif "mx" in me.roles:
        result.append({"line": "smtp      inet  n       -       n       -       -       smtpd"})
    if "submission" in me.roles:
        # rspamd checks submitted mail here (header From bound to the login); with the
        # S/MIME gateway it signs DKIM only when the mail comes back (10027), after S/MIME
        via_gateway = ([f"content_filter=smime:{smime_settings['smime_submission_nexthop']}",
                        f"milter_macro_daemon_name={rspamd.SUBMISSION_VIA_GATEWAY}"]
                       if smime_settings["smime"] else ["milter_macro_daemon_name=ORIGINATING"])
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
    if smime_settings["smime"]:
        s = smime_settings
        returning = [f"mynetworks={s['smime_clients']}", f"smtpd_tls_security_level={s['smime_return_tls_level']}",
                     *GATEWAY_ONLY]
        result += [
            {"line": "smime     unix  -       -       n       -       10      smtp",
             "options": ["syslog_name=postfix/smime", f"smtp_tls_security_level={s['smime_tls_level']}",
                         "smtp_tls_secure_cert_match=nexthop", f"smtp_tls_CAfile={tls.CA}",
                         "smtp_host_lookup=native", "smtp_send_xforward_command=no", "smtp_header_checks="]},
            {"line": f"{s['smime_return_inbound']} inet n - n - - smtpd",
             "options": ["syslog_name=postfix/smime-inbound", f"receive_override_options={NO_CHECKS},no_milters",
                         "smtpd_milters=", *returning]},
            {"line": f"{s['smime_return_outbound']} inet n - n - - smtpd",
             "options": ["syslog_name=postfix/smime-outbound", f"receive_override_options={NO_CHECKS}",
                         "milter_macro_daemon_name=ORIGINATING", *returning]},
        ]
    return [{"options": [], **service} for service in result]


def smime_nexthop(listener: str) -> str | None:
    """Where this host's Postfix hands mail to the S/MIME gateway, if it uses one:
    `listener` "port" for mail from outside, "submission_port" for submitted mail."""
    gateway = smime.gateway_host()
    if gateway is None or this_host().outside:
        return None
    settings = inventory().smime
    name = "127.0.0.1" if settings["plaintext_loopback"] else gateway.fqdn
    return f"[{name}]:{settings[listener]}"


def smime_context() -> dict:
    """master.cf settings of the gateway hops: out over TLS, back on two listeners that
    only the gateway may use (inbound: already scanned; outbound: rspamd signs there)."""
    nexthop = smime_nexthop("port")
    if nexthop is None:
        return {"smime": False}
    inv, me = inventory(), this_host()
    settings = inv.smime
    loopback = settings["plaintext_loopback"]
    listen = "127.0.0.1" if loopback else me.address
    return {
        "smime": True,
        "smime_nexthop": nexthop,
        "smime_submission_nexthop": smime_nexthop("submission_port"),
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
        "message_size_limit": settings["message_size_limit"],
        "relay_host": settings.get("relay_host", ""),
        "milters": f"inet:{milter}:{rspamd.MILTER_PORT}" if milter else "",
        "milter_default_action": inv.rspamd["milter_default_action"],
        # the lab's isolated resolver refuses the root zone: skip Postfix's DNSSEC probe of it
        "dnssec_probe": "" if inv.platform["lab"] else "ns:.",
        "outbound_header_checks": f"regexp:{MAPS}/outbound-header-checks" if settings["strip_internal_headers"]
        else "",
        "services": services(smime_context()),
    }
    configure_service("postfix", items, context, check="postfix check")
