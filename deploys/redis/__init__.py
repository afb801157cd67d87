"""Hosts with `filter` (rspamd's counters and greylisting, the sending limits) or `auth`
(Nauthilus's brute-force buckets): Debian's Redis, on loopback only, with ACL users even
there (passwords generated, kept in Redis's settings as hashes only). Each user keeps its
own database number.

rspamd 3.4 and Dovecot 2.3 send a password without a user name, so they share Redis's
`default` user: data commands only, no administration (CONFIG, ACL, SHUTDOWN, FLUSHALL,
MONITOR, DEBUG, MODULE...). `mailstack account` has a user of its own that reaches the
limits' keys only. How to reach it is a convention (mailstack/conventions.py); each client
declares its own system user for the loopback firewall."""

from __future__ import annotations

import hashlib

from pyinfra.operations import files

from deploys.ops import unless
from mailstack.component import Component, File, Service
from mailstack.conventions import (
    LIMITS_KEYS,
    REDIS_ACCOUNT_PASSWORD,
    REDIS_ACCOUNT_SECRET,
    REDIS_ACCOUNT_USER,
    REDIS_PASSWORD,
    REDIS_PORT,
)
from mailstack.plan import HostPlan
from mailstack.secrets import password

INCLUDE = "/etc/redis/mailstack.conf"


def digest(password_text: str) -> str:
    """How Redis's ACL keeps a password (`#` and its SHA-256): never the password itself."""
    return hashlib.sha256(password_text.encode()).hexdigest()


def configure(plan: HostPlan) -> list[Service]:
    account = password(plan.inv, REDIS_ACCOUNT_PASSWORD)
    users = {"default_hash": digest(password(plan.inv, REDIS_PASSWORD)), "account_user": REDIS_ACCOUNT_USER,
             "account_hash": digest(account), "account_keys": f"{LIMITS_KEYS}*"}
    return [Service("redis-server", (
        File.template(INCLUDE, "redis/redis-server.conf.j2", users, secret=True, group="redis", mode="0640"),
        File.text(REDIS_ACCOUNT_SECRET, account + "\n", mode="0600", secret=True)))]


def install(plan: HostPlan) -> None:
    unless(f"grep -qxF 'include {INCLUDE}' /etc/redis/redis.conf", files.line, name="Redis reads mailstack's settings",
           path="/etc/redis/redis.conf", line=f"include {INCLUDE}")


COMPONENT = Component(
    name="redis",
    roles=frozenset({"filter", "auth"}),
    packages=("redis-server",),
    units=("redis-server",),
    local=(("127.0.0.1", REDIS_PORT), ("::1", REDIS_PORT)),
    # who may connect: each client declares its own user (rspamd, limits, nauthilus)
    loopback_clients=lambda plan: {REDIS_PORT: ()},
    install=install,
    configure=configure,
)
