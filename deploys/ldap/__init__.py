"""Domains with `user_source: ldap`: their users live in the organisation's directory.
Dovecot finds a user there with the bind account and checks the password by binding as
the user (no hash is ever read); Postfix finds recipients and each sender's one login
there (proxy:ldap, no cache); who may log in on which service stays per domain, as for
inventory users. LDAPS only, the server's certificate checked."""

from __future__ import annotations

from pathlib import Path

from mailstack import tls
from mailstack.component import Component, File, Service, schema_fragment
from mailstack.conventions import DOVECOT_ETC, DOVECOT_SECRET, MAIL_ROOT, PASSDBS, POP3_STARTTLS_PORT
from mailstack.inventory import Inventory, Positions, Problem
from mailstack.plan import HostPlan, received_domains, submitted_domains
from mailstack.secrets import password

POSTFIX_SECRET = {"mode": "0640", "user": "root", "group": "postfix", "secret": True}
CA = "/etc/mailstack/ldap-ca.pem"


def directory_domains(domains) -> list:
    return [d for d in domains if d.user_source == "ldap"]


def bind_password(inv: Inventory) -> str:
    """bind_dn's password: the operator's file, or (a lab's own directory) a generated one."""
    if "bind_password_file" in inv.ldap:
        return Path(inv.ldap["bind_password_file"]).expanduser().read_text().strip()
    return password(inv, "ldap-bind")


def ca_file(inv: Inventory) -> str:
    return CA if "ca_file" in inv.ldap else tls.TRUST


def connection(inv: Inventory) -> dict:
    """How Dovecot and Postfix alike reach the directory and what they look for there."""
    return {"uris": " ".join(inv.ldap["uris"]), "bind_dn": inv.ldap["bind_dn"], "bind_password": bind_password(inv),
            "base_dn": inv.ldap["base_dn"], "ca_file": ca_file(inv), "mail_attribute": inv.ldap["mail_attribute"]}


def user_filter(inv: Inventory, key: str, domains) -> str:
    """Entries of the class whose address is `key`, in one of `domains` only."""
    mail = inv.ldap["mail_attribute"]
    within = "".join(f"({mail}=*@{d.name})" for d in domains)
    return f"(&(objectClass={inv.ldap['user_object_class']})({mail}={key})(|{within}))"


def dovecot_files(plan: HostPlan) -> tuple[File, ...]:
    """Per directory domain, how to find its users (ldap-<domain>.conf.ext: that domain's
    entries only, with its quota); ldap-logins.conf (the passdbs, the per-service gate,
    the userdbs) and the gate's lists of domains."""
    inv, domains = plan.inv, directory_domains(plan.login_domains)
    if not domains:
        return ()
    reach = {**connection(inv), "mail_root": MAIL_ROOT}
    logins = {"etc": DOVECOT_ETC, "pop3_starttls_port": POP3_STARTTLS_PORT,
              "domains": [d.name for d in domains]}
    return (*(File.template(f"{DOVECOT_ETC}/ldap-{d.name}.conf.ext", "ldap/dovecot-ldap.conf.ext.j2", {
                **reach, "domain": d.name, "quota": d.quota, "user_filter": user_filter(inv, "%Lu", [d]),
                "iterate_filter": user_filter(inv, "*", [d])}, **DOVECOT_SECRET) for d in domains),
            File.template(f"{DOVECOT_ETC}/ldap-logins.conf", "ldap/dovecot-ldap-logins.conf.j2", logins),
            *(File.text(f"{DOVECOT_ETC}/ldap-domains-{name}",
                        "\n".join(f"{d.name}:::::::nopassword" for d in domains
                                  if d.password_login and allowed(d)), **DOVECOT_SECRET)
              for name, allowed in PASSDBS.items()))


def dovecot_paths(plan: HostPlan) -> tuple[str, ...]:
    """Every file dovecot_files may write here (those it does not are removed)."""
    return (f"{DOVECOT_ETC}/ldap-logins.conf", *(f"{DOVECOT_ETC}/ldap-domains-{name}" for name in PASSDBS),
            *(f"{DOVECOT_ETC}/ldap-{d.name}.conf.ext" for d in plan.login_domains))


POSTFIX_LOOKUPS = ("mailboxes", "senders")


