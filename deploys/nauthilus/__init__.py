"""The host with `auth` (nauthilus.enabled): Nauthilus, an operator-supplied artifact pinned
in `artifacts`, in front of every password login. Dovecot (IMAP, POP3, and SMTP AUTH through
its SASL service) posts each login to Nauthilus's JSON API over HTTPS with backchannel
credentials; Nauthilus checks the password against the inventory's hashes (a Lua backend
reading a file this deploy renders) and bans a client address that keeps failing
(brute-force buckets in Redis on loopback). Its own user, a hardened unit, the daemon's
config check before any restart. Dovecot's side: deploys/dovecot/, from mailstack/logins.py."""

from __future__ import annotations

import json
import re

from deploys.ops import directory, system_group, system_user
from mailstack import tls
from mailstack.artifacts import ArtifactUnavailable, program, resources
from mailstack.component import Component, File, Opening, Service, schema_fragment, seconds, template_path
from mailstack.conventions import REDIS_DATABASES, REDIS_PASSWORD, REDIS_PORT
from mailstack.inventory import Inventory, Positions, Problem
from mailstack.logins import BACKCHANNEL_SECRET, BACKCHANNEL_USER, asks_nauthilus
from mailstack.plan import LOGIN_ROLES, HostPlan, platform_hosts
from mailstack.secrets import password

BINARY = "/usr/local/sbin/nauthilus"
ETC = "/etc/nauthilus"
CONFIG = f"{ETC}/nauthilus.yml"
USERS = f"{ETC}/users"
ASSETS = "/usr/local/share/nauthilus"  # the login frontend's, which stays off: empty
OWNER = {"user": "nauthilus", "group": "nauthilus"}
SECRET = {"mode": "0640", "group": "nauthilus", "secret": True}
PROTOCOLS = ("imap", "pop3", "smtp")  # Dovecot's service names, as Nauthilus counts them


def crypt_hash(stored: str) -> str:
    """An inventory hash as Nauthilus's crypt compares it: Dovecot's {SCHEME} prefix off
    (every scheme the schema allows is a crypt string after it)."""
    return re.sub(r"^\{[A-Z0-9-]+\}", "", stored)


def users(inv: Inventory) -> str:
    """address<TAB>hash of every inventory user of a domain with password logins; which
    service a user may use stays Dovecot's decision (passdb-<service>)."""
    return "\n".join(f"{u.address}\t{crypt_hash(u.password)}" for u in inv.users
                     if u.domain in {d.name for d in inv.own_domains()} and inv.domain(u.domain).password_login
                     and inv.domain(u.domain).user_source == "inventory")


def settings(plan: HostPlan) -> dict:
    """Nauthilus's configuration (config-v2 layout), as data: rendered as JSON, which is YAML."""
    inv, own = plan.inv, plan.inv.nauthilus
    guard = inv.bruteforce
    buckets = [{"name": f"mailstack_{family}", "period": f"{seconds(guard['window'])}s", "cidr": cidr,
                family: True, "failed_requests": guard["max_failures"],
                "ban_time": f"{seconds(guard['ban_time'])}s", "filter_by_protocol": list(PROTOCOLS)}
               for family, cidr in (("ipv4", 32), ("ipv6", 64))]
    return {
        "runtime": {
            "instance_name": f"mailstack-{inv.platform['name']}",
            "servers": {"http": {
                "address": f"{plan.host.address}:{own['port']}",
                "tls": {"enabled": True, "cert": f"{ETC}/tls/cert.pem", "key": f"{ETC}/tls/key.pem",
                        "min_tls_version": "TLS1.2" if inv.tls["min_version"] == "TLSv1.2" else "TLS1.3"},
            }},
        },
        "observability": {"log": {"level": "info", "json": False}, "tracing": {"enabled": False}},
        "storage": {"redis": {
            "primary": {"address": f"127.0.0.1:{REDIS_PORT}", "password": password(inv, REDIS_PASSWORD)},
            "database_number": REDIS_DATABASES["nauthilus"], "prefix": "nauthilus:",
            # no login result is cached: a changed password or a ban counts at once
            "positive_cache_ttl": 1, "negative_cache_ttl": 1,
            "encryption_secret": password(inv, "nauthilus-encryption"),
            "password_nonce": password(inv, "nauthilus-nonce"),
        }},
        "auth": {
            "backchannel": {"basic_auth": {"enabled": True, "username": BACKCHANNEL_USER,
                                           "password": password(inv, BACKCHANNEL_SECRET)}},
            "backends": {
                "order": ["lua"],
                "lua": {"backend": {
                    "default": {"backend_script_path": f"{ETC}/mailstack-backend.lua"},
                    "search": [{"protocol": list(PROTOCOLS), "cache_name": "mailstack"}],
                }},
            },
            "controls": {
                "enabled": ["brute_force"] if own["brute_force"] else [],
                **({"brute_force": {"protocols": list(PROTOCOLS), "buckets": buckets,
                                    "ip_allowlist": sorted(h.address for h in platform_hosts(inv))
                                    + list(guard["never_ban"])}} if own["brute_force"] else {}),
            },
        },
        "identity": {"frontend": {"enabled": False, "assets": {
            "html_static_content_path": f"{ASSETS}/templates", "language_resources": f"{ASSETS}/resources"}}},
    }


