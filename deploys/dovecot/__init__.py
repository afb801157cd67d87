"""Hosts with `mailbox`: Dovecot IMAP/POP3/LMTP with Maildir, quota, autoexpunge,
Sieve, users from the inventory (hashed passwords, and OAuth2 tokens with `oidc`), the
SASL socket for Postfix, LMTP with STARTTLS for MX hosts elsewhere, and the tool that
lists and releases a domain's quarantine. Hosts with `submission` but no mailbox run
Dovecot's authentication only: Postfix's SASL stays on the host, no password crosses
the network again."""

from __future__ import annotations

from deploys.ops import directory, system_group, system_user
from mailstack import tls
from mailstack.component import Component, File, Opening, Service, guard, schema_fragment, template_path
from mailstack.conventions import DOVECOT_BLOCKS, DOVECOT_ETC, DOVECOT_SECRET, MAIL_ROOT, PASSDBS, POP3_STARTTLS_PORT
from mailstack.inventory import Positions, Problem
from mailstack.logins import asks_nauthilus, backchannel, introspection, nauthilus_url
from mailstack.plan import LMTP_INSIDE_PORT, HostPlan

VMAIL_UID = 5000
QUARANTINE_TOOL = "/usr/local/sbin/mailstack-quarantine"  # `mailstack quarantine` runs it over SSH
LOGINS_TOOL = "/usr/local/sbin/mailstack-logins-applied"
LOGINS_KEPT = "/var/lib/mailstack/dovecot-logins"  # the login files as last applied, to compare with
# where a proxy sends each kind of login on its mailbox host (implicit TLS, name verified)
BACKEND_PORTS = {"imap": 993, "pop3": 995, "pop3-starttls": 995}


def logins(plan: HostPlan, service: str) -> list:
    """The enabled users Dovecot here checks for `service`, whose domain lets them in this
    way: for submission (smtp), the users of the domains submitting here; for IMAP and POP3,
    the users whose mailbox is here, and on a proxy every user of the platform's domains."""
    if service == "smtp":
        domains = {d.name: d for d in plan.submission_domains}
        wanted = [u for u in plan.inv.users if u.domain in domains]
    else:
        domains = {d.name: d for d in plan.login_domains}
        wanted = [u for u in plan.inv.users if u.domain in domains] if plan.is_proxy else plan.mailbox_users
    return [u for u in wanted if u.enabled and u.domain in domains and PASSDBS[service](domains[u.domain])]


def proxy_fields(plan: HostPlan, user, service: str) -> str:
    """On a proxy: the fields that send the login on to the user's mailbox host over TLS."""
    if not plan.is_proxy or user.mailbox == plan.name or service not in BACKEND_PORTS:
        return ""
    store = plan.inv.host(user.mailbox)
    return f"proxy=y host={store.fqdn} hostip={store.address} port={BACKEND_PORTS[service]} ssl=yes"


def passdb(plan: HostPlan, service: str) -> str:
    """passwd-file lines of the users who may log in this way with a password."""
    return "\n".join(f"{guard(u.address)}:{guard(u.password)}::::::{proxy_fields(plan, u, service)}"
                     for u in logins(plan, service) if plan.inv.domain(u.domain).password_login)


def token_users(plan: HostPlan, service: str) -> str:
    """The users who may log in this way, whatever password_login says: after the provider
    vouched for the token (nopassword: the token was the proof)."""
    return "\n".join(f"{guard(u.address)}:::::::nopassword" for u in logins(plan, service))


def token_logins(plan: HostPlan) -> tuple[File, ...]:
    """The oauth2 passdb and how it reaches the provider (oidc.enabled); the users are
    in login_files."""
    url, client_id, secret = introspection(plan.inv)
    scheme, rest = url.split("://", 1)
    return (File.template(f"{DOVECOT_ETC}/token-passdb.conf", "dovecot/token-passdb.conf.j2",
                          {"etc": DOVECOT_ETC, "pop3_starttls_port": POP3_STARTTLS_PORT}),
            File.template(f"{DOVECOT_ETC}/oauth2.conf.ext", "dovecot/oauth2.conf.ext.j2",
                          {"introspection_url": f"{scheme}://{client_id}:{secret}@{rest}",
                           "scope": plan.inv.oidc["scope"]}, **DOVECOT_SECRET))


