"""Hosts with `filter` (rspamd's counters and greylisting, the sending limits) or `auth`
(Nauthilus's brute-force buckets): Debian's Redis, on loopback only and with a generated
password even there. Each user keeps its own database number."""

from __future__ import annotations

from pyinfra.operations import files

from mailstack.component import Component, File, Service
from mailstack.plan import HostPlan
from mailstack.secrets import password

INCLUDE = "/etc/redis/mailstack.conf"
PORT = 6379
DATABASES = {"rspamd": 0, "nauthilus": 1}  # rspamd's rules and the limits tool share 0


def secret(inv) -> str:
    """The password every Redis client on the platform's hosts uses (generated once)."""
    return password(inv, "redis")


def configure(plan: HostPlan) -> list[Service]:
    return [Service("redis-server", (File.template(INCLUDE, "redis/redis-server.conf.j2",
                                                   {"redis_password": secret(plan.inv)},
                                                   secret=True, group="redis", mode="0640"),))]


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
