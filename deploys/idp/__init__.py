"""OpenID Connect login (lesson 12). With `oidc.provider: glewlwyd` the host with role
`idp` runs Debian's Glewlwyd over HTTPS with the platform's certificate: an OIDC plugin,
one confidential client for mail apps (the one Dovecot introspects with), the `mail`
scope, and one account per enabled inventory user. Glewlwyd is configured through its
admin API by a tool on the host that runs whenever the wanted state changes; its
well-known default admin password is replaced by a generated one before anything else.
Dovecot's side (the oauth2 passdb) is in deploys/dovecot/, from mailstack/logins.py."""

from __future__ import annotations

import json
from pathlib import Path

from pyinfra.operations import server

from deploys.ops import directory, unless
from mailstack import tls
from mailstack.component import Component, File, Service, schema_fragment, template_path
from mailstack.conventions import LOGIN_PORTS
from mailstack.inventory import Inventory, Positions, Problem
from mailstack.logins import IDP_CLIENT_SECRET, webmail_domains, webmail_redirect_uri
from mailstack.logins import IDP_PORT as PORT
from mailstack.plan import HostPlan
from mailstack.secrets import password

ETC = "/etc/glewlwyd"
STATE = "/etc/mailstack/idp.json"
ADMIN_SECRET = "/etc/mailstack/idp-admin"  # the admin's password alone, for the seal before each start
SETUP_TOOL = "/usr/local/sbin/mailstack-idp-setup"
# before every start, the package's well-known admin password is replaced offline: it never answers
SEAL = f"# Managed by mailstack\n[Service]\nExecStartPre=+{SETUP_TOOL} --seal {ADMIN_SECRET}\n"
GLEWLWYD = {"user": "glewlwyd", "group": "root"}  # as the package has it: no group of its own
# Debian's login pages link to other packages' scripts and styles, and name their settings
# through a link to a directory: Glewlwyd serves neither (nothing outside its folder), so its
# browsers get real copies, made again whenever one of those packages changes
WEBAPP = "/var/lib/mailstack/idp-webapp"
WEBAPP_SOURCES = "glewlwyd-common libjs-jquery libjs-bootstrap4 libjs-popper.js fonts-fork-awesome"
WEBAPP_MADE_FROM = f"$(dpkg-query -W -f='${{Version}} ' {WEBAPP_SOURCES})"


def runs_glewlwyd(inv: Inventory) -> bool:
    return inv.oidc["enabled"] and inv.oidc["provider"] == "glewlwyd"


def user_password_name(address: str) -> str:
    """Where a user's first IdP password is kept (secrets/passwords/)."""
    return f"idp-user-{address}"


def wanted_state(plan: HostPlan) -> dict:
    """Everything the setup tool makes Glewlwyd hold (secrets included: a 0600 file)."""
    inv, settings = plan.inv, plan.inv.oidc
    scopes = ["openid", settings["scope"]]
    own = {d.name for d in plan.own_domains}
    return {
        "api": f"https://{plan.host.fqdn}:{PORT}/api",  # its certificate checked, by name
        "trust": tls.TRUST,
        "admin_password": password(inv, "idp-admin"),
        "scope": settings["scope"],
        "plugin": {
            "iss": f"https://{plan.host.fqdn}:{PORT}", "jwt-type": "sha", "jwt-key-size": "256",
            "key": password(inv, "idp-signing"), "access-token-duration": settings["token_minutes"] * 60,
            "refresh-token-duration": 1209600, "code-duration": 600, "refresh-token-rolling": True,
            "refresh-token-one-use": "never", "allow-non-oidc": True, "auth-type-code-enabled": True,
            "auth-type-token-enabled": False, "auth-type-id-token-enabled": True,
            "auth-type-none-enabled": False, "auth-type-password-enabled": True,
            "auth-type-client-enabled": False, "auth-type-device-enabled": False,
            "auth-type-refresh-enabled": True, "scope": [], "additional-parameters": [], "claims": [],
            "jwks-show": True, "secret-type": "pairwise", "subject-type": "public", "name-claim": "no",
            "email-claim": "mandatory", "scope-claim": "no", "address-claim": {"type": "no"},
            "allowed-scope": scopes, "pkce-allowed": True, "introspection-revocation-allowed": True,
            "introspection-revocation-auth-scope": [], "introspection-revocation-allow-target-client": True,
        },
        "client": {
            "client_id": settings["client_id"], "name": "mail (mailstack)", "confidential": True,
            "password": password(inv, IDP_CLIENT_SECRET), "enabled": True, "scope": scopes,
            "authorization_type": ["code", "password", "refresh_token"],
            # the browser goes back only to a webmail site, exactly (none: no code flow at all)
            "redirect_uri": [webmail_redirect_uri(d) for d in webmail_domains(inv)],
            "token_endpoint_auth_method": ["client_secret_basic", "client_secret_post"],
        },
        "users": [{"username": u.address, "email": u.address, "name": u.name or u.address,
                   "enabled": u.enabled, "scope": scopes, "password": password(inv, user_password_name(u.address))}
                  for u in inv.users if u.domain in own],
    }