def configure(plan: HostPlan) -> list[Service]:
    cert, key, _ = tls.local_files(plan)
    entry = plan.inv.artifacts[plan.inv.nauthilus["artifact"]]
    bundles = resources(entry)  # its language files, from a module build (a release tarball: by hand)
    language = [File.copy(f"{ASSETS}/resources/{f.relative_to(bundles)}", f)
                for f in sorted(bundles.rglob("*")) if f.is_file()] if bundles else []
    return [Service("mailstack-nauthilus", (
        File.copy(BINARY, program(entry, "nauthilus"), mode="0755"),
        *language,
        File.template("/etc/systemd/system/mailstack-nauthilus.service", "nauthilus/mailstack-nauthilus.service.j2",
                      {"binary": BINARY, "config": CONFIG, "etc": ETC}),
        File.text(CONFIG, "# Managed by mailstack (nauthilus): JSON, which is YAML.\n"
                  + json.dumps(settings(plan), indent=2), **SECRET),
        File.copy(f"{ETC}/mailstack-backend.lua", template_path("nauthilus/mailstack-backend.lua")),
        File.text(USERS, users(plan.inv), **SECRET),
        File.copy(f"{ETC}/tls/cert.pem", cert, **OWNER),
        File.copy(f"{ETC}/tls/key.pem", key, mode="0600", secret=True, **OWNER),
    ), check=f"{BINARY} -config {CONFIG} -config-check >/dev/null")]


def install(plan: HostPlan) -> None:
    system_group("nauthilus")
    system_user("nauthilus", home="/nonexistent", group="nauthilus")
    directory(ETC, mode="0750", user="root", group="nauthilus")
    directory(f"{ETC}/tls", mode="0750", **OWNER)
    for path in (f"{ASSETS}/templates", f"{ASSETS}/resources"):
        directory(path, mode="0755")


def login_peers(plan: HostPlan) -> tuple[str, ...]:
    """The other hosts whose Dovecot asks Nauthilus (this host reaches itself over lo)."""
    return plan.peers(platform_hosts(plan.inv, *LOGIN_ROLES))


def openings(plan: HostPlan) -> list[Opening]:
    """The API for the platform's other login hosts only."""
    peers = login_peers(plan)
    return [Opening(plan.inv.nauthilus["port"], "tcp", "auth: Nauthilus for the login hosts (HTTPS)",
                    peers, plan.host.address)] if peers else []


def local(plan: HostPlan) -> set[tuple[str, int]]:
    """Without other login hosts the API is still on the host's address (by name, for
    its certificate), closed by the firewall."""
    return set() if login_peers(plan) else {(plan.host.address, plan.inv.nauthilus["port"])}


def rules(data: dict, pos: Positions) -> list[Problem]:
    """One auth host; the artifact pinned and as pinned; no login Nauthilus cannot check;
    no artifact pinned that nothing uses (Nauthilus is the only program taken that way)."""
    own, auth = data["nauthilus"], [i for i, h in enumerate(data["hosts"]) if "auth" in h["roles"]]
    used = {own["artifact"]} if own["enabled"] else set()
    unused = [pos.problem(("artifacts", name), "has no effect: nothing uses it (nauthilus.artifact names the "
                          "program Nauthilus runs); remove it") for name in data["artifacts"] if name not in used]
    if not own["enabled"]:
        return [*unused, *(pos.problem(("hosts", i, "roles"), "role 'auth' runs Nauthilus: set nauthilus.enabled "
                                       "(and pin its artifact) or drop the role") for i in auth)]
    problems = unused
    if data["tls"]["source"] == "acme":  # it keeps its own copy of the certificate, which renewals would leave behind
        problems.append(pos.problem(("nauthilus", "enabled"), "Nauthilus with tls.source 'acme' is not implemented "
                                    "yet: use 'files' or 'lab-ca' while Nauthilus runs"))
    if len(auth) != 1:
        where = ("hosts", auth[1], "roles") if auth else ("nauthilus", "enabled")
        problems.append(pos.problem(where, "Nauthilus needs exactly one host with the 'auth' role "
                                    f"(found {len(auth)}; several are not implemented yet)"))
    for i, domain in enumerate(data["domains"]):
        if domain["user_source"] == "ldap":
            problems.append(pos.problem(("domains", i, "user_source"), "directory users through Nauthilus are "
                                        "not implemented yet (its backend knows the inventory's users)"))
    if any("proxy" in h["roles"] for h in data["hosts"]):
        problems.append(pos.problem(("nauthilus", "enabled"), "Nauthilus with a Dovecot proxy is not "
                                    "implemented yet"))
    name = own["artifact"]
    if name not in data["artifacts"]:
        return [*problems, pos.problem(("nauthilus", "artifact"), f"names no entry under artifacts: add "
                                       f"artifacts.{name} with the Nauthilus program's url (or mirror) and sha256")]
    try:
        program(data["artifacts"][name], "nauthilus")
    except ArtifactUnavailable as err:
        problems.append(pos.problem(("artifacts", name), str(err)))
    return problems


COMPONENT = Component(
    name="nauthilus",
    schema=schema_fragment(__file__),
    roles=frozenset({"auth"}),
    units=("mailstack-nauthilus",),
    section="nauthilus",
    enabled=asks_nauthilus,
    rules=(rules,),
    openings=openings,
    local=local,
    loopback_clients=lambda plan: {REDIS_PORT: ("nauthilus",)},  # Redis keeps its buckets
    install=install,
    configure=configure,
)