def nauthilus_files(plan: HostPlan) -> tuple[File, ...]:
    """The Lua passdb that puts every password login to Nauthilus (nauthilus.enabled)."""
    script = f"{DOVECOT_ETC}/nauthilus.lua"
    return (File.template(f"{DOVECOT_ETC}/nauthilus-passdb.conf", "dovecot/nauthilus-passdb.conf.j2",
                          {"script": script, "inventory_users": inventory_users(plan)}),
            File.template(script, "dovecot/nauthilus.lua.j2",
                          {"url": nauthilus_url(plan.inv), "credentials": backchannel(plan.inv)},
                          **DOVECOT_SECRET))


def inventory_users(plan: HostPlan) -> str:
    """The username_filter of the inventory's users: their own domains only (directory users never)."""
    return " ".join(f"*@{d.name}" for d in plan.login_domains if d.user_source == "inventory")


def login_files(plan: HostPlan) -> list[Service]:
    """Who may log in, and their mailbox settings: files Dovecot reads again when they
    change, so a new user restarts nothing; the sessions of users whose login changed or
    went are ended (mailstack-logins-applied, which compares with copies as last applied)."""
    tokens = plan.inv.oidc["enabled"]
    gates = {f"passdb-{name}": passdb(plan, name) for name in PASSDBS}
    gates.update({f"tokens-{name}": token_users(plan, name) for name in PASSDBS if tokens})
    gone = () if tokens else tuple(f"tokens-{name}" for name in PASSDBS)
    return [Service(None, (File.text(f"{DOVECOT_ETC}/userdb", userdb(plan), **DOVECOT_SECRET),
                           *(File.text(f"{DOVECOT_ETC}/{name}", text, **DOVECOT_SECRET)
                             for name, text in gates.items())),
                    on_change=f"{LOGINS_TOOL} {DOVECOT_ETC} {LOGINS_KEPT}{' --proxy' if plan.is_proxy else ''}",
                    absent=tuple(f"{DOVECOT_ETC}/{name}" for name in gone)),
            Service(None, tuple(File.text(f"{LOGINS_KEPT}/{name}", text, mode="0600", secret=True)
                                for name, text in gates.items()),
                    absent=tuple(f"{LOGINS_KEPT}/{name}" for name in gone))]


def userdb(plan: HostPlan) -> str:
    return "\n".join(f"{u.address}::::::: userdb_quota_rule=*:storage={u.quota}" for u in plan.mailbox_users)


def quarantines(plan: HostPlan) -> list[tuple[str, str]]:
    """(local part, domain) of the quarantine mailboxes of the domains held here."""
    return [tuple(d.inbound["quarantine"].split("@")) for d in plan.mailbox_domains if "quarantine" in d.inbound]


def reading_domains(plan: HostPlan) -> tuple:
    """The domains whose users read mail here (IMAP, POP3): held here, or proxied."""
    return plan.login_domains if plan.is_proxy else plan.mailbox_domains if "mailbox" in plan.roles else ()


def pop3_starttls(plan: HostPlan) -> bool:
    return any(d.pop3 and d.pop3_starttls for d in reading_domains(plan))