def configure(plan: HostPlan) -> list[Service]:
    certificate, cert, key = tls.own_copy(plan, "glewlwyd", f"{ETC}/tls", **GLEWLWYD)
    context = {"port": PORT, "external_url": f"https://{plan.host.fqdn}:{PORT}", "etc": ETC,
               "cert": cert, "key": key, "webapp": WEBAPP}
    return [
        Service("glewlwyd", (
            File.template(f"{ETC}/glewlwyd.conf", "idp/glewlwyd.conf.j2", context),
            *certificate,
            File.copy(SETUP_TOOL, template_path("idp/mailstack-idp-setup.py"), mode="0750"),
            File.text(ADMIN_SECRET, password(plan.inv, "idp-admin"), mode="0600", secret=True),
            File.text("/etc/systemd/system/glewlwyd.service.d/mailstack.conf", SEAL),
        )),
        Service(None, (
            File.text(STATE, json.dumps(wanted_state(plan), indent=1, sort_keys=True), mode="0600", secret=True),
        ), on_change=f"{SETUP_TOOL} {STATE}"),
    ]


def fail2ban_files(plan: HostPlan) -> tuple[File, ...]:
    """The jail that bans a client guessing passwords at the provider (item of fail2ban's
    service where the brute-force protection runs here)."""
    ports = ",".join(str(p) for p in (*LOGIN_PORTS, PORT))
    return (File.template("/etc/fail2ban/jail.d/mailstack-idp.conf", "idp/fail2ban-jail.conf.j2", {"ports": ports}),
            File.template("/etc/fail2ban/filter.d/mailstack-idp.conf", "idp/fail2ban-filter.conf.j2", {}))


def install(plan: HostPlan) -> None:
    directory(f"{ETC}/tls", mode="0750", **GLEWLWYD)
    unless(f'[ "$(cat {WEBAPP}.made-from 2>/dev/null)" = "{WEBAPP_MADE_FROM}" ]', server.shell,
           name="Glewlwyd's login pages, as files it serves", commands=[
               f"rm -rf {WEBAPP}.new && cp -rL /usr/share/glewlwyd/webapp {WEBAPP}.new",
               f"rm -rf {WEBAPP}.new/config.json && cp /etc/glewlwyd/config-2.7.json/config.json {WEBAPP}.new/",
               f"rm -rf {WEBAPP} && mv {WEBAPP}.new {WEBAPP} && echo \"{WEBAPP_MADE_FROM}\" > {WEBAPP}.made-from"])


def rules(data: dict, pos: Positions) -> list[Problem]:
    """A provider to ask, and no domain without a way to log in."""
    settings, problems = data["oidc"], []
    idp_hosts = [i for i, h in enumerate(data["hosts"]) if "idp" in h["roles"]]
    if settings["enabled"] and settings["provider"] == "glewlwyd" and len(idp_hosts) != 1:
        problems.append(pos.problem(("oidc", "provider"), "provider 'glewlwyd' runs on the host with role "
                                    f"'idp': give exactly one host that role (found {len(idp_hosts)})"))
    if not (settings["enabled"] and settings["provider"] == "glewlwyd"):
        problems += [pos.problem(("hosts", i, "roles"), "role 'idp' runs the platform's own identity provider: "
                                 "set oidc.enabled and oidc.provider 'glewlwyd', or drop the role") for i in idp_hosts]
    if settings["enabled"] and settings["provider"] == "external":
        for key in ("introspection_url", "client_secret_file"):
            if key not in settings:
                problems.append(pos.problem(("oidc",), f"provider 'external' needs {key}"))
        if "client_secret_file" in settings and not Path(settings["client_secret_file"]).expanduser().is_file():
            problems.append(pos.problem(("oidc", "client_secret_file"), f"{settings['client_secret_file']} is not a "
                                        "file on this machine; the deploy reads the client secret from it"))
        if not settings.get("introspection_url", "https://").startswith("https://"):
            problems.append(pos.problem(("oidc", "introspection_url"), "tokens cross the network: use https://"))
    for i, domain in enumerate(data["domains"]):
        if not domain["password_login"] and not settings["enabled"]:
            problems.append(pos.problem(("domains", i, "password_login"), "without password logins this "
                                        "domain's users need oidc.enabled to log in at all"))
    return problems


COMPONENT = Component(
    name="idp",
    schema=schema_fragment(__file__),
    roles=frozenset({"idp"}),
    packages=("glewlwyd", "dbconfig-sqlite3"),
    preseed=("glewlwyd glewlwyd/database-type select sqlite3",),
    quiet_install=True,  # it would answer with the package's admin password until sealed
    units=("glewlwyd",),
    public={"idp": ((PORT, "OpenID Connect provider, HTTPS (tokens for mail clients)"),)},
    rules=(rules,),  # its section, oidc, also serves an external provider: the rules check it
    enabled=runs_glewlwyd,
    extends={"fail2ban": fail2ban_files},
    adds={"tls.readers": tls.readers("glewlwyd")},
    install=install,
    configure=configure,
)