def postfix_tables(inv: Inventory, host) -> dict[str, list]:
    """lookup -> the directory domains it answers for, of the LDAP tables Postfix on `host`
    needs: `mailboxes` (recipients, on MX hosts), `senders` (sender -> login, on submission)."""
    wanted = {"mailboxes": directory_domains(received_domains(inv, host)),
              "senders": directory_domains(submitted_domains(inv, host))}
    return {name: domains for name, domains in wanted.items() if domains}


def postfix_path(name: str) -> str:
    return f"/etc/postfix/mailstack/ldap-{name}.cf"


def postfix_lookups(inv: Inventory, host) -> dict[str, str]:
    """The proxy:ldap tables Postfix consults after its own files (postfix.lookups)."""
    return {name: f"proxy:ldap:{postfix_path(name)}" for name in postfix_tables(inv, host)}


def postfix_files(plan: HostPlan) -> tuple[File, ...]:
    inv = plan.inv
    return tuple(File.template(postfix_path(name), "ldap/postfix-ldap.cf.j2", {
        **connection(inv), "domains": ", ".join(d.name for d in domains),
        "query_filter": user_filter(inv, "%s", domains)}, **POSTFIX_SECRET)
        for name, domains in postfix_tables(inv, plan.host).items())


def configure(plan: HostPlan) -> list[Service]:
    """The directory's own CA, where the inventory names one (Dovecot and Postfix read it)."""
    return [Service(None, (File.copy(CA, plan.inv.ldap["ca_file"]),))] if "ca_file" in plan.inv.ldap else []


def rules(data: dict, pos: Positions) -> list[Problem]:
    """A directory to read, users in one place only, and a way for them to log in."""
    settings, problems = data["ldap"], []
    users_from = [i for i, d in enumerate(data["domains"]) if d["user_source"] == "ldap"]
    directory_hosts = [h for h in data["hosts"] if "directory" in h["roles"]]
    if users_from:
        for key in ("uris", "base_dn", "bind_dn"):
            if key not in settings:
                problems.append(pos.problem(("domains", users_from[0], "user_source"),
                                            f"users from LDAP need ldap.{key}"))
        if "bind_password_file" not in settings and not directory_hosts:
            problems.append(pos.problem(("domains", users_from[0], "user_source"), "ldap.bind_password_file is "
                                        "needed: a generated password is only known to a lab's own directory host "
                                        "(role 'directory')"))
    elif {"uris", "base_dn", "bind_dn"} & set(settings):
        problems.append(pos.problem(("ldap",), "ldap has no effect: no domain has user_source 'ldap'"))
    for key in ("bind_password_file", "ca_file"):
        if key in settings and not Path(settings[key]).expanduser().is_file():
            problems.append(pos.problem(("ldap", key), f"{settings[key]} is not a file on this machine; the "
                                        "deploy reads it from here"))
    for i in users_from:
        if not data["domains"][i]["password_login"]:
            problems.append(pos.problem(("domains", i, "password_login"), "directory users log in with their "
                                        "directory password; token logins are for inventory users only (not "
                                        "implemented for directory users yet)"))
    ldap_names = {data["domains"][i]["name"] for i in users_from}
    for i, user in enumerate(data["users"]):
        if user["address"].split("@")[1] in ldap_names:
            problems.append(pos.problem(("users", i, "address"), "this domain takes its users from the "
                                        "directory (user_source: ldap): add the user there, not here"))
    if directory_hosts and not settings.get("base_dn", "dc=").startswith("dc="):
        problems.append(pos.problem(("ldap", "base_dn"), "the lab's directory serves base_dn as its suffix: "
                                    "start it with dc=, e.g. dc=lab,dc=test"))
    return problems


COMPONENT = Component(
    name="ldap",
    schema=schema_fragment(__file__),
    roles=frozenset({"mailbox", "mx", "submission"}),
    packages=("dovecot-ldap", "postfix-ldap"),
    section="ldap",
    rules=(rules,),
    enabled=lambda inv: bool(directory_domains(inv.domains)),
    platform_only=True,
    adds={"directory.accounts": lambda inv, host: [(inv.ldap["bind_dn"], bind_password(inv))],  # its bind account
          "postfix.lookups": postfix_lookups},
    # its Dovecot and Postfix files are part of their services: checked and applied with them
    extends={"dovecot": dovecot_files, "postfix": postfix_files},
    writes={"dovecot": dovecot_paths, "postfix": lambda plan: tuple(postfix_path(name) for name in POSTFIX_LOOKUPS)},
    configure=configure,
)
