"""Hosts with `webmail` (and `web`): Roundcube from Debian, run by PHP-FPM behind the web
role's nginx, at https://webmail.DOMAIN for every platform domain with `webmail: true`.

Roundcube is a mail client like any other: it logs in to IMAP (993) and submission (465) of
the user's domain by name, certificate checked, with the user's own password or, through the
platform's identity provider, an OAuth2 token (XOAUTH2). Dovecot and Postfix decide, so the
ban, the hold, the header-From binding, the limits and the S/MIME gateway apply unchanged. The
browser's address reaches Dovecot before the login (IMAP ID, trusted from these hosts only),
so wrong passwords count where they come from. At a domain's name only that domain's users
log in; a domain without `password_login` is sent to the provider straight away.

The database is SQLite (Debian's dbconfig made it at install): it holds sessions, contacts
and preferences of one instance and needs no daemon. The backups do not take it yet."""

from __future__ import annotations

import json

from mailstack import tls
from mailstack.component import Component, File, Service, guard, schema_fragment, template_path
from mailstack.conventions import LOGIN_PORTS
from mailstack.dns import Record, address_records, imap_name, smtp_name, webmail_name
from mailstack.inventory import Inventory, Positions, Problem
from mailstack.inventory.model import Host
from mailstack.logins import IDP_CLIENT_SECRET, provider_url, webmail_domains
from mailstack.plan import HostPlan
from mailstack.secrets import password

PHP = "8.2"  # Debian 12's PHP
FPM = f"php{PHP}-fpm"
SOCKET = "/run/php/roundcube.sock"
ETC = "/etc/roundcube"
SITE = "/etc/nginx/sites-enabled/mailstack-webmail"
PLUGIN = "mailstack_client_ip"
UPLOAD_MB = 25  # an attachment; a message with it fits in the platform's message size
POST_MB = UPLOAD_MB + 5  # a request carrying one (encoding and form fields)
HTTPS = 443  # the web role's port, where webmail takes passwords
DES_KEY = "webmail-des-key"  # secrets/passwords/: encrypts the password in the session
READABLE_BY_PHP = {"mode": "0640", "group": "www-data", "secret": True}

# what a page may load: Roundcube's own scripts (inline, and the answers to its requests, which
# it evaluates), styles, images and frames; nothing from elsewhere (no remote images in mail, no
# tracking), and no framing by others
CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; frame-src 'self' blob:; "
       "frame-ancestors 'self'; form-action 'self'; base-uri 'self'; object-src 'none'")


def oidc(inv: Inventory) -> bool:
    """Whether webmail offers the platform's provider (an external one is not wired here yet)."""
    return inv.oidc["enabled"] and inv.oidc["provider"] == "glewlwyd"


def names(inv: Inventory, host: Host) -> list[str]:
    return [webmail_name(d) for d in webmail_domains(inv)]


def records(inv: Inventory, host: Host) -> list[Record]:
    return [r for d in webmail_domains(inv) for r in address_records(webmail_name(d), [host])]


def settings(plan: HostPlan) -> dict:
    """Roundcube's settings: what every site shares, and each site's own (its domain's
    servers, its users only, and the provider first where passwords are refused)."""
    inv = plan.inv
    verified = {"ssl": {"verify_peer": True, "verify_peer_name": True, "cafile": tls.TRUST}}
    common = {
        "des_key": password(inv, DES_KEY), "cipher_method": "AES-256-CBC",
        "plugins": [PLUGIN], "skin": "elastic", "product_name": "Webmail", "display_product_info": 0,
        "enable_installer": False, "use_https": True, "session_samesite": "Lax", "ip_check": True,
        "session_lifetime": inv.webmail["session_minutes"], "login_autocomplete": 0,
        "login_username_filter": "email", "identities_level": 3,
        # Roundcube's own lock is per account: anyone could lock a user out by failing three
        # times. The ban (per client address, at Dovecot) and nginx's rate protect instead.
        "login_rate_limit": 0,
        "imap_conn_options": verified, "smtp_conn_options": verified,
        "smtp_user": "%u", "smtp_pass": "%p",
        "log_driver": "syslog", "syslog_id": "roundcube", "log_logins": True, "smtp_log": True,
        "temp_dir": "/var/lib/roundcube/temp/", "max_message_size": f"{UPLOAD_MB}M",
    }
    if oidc(inv):
        common |= {
            "oauth_provider": "generic", "oauth_provider_name": "the platform's login",
            "oauth_client_id": inv.oidc["client_id"], "oauth_client_secret": password(inv, IDP_CLIENT_SECRET),
            "oauth_auth_uri": provider_url(inv, "auth"), "oauth_token_uri": provider_url(inv, "token"),
            "oauth_identity_uri": provider_url(inv, "userinfo"), "oauth_verify_peer": True,
            "oauth_scope": f"openid {inv.oidc['scope']}", "oauth_identity_fields": ["email"],
        }
    sites = {webmail_name(d): {
        "imap_host": f"ssl://{imap_name(d)}:993", "smtp_host": f"ssl://{smtp_name(d)}:465",
        "username_domain": d.name, "username_domain_forced": True,  # this domain's users only
        "oauth_login_redirect": oidc(inv) and not d.password_login,
    } for d in webmail_domains(inv)}
    return guard({"common": common, "sites": sites}, f"{ETC}/mailstack.json")


