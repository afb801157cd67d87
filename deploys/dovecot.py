"""Hosts with `mailbox`: Dovecot IMAP/POP3/LMTP with Maildir, quota, autoexpunge,
Sieve, users from the inventory (hashed passwords) and the SASL socket for Postfix."""

from __future__ import annotations

from pyinfra.api import deploy as pyinfra_deploy
from pyinfra.operations import files, server

from deploys import tls
from deploys.common import ConfigFile, configure_service, guard, install, inventory, template, this_host

PACKAGES = ("dovecot-core", "dovecot-imapd", "dovecot-pop3d", "dovecot-lmtpd", "dovecot-sieve")
VMAIL_UID = 5000
ETC = "/etc/dovecot/mailstack"
SECRET = {"mode": "0640", "user": "root", "group": "dovecot", "secret": True}
# passdb-%s: which users may log in over each protocol ("smtp" = Postfix SASL)
PROTOCOL_SWITCH = {"imap": "imap", "pop3": "pop3", "smtp": None}


def hosted_domains():
    me = this_host()
    return [d for d in inventory().domains if me.name in d.mailbox]


def passdb(protocol_switch: str | None) -> str:
    """passwd-file lines of enabled users allowed to use one protocol."""
    domains = {d.name: d for d in hosted_domains()}
    lines = [f"{guard(u.address)}:{guard(u.password)}::::::" for u in inventory().users
             if u.enabled and u.domain in domains
             and (protocol_switch is None or getattr(domains[u.domain], protocol_switch))]
    return "\n".join(lines)


def userdb() -> str:
    domains = {d.name for d in hosted_domains()}
    return "\n".join(f"{u.address}::::::: userdb_quota_rule=*:storage={u.quota}"
                     for u in inventory().users if u.domain in domains)


@pyinfra_deploy("mailstack dovecot")
def deploy() -> None:
    install("Dovecot", PACKAGES)
    inv = inventory()
    server.group(name="vmail group", group="vmail", gid=VMAIL_UID)
    server.user(name="vmail user", user="vmail", uid=VMAIL_UID, group="vmail",
                home="/var/vmail", shell="/usr/sbin/nologin", ensure_home=False)
    files.directory(name="/var/vmail", path="/var/vmail", user="vmail", group="vmail",
                    mode="0750")
    files.directory(name=ETC, path=ETC, mode="0755")
    sieve = files.template(name="Global Sieve: spam into Junk", src=template("dovecot/spam-to-junk.sieve.j2"),
                           dest=f"{ETC}/spam-to-junk.sieve")
    server.shell(name="Compile the global Sieve script",
                 commands=[f"sievec {ETC}/spam-to-junk.sieve"], _if=sieve.did_change)

    pop3_starttls = any(d.pop3 and d.pop3_starttls for d in hosted_domains())
    items = [ConfigFile("/etc/dovecot/dovecot.conf", template="dovecot/dovecot.conf.j2"),
             ConfigFile(f"{ETC}/userdb", content=userdb(), **SECRET)]
    items += [ConfigFile(f"{ETC}/passdb-{protocol}", content=passdb(switch), **SECRET)
              for protocol, switch in PROTOCOL_SWITCH.items()]
    dovecot = inv.dovecot
    context = {
        **tls.context(),
        "etc": ETC,
        "vmail_uid": VMAIL_UID,
        "mail_location": {"maildir": "maildir:~/Maildir",
                          "mdbox": "mdbox:~/mdbox"}[dovecot["mail_format"]],
        "autoexpunge_trash": dovecot["autoexpunge_trash"],
        "autoexpunge_junk": dovecot["autoexpunge_junk"],
        "max_user_connections": dovecot["max_user_connections"],
        "pop3_plain_port": 110 if pop3_starttls else 0,
        "protocols": "imap pop3 lmtp",
        "postmaster": inv.platform["postmaster"],
        "postfix_here": bool({"mx", "submission"} & set(this_host().roles)),
    }
    configure_service("dovecot", items, context, check="doveconf -n >/dev/null")

