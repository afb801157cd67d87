"""Hosts with `filter` (rspamd's counters and greylisting, the sending limits) or `auth`
(Nauthilus's brute-force buckets): Debian's Redis, on loopback only, with ACL users even
there (passwords generated, kept in Redis's settings as hashes only). Each user keeps its
own database number.

rspamd 3.4 and Dovecot 2.3 send a password without a user name, so they share Redis's
`default` user: data commands only, no administration (CONFIG, ACL, SHUTDOWN, FLUSHALL,
MONITOR, DEBUG, MODULE...). `mailstack account` has a user of its own that reaches the
limits' keys only."""

from __future__ import annotations

import hashlib

from pyinfra.operations import files

from mailstack.component import Component, File, Service
from mailstack.conventions import LIMITS_KEYS
from mailstack.plan import HostPlan
from mailstack.secrets import password

INCLUDE = "/etc/redis/mailstack.conf"
PORT = 6379
DATABASES = {"rspamd": 0, "nauthilus": 1}  # rspamd's rules and the limits tool share 0
ACCOUNT_USER = "mailstack-account"
ACCOUNT_SECRET = "/etc/mailstack/redis-account.secret"  # root's: the account tool reads it


def secret(inv) -> str:
    """The password of Redis's `default` user: rspamd's and Dovecot's (generated once)."""
    return password(inv, "redis")


def account_secret(inv) -> str:
    """The password of the account tool's own Redis user."""
    return password(inv, "redis-account")


def digest(password_text: str) -> str:
    """How Redis's ACL keeps a password (`#` and its SHA-256): never the password itself."""
    return hashlib.sha256(password_text.encode()).hexdigest()


def configure(plan: HostPlan) -> list[Service]:
    users = {"default_hash": digest(secret(plan.inv)), "account_user": ACCOUNT_USER,
             "account_hash": digest(account_secret(plan.inv)), "account_keys": f"{LIMITS_KEYS}*"}
    return [Service("redis-server", (
        File.template(INCLUDE, "redis/redis-server.conf.j2", users, secret=True, group="redis", mode="0640"),
        File.text(ACCOUNT_SECRET, account_secret(plan.inv) + "\n", mode="0600", secret=True)))]


CLIENTS = {"rspamd": "_rspamd", "limits": "dovecot", "nauthilus": "nauthilus"}  # component: its Redis user


def loopback_clients(plan: HostPlan) -> dict[int, tuple[str, ...]]:
    """rspamd, Dovecot (the hold record, with limits) and Nauthilus, where they run here."""
    here = {c.name for c in plan.components}
    users = tuple(user for component, user in CLIENTS.items() if component in here
                  and (component != "limits" or ("dovecot" in here and plan.inv.limits["lock_password"])))
    return {PORT: users}


def install(plan: HostPlan) -> None:
    files.line(name="Redis reads mailstack's settings", path="/etc/redis/redis.conf", line=f"include {INCLUDE}")


COMPONENT = Component(
    name="redis",
    roles=frozenset({"filter", "auth"}),
    packages=("redis-server",),
    units=("redis-server",),
    local=(("127.0.0.1", PORT), ("::1", PORT)),
    loopback_clients=loopback_clients,
    install=install,
    configure=configure,
)
