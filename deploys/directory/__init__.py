"""Hosts with `directory` (lab only): this host plays the organisation's LDAP directory
(Debian's slapd), the user source of the domains with `user_source: ldap`. LDAPS only,
with the host's certificate; the platform's bind account (`ldap.bind_dn`) may search,
a user may bind as itself, nobody reads a password hash; root on the host manages the
entries over ldapi (the tests add and remove users that way)."""

from __future__ import annotations

import base64
import hashlib
import hmac

from deploys.ops import directory
from mailstack import tls
from mailstack.component import Component, File, Opening, Service
from mailstack.plan import HostPlan, platform_hosts

PORT = 636
ETC = "/etc/ldap/mailstack"
DATA = "/var/lib/ldap"
SEED_TOOL = "/usr/local/sbin/mailstack-directory-seed"
# who manages the entries: root on the host, over ldapi with SASL EXTERNAL
HOST_ROOT = "gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth"
SLAPD_UNIT = """[Unit]
Description=OpenLDAP directory (mailstack lab: LDAPS and ldapi only)
After=network.target

[Service]
Type=forking
ExecStartPre=/usr/bin/install -d -o openldap -g openldap /run/slapd
PIDFile=/run/slapd/slapd.pid
ExecStart=/usr/sbin/slapd -h "ldaps:/// ldapi:///" -u openldap -g openldap -f /etc/ldap/slapd.conf

[Install]
WantedBy=multi-user.target
"""


def ssha(secret: str) -> str:
    """An {SSHA} hash of `secret` whose salt derives from it: the same on every deploy."""
    salt = hmac.new(secret.encode(), b"mailstack ldap salt", hashlib.sha256).digest()[:8]
    return "{SSHA}" + base64.b64encode(hashlib.sha1(secret.encode() + salt).digest() + salt).decode()


def seed(plan: HostPlan) -> str:
    """The entries the platform needs: the suffix, ou=people and the accounts its clients bind
    as (what they add at `directory.accounts`: the ldap component's bind account)."""
    suffix = plan.inv.ldap["base_dn"]
    first = suffix.split(",")[0].split("=", 1)[1]
    lines = [f"dn: {suffix}", "objectClass: dcObject", "objectClass: organization", f"dc: {first}", f"o: {first}", "",
             f"dn: ou=people,{suffix}", "objectClass: organizationalUnit", "ou: people", ""]
    for dn, secret in dict.fromkeys(plan.contributed("directory.accounts")):
        lines += [f"dn: {dn}", "objectClass: organizationalRole", "objectClass: simpleSecurityObject",
                  f"cn: {dn.split(',')[0].split('=', 1)[1]}", f"userPassword: {ssha(secret)}", ""]
    return "\n".join(lines)


def configure(plan: HostPlan) -> list[Service]:
    ldap = plan.inv.ldap
    context = {"suffix": ldap["base_dn"], "bind_dn": ldap["bind_dn"], "host_root": HOST_ROOT,
               "etc": ETC, "data": DATA, "mail_attribute": ldap["mail_attribute"]}
    return [
        Service("slapd", (
            # a unit of its own, instead of the package's init script: LDAPS and ldapi only
            File.text("/etc/systemd/system/slapd.service", SLAPD_UNIT),
            File.template("/etc/ldap/slapd.conf", "directory/slapd.conf.j2", context, mode="0640",
                          group="openldap"),
            File.copy(f"{ETC}/cert.pem", tls.local_files(plan)[0]),
            File.copy(f"{ETC}/key.pem", tls.local_files(plan)[1], mode="0600", user="openldap", secret=True),
        ), check="install -d -o openldap -g openldap /run/slapd && slaptest -u -f /etc/ldap/slapd.conf"),
        Service(None, (
            File.text(f"{ETC}/seed.ldif", seed(plan), mode="0600", secret=True),
            File.template(SEED_TOOL, "directory/mailstack-directory-seed.sh.j2",
                          {"seed": f"{ETC}/seed.ldif", "bind_dn": ldap["bind_dn"]}, mode="0750"),
        ), on_change=SEED_TOOL),
    ]


def install(plan: HostPlan) -> None:
    directory(ETC, mode="0755")
    directory(DATA, user="openldap", group="openldap", mode="0700")


def openings(plan: HostPlan) -> list[Opening]:
    readers = plan.peers(platform_hosts(plan.inv, "mailbox", "mx", "submission"))
    return [Opening(PORT, "tcp", "directory: LDAPS for the platform's mail hosts", readers)] if readers else []


COMPONENT = Component(
    name="directory",
    roles=frozenset({"directory"}),
    lab_only="plays an organisation's LDAP directory in a lab; name yours under ldap.uris",
    packages=("slapd", "ldap-utils"),
    preseed=("slapd slapd/no_configuration boolean true",),
    units=("slapd",),
    openings=openings,
    install=install,
    configure=configure,
)