def configure(plan: HostPlan) -> list[Service]:
    inv, settings = plan.inv, plan.inv.dovecot
    mailbox = "mailbox" in plan.roles
    gated = asks_nauthilus(inv) and not plan.host.outside
    context = {
        **tls.context(plan),
        "etc": DOVECOT_ETC,
        "blocks": DOVECOT_BLOCKS,
        "vmail_uid": VMAIL_UID,
        "mail_location": {"maildir": "maildir:~/Maildir", "mdbox": "mdbox:~/mdbox"}[settings["mail_format"]],
        "autoexpunge_trash": settings["autoexpunge_trash"],
        "autoexpunge_junk": settings["autoexpunge_junk"],
        "max_user_connections": settings["max_user_connections"],
        "pop3_plain_port": POP3_STARTTLS_PORT if pop3_starttls(plan) else 0,
        "pop3_starttls_port": POP3_STARTTLS_PORT,
        "protocols": "imap pop3 lmtp" if mailbox else "imap pop3" if plan.is_proxy else "none",
        # a proxy or the webmail host hands on its client's address: Dovecot here believes them
        "trusted_proxies": " ".join(sorted({h.address for h in plan.client_forwarders})),
        "client_trust": tls.TRUST,
        "login_chroot": "" if plan.is_proxy else "login",
        "auth_mechanisms": "plain login oauthbearer xoauth2" if inv.oidc["enabled"] else "plain login",
        "postmaster": inv.platform["postmaster"],
        "lmtp_socket": mailbox and "mx" in plan.roles,  # Postfix here delivers here
        "sasl_socket": "submission" in plan.roles,  # Postfix here asks for submission logins
        "lmtp_inside": bool(plan.lmtp_clients),
        "lmtp_port": LMTP_INSIDE_PORT,
        "inventory_users": inventory_users(plan),
        # behind Nauthilus (it checked the password), only whether the user may use this service
        "password_skip": "unauthenticated" if gated else "never",
        "password_failure": "return-fail" if gated else "continue",
    }
    tokens = token_logins(plan) if inv.oidc["enabled"] else ()
    gate = nauthilus_files(plan) if gated else ()
    mail = [
        Service(None, (File.template(f"{DOVECOT_ETC}/spam-to-junk.sieve", "dovecot/spam-to-junk.sieve.j2",
                                     {"quarantines": quarantines(plan)}),),
                on_change=f"sievec {DOVECOT_ETC}/spam-to-junk.sieve"),
        Service(None, (File.copy(QUARANTINE_TOOL, template_path("dovecot/mailstack-quarantine.py"), mode="0750"),)),
    ] if mailbox else []
    return [
        *mail,
        Service(None, (File.copy(LOGINS_TOOL, template_path("dovecot/mailstack-logins-applied.py"), mode="0750"),)),
        *login_files(plan),  # before Dovecot's first start, which then finds its users
        Service("dovecot", (
            File.template("/etc/dovecot/dovecot.conf", "dovecot/dovecot.conf.j2", context),
            *tokens,
            *gate,
        ), check="doveconf -n >/dev/null",
            absent=(*(() if tokens else (f"{DOVECOT_ETC}/token-passdb.conf", f"{DOVECOT_ETC}/oauth2.conf.ext")),
                    *(() if gate else (f"{DOVECOT_ETC}/nauthilus-passdb.conf", f"{DOVECOT_ETC}/nauthilus.lua")))),
    ]


def install(plan: HostPlan) -> None:
    system_group("vmail", gid=VMAIL_UID)
    system_user("vmail", home=MAIL_ROOT, group="vmail", uid=VMAIL_UID)
    directory(MAIL_ROOT, user="vmail", group="vmail", mode="0750")
    directory(DOVECOT_ETC, mode="0755")
    directory(DOVECOT_BLOCKS, mode="0755")


def rules(data: dict, pos: Positions) -> list[Problem]:
    """A proxy passes on password logins of inventory users; what it cannot pass on yet is
    refused rather than answered from the proxy's own (empty) storage."""
    proxies = [i for i, h in enumerate(data["hosts"]) if "proxy" in h["roles"]]
    if not proxies:
        return []
    problems = []
    if data["oidc"]["enabled"]:
        problems.append(pos.problem(("hosts", proxies[0], "roles"), "token logins (oidc.enabled) through "
                                    "a Dovecot proxy are not implemented yet (issue 13)"))
    for i, domain in enumerate(data["domains"]):
        if domain["user_source"] == "ldap":
            problems.append(pos.problem(("domains", i, "user_source"), "directory users behind a Dovecot "
                                        "proxy are not implemented yet (issue 13)"))
    return problems


MAIL_PORTS = ((143, "IMAP, STARTTLS"), (993, "IMAP, implicit TLS"), (995, "POP3, implicit TLS"))


def openings(plan: HostPlan) -> list[Opening]:
    """A mailbox host behind proxies opens its mail ports to them only; POP3 with STARTTLS
    where a domain read here allows it (LMTP for the MX hosts elsewhere: deploys/lmtp_link)."""
    backend = "mailbox" in plan.roles and not plan.is_proxy  # a proxy opens them to all (public)
    behind = plan.peers(plan.proxies) if backend else ()
    result = [Opening(port, "tcp", f"mailbox: {why}{', for the proxies' if behind else ''}", behind)
              for port, why in MAIL_PORTS if backend]
    if pop3_starttls(plan):
        result.append(Opening(POP3_STARTTLS_PORT, "tcp", "mailbox: POP3, STARTTLS (domains that allow it)", behind))
    return result


COMPONENT = Component(
    name="dovecot",
    schema=schema_fragment(__file__),
    roles=frozenset({"mailbox", "submission", "proxy"}),
    packages=("dovecot-core", "dovecot-imapd", "dovecot-pop3d", "dovecot-lmtpd", "dovecot-sieve",
              "dovecot-auth-lua", "lua-cjson"),  # the last two: Dovecot's side of Nauthilus
    units=("dovecot",),
    public={"proxy": MAIL_PORTS},
    section="dovecot",
    rules=(rules,),
    openings=openings,
    install=install,
    adds={"tls.readers": tls.readers("dovecot")},
    configure=configure,
)
