"""Hosts with `mailbox`: Dovecot IMAP/POP3/LMTP with Maildir, quota, autoexpunge,
Sieve, users from the inventory (hashed passwords, and OAuth2 tokens with `oidc`), the
SASL socket for Postfix, LMTP with STARTTLS for MX hosts elsewhere, and the tool that
lists and releases a domain's quarantine. Hosts with `submission` but no mailbox run
Dovecot's authentication only: Postfix's SASL stays on the host, no password crosses
the network again."""

from __future__ import annotations

from pyinfra.operations import files, server

from deploys import ldap, tls
from deploys.idp import introspection
from mailstack.component import TEMPLATES, Component, File, Opening, Service, guard
from mailstack.plan import LMTP_PORT, HostPlan

VMAIL_UID = 5000
MAIL_ROOT = "/var/vmail"  # every mailbox: MAIL_ROOT/domain/local (dovecot.conf: home)
ETC = "/etc/dovecot/mailstack"
SECRET = {"mode": "0640", "user": "root", "group": "dovecot", "secret": True}
POP3_STARTTLS_PORT = 110
QUARANTINE_TOOL = "/usr/local/sbin/mailstack-quarantine"  # `mailstack quarantine` runs it over SSH
# passdb-<name>: who may log in where. Dovecot picks the file by service (%s) and, for
# POP3 on port 110, adds "-starttls": each domain decides for its own users.
PASSDBS = {"imap": lambda d: d.imap, "pop3": lambda d: d.pop3,
           "pop3-starttls": lambda d: d.pop3 and d.pop3_starttls, "smtp": lambda d: True}


def passdb(plan: HostPlan, allowed) -> str:
    """passwd-file lines of the enabled users whose domain lets them in this way with a password."""
    domains = {d.name: d for d in plan.login_domains}
    return "\n".join(f"{guard(u.address)}:{guard(u.password)}::::::" for u in plan.inv.users
                     if u.enabled and u.domain in domains and allowed(domains[u.domain])
                     and domains[u.domain].password_login)


def token_users(plan: HostPlan, allowed) -> str:
    """The enabled users whose domain lets them in this way, whatever password_login says:
    after the provider vouched for the token (nopassword: the token was the proof)."""
    domains = {d.name: d for d in plan.login_domains}
    return "\n".join(f"{guard(u.address)}:::::::nopassword" for u in plan.inv.users
                      if u.enabled and u.domain in domains and allowed(domains[u.domain]))


def token_logins(plan: HostPlan) -> tuple[File, ...]:
    """The oauth2 passdb and how it reaches the provider (oidc.enabled)."""
    url, client_id, secret = introspection(plan.inv)
    scheme, rest = url.split("://", 1)
    return (File.template(f"{ETC}/token-passdb.conf", "dovecot/token-passdb.conf.j2",
                          {"etc": ETC, "pop3_starttls_port": POP3_STARTTLS_PORT}),
            *(File.text(f"{ETC}/tokens-{name}", token_users(plan, allowed), **SECRET)
              for name, allowed in PASSDBS.items()),
            File.template(f"{ETC}/oauth2.conf.ext", "dovecot/oauth2.conf.ext.j2",
                          {"introspection_url": f"{scheme}://{client_id}:{secret}@{rest}",
                           "scope": plan.inv.oidc["scope"]}, **SECRET))


def userdb(plan: HostPlan) -> str:
    domains = {d.name for d in plan.mailbox_domains}
    return "\n".join(f"{u.address}::::::: userdb_quota_rule=*:storage={u.quota}"
                     for u in plan.inv.users if u.domain in domains)


def quarantines(plan: HostPlan) -> list[tuple[str, str]]:
    """(local part, domain) of the quarantine mailboxes of the domains held here."""
    return [tuple(d.inbound["quarantine"].split("@")) for d in plan.mailbox_domains if "quarantine" in d.inbound]


def pop3_starttls(plan: HostPlan) -> bool:
    return any(d.pop3 and d.pop3_starttls for d in plan.mailbox_domains)