def site(plan: HostPlan) -> File:
    """The server block of the web role's nginx (after the host's certificate exists)."""
    context = {**tls.context(plan), "protocols": tls.nginx_protocols(plan.inv), "socket": SOCKET, "csp": CSP,
               "sites": tls.by_certificate(plan, names(plan.inv, plan.host)), "post_mb": POST_MB,
               "logins_per_minute": plan.inv.webmail["logins_per_minute"]}
    return File.template(SITE, "webmail/nginx-webmail.conf.j2", context)


def configure(plan: HostPlan) -> list[Service]:
    pool = {"socket": SOCKET, "max_children": 8, "upload_mb": UPLOAD_MB, "post_mb": POST_MB}
    return [Service(FPM, (
        File.template(f"/etc/php/{PHP}/fpm/pool.d/roundcube.conf", "webmail/php-fpm-pool.conf.j2", pool),
        File.copy(f"{ETC}/config.inc.php", template_path("webmail/config.inc.php"), **READABLE_BY_PHP),
        File.text(f"{ETC}/mailstack.json", json.dumps(settings(plan), indent=1, sort_keys=True), **READABLE_BY_PHP),
        File.copy(f"/var/lib/roundcube/plugins/{PLUGIN}/{PLUGIN}.php", template_path(f"webmail/{PLUGIN}.php")),
    ), check=f"php-fpm{PHP} -t", absent=(f"/etc/php/{PHP}/fpm/pool.d/www.conf",)),
        Service("nginx", (site(plan),), check="nginx -t -q")]


def fail2ban_files(plan: HostPlan) -> tuple[File, ...]:
    """The jail that counts Roundcube's failed logins (an item of fail2ban's service here)."""
    ports = ",".join(str(p) for p in (*LOGIN_PORTS, HTTPS))
    return (File.template("/etc/fail2ban/jail.d/mailstack-webmail.conf", "webmail/fail2ban-jail.conf.j2",
                          {"ports": ports}),
            File.template("/etc/fail2ban/filter.d/mailstack-webmail.conf", "webmail/fail2ban-filter.conf.j2", {}))


def login_ports(inv: Inventory, host: Host) -> list[int]:
    """Where this host takes passwords besides the mail ports: a ban closes it too."""
    return [HTTPS]


def rules(data: dict, pos: Positions) -> list[Problem]:
    """One webmail host, which runs nginx (the web role); a domain asks for webmail only
    where there is one; a tokens-only domain needs the platform's own provider for it."""
    problems = []
    hosts = [(i, h) for i, h in enumerate(data["hosts"]) if "webmail" in h["roles"]]
    for i, host in hosts:
        if "web" not in host["roles"]:
            problems.append(pos.problem(("hosts", i, "roles"), "role 'webmail' is served by the web role's nginx: "
                                        "give this host the role 'web' too"))
    if len(hosts) > 1:
        problems.append(pos.problem(("hosts", hosts[1][0], "roles"), "one host serves webmail: give the role "
                                    f"'webmail' to one host (found {len(hosts)})"))
    settings = data["oidc"]
    for i, domain in enumerate(data["domains"]):
        if not domain["webmail"]:
            continue
        if not hosts:
            problems.append(pos.problem(("domains", i, "webmail"), f"webmail for {domain['name']} needs a host "
                                        "with the roles 'webmail' and 'web'"))
        elif not domain["password_login"] and settings["provider"] != "glewlwyd":
            problems.append(pos.problem(("domains", i, "webmail"), "webmail logins through an external "
                                        "provider are not implemented yet: this domain takes tokens only"))
    return problems


COMPONENT = Component(
    name="webmail",
    schema=schema_fragment(__file__),
    roles=frozenset({"webmail"}),
    packages=("roundcube-core", "roundcube-sqlite3", "php-fpm"),
    preseed=("roundcube-core roundcube/dbconfig-install boolean true",
             "roundcube-core roundcube/database-type select sqlite3"),
    units=(FPM,),
    section="webmail",
    platform_only=True,
    rules=(rules,),
    adds={"tls.names": names, "dns.records": records, "bruteforce.ports": login_ports},
    extends={"fail2ban": fail2ban_files},
    configure=configure,
)