def configure(plan: HostPlan) -> list[Service]:
    inv, settings = plan.inv, plan.inv.dovecot
    mailbox = "mailbox" in plan.roles
    context = {
        **tls.context(plan),
        "etc": ETC,
        "vmail_uid": VMAIL_UID,
        "mail_location": {"maildir": "maildir:~/Maildir", "mdbox": "mdbox:~/mdbox"}[settings["mail_format"]],
        "autoexpunge_trash": settings["autoexpunge_trash"],
        "autoexpunge_junk": settings["autoexpunge_junk"],
        "max_user_connections": settings["max_user_connections"],
        "pop3_plain_port": POP3_STARTTLS_PORT if pop3_starttls(plan) else 0,
        "pop3_starttls_port": POP3_STARTTLS_PORT,
        "protocols": "imap pop3 lmtp" if mailbox else "none",
        "auth_mechanisms": "plain login oauthbearer xoauth2" if inv.oidc["enabled"] else "plain login",
        "postmaster": inv.platform["postmaster"],
        "lmtp_socket": mailbox and "mx" in plan.roles,  # Postfix here delivers here
        "sasl_socket": "submission" in plan.roles,  # Postfix here asks for submission logins
        "lmtp_address": plan.host.address if plan.lmtp_clients else "",
        "lmtp_port": LMTP_PORT,
        # the inventory's users are looked up for their own domains only (directory users never)
        "inventory_users": " ".join(f"*@{d.name}" for d in plan.login_domains if d.user_source == "inventory"),
    }
    tokens = token_logins(plan) if inv.oidc["enabled"] else ()
    directory = ldap.dovecot_files(plan)
    mail = [
        Service(None, (File.template(f"{ETC}/spam-to-junk.sieve", "dovecot/spam-to-junk.sieve.j2",
                                     {"quarantines": quarantines(plan)}),),
                on_change=f"sievec {ETC}/spam-to-junk.sieve"),
        Service(None, (File.copy(QUARANTINE_TOOL, TEMPLATES / "dovecot" / "mailstack-quarantine.py", mode="0750"),)),
    ] if mailbox else []
    return [
        *mail,
        Service("dovecot", (
            File.template("/etc/dovecot/dovecot.conf", "dovecot/dovecot.conf.j2", context),
            File.text(f"{ETC}/userdb", userdb(plan), **SECRET),
            *(File.text(f"{ETC}/passdb-{name}", passdb(plan, allowed), **SECRET) for name, allowed in PASSDBS.items()),
            *tokens,
            *directory,
        ), check="doveconf -n >/dev/null",
            absent=(*(() if tokens else (f"{ETC}/token-passdb.conf", f"{ETC}/oauth2.conf.ext",
                                         *(f"{ETC}/tokens-{name}" for name in PASSDBS))),
                    *(path for path in ldap.dovecot_paths(plan) if path not in {f.path for f in directory}))),
    ]


def install(plan: HostPlan) -> None:
    server.group(name="vmail group", group="vmail", gid=VMAIL_UID)
    server.user(name="vmail user", user="vmail", uid=VMAIL_UID, group="vmail",
                home=MAIL_ROOT, shell="/usr/sbin/nologin", ensure_home=False)
    files.directory(name=MAIL_ROOT, path=MAIL_ROOT, user="vmail", group="vmail", mode="0750")
    files.directory(name=ETC, path=ETC, mode="0755")


def openings(plan: HostPlan) -> list[Opening]:
    result = []
    if pop3_starttls(plan):
        result.append(Opening(POP3_STARTTLS_PORT, "tcp", "mailbox: POP3, STARTTLS (domains that allow it)"))
    if plan.lmtp_clients:
        result.append(Opening(LMTP_PORT, "tcp", "mailbox: LMTP (STARTTLS) from the MX hosts",
                              plan.peers(plan.lmtp_clients), bind=plan.host.address))
    return result


COMPONENT = Component(
    name="dovecot",
    roles=frozenset({"mailbox", "submission"}),
    packages=("dovecot-core", "dovecot-imapd", "dovecot-pop3d", "dovecot-lmtpd", "dovecot-sieve"),
    units=("dovecot",),
    public={"mailbox": ((143, "IMAP, STARTTLS"), (993, "IMAP, implicit TLS"), (995, "POP3, implicit TLS"))},
    section="dovecot",
    openings=openings,
    install=install,
    configure=configure,
)
