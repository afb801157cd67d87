"""Hosts with `filter`: what one login may send through submission, counted in Redis by
mailstack's rspamd rule (limits.lua), with the inventory's limits per platform, domain and
user; an account over its hold threshold is put on hold, its mail kept in the hold queue of
the Postfix that took it. `mailstack account` runs the host tool (on filter and submission
hosts) that shows, holds and releases an account."""

from __future__ import annotations

from deploys.rspamd import REDIS_INCLUDE
from mailstack.component import Component, File, Service
from mailstack.plan import HostPlan

ACCOUNT_TOOL = "/usr/local/sbin/mailstack-account"
PREFIX = "mailstack:limits:"
NAMES = ("messages_per_minute", "messages_per_hour", "messages_per_day", "recipients_per_hour",
         "recipients_per_day", "hold_after")


def lua_table(values) -> str:
    """A Lua table of the given limits (numbers from the schema)."""
    return "{ " + ", ".join(f"{name} = {int(values[name])}" for name in NAMES if name in values) + " }"


def rspamd_files(plan: HostPlan) -> tuple[File, ...]:
    """The rule, with each domain's and user's own limits."""
    own = {d.name for d in plan.own_domains}
    overrides = [(d.name, lua_table(d.limits)) for d in plan.own_domains if d.limits]
    overrides += [(u.address, lua_table(u.limits)) for u in plan.inv.users if u.limits and u.domain in own]
    return (File.template("/etc/rspamd/mailstack.d/limits.lua", "limits/limits.lua.j2",
                          {"prefix": PREFIX, "default": lua_table(plan.inv.limits), "overrides": overrides}),)


def configure(plan: HostPlan) -> list[Service]:
    """The host tool: counters on a filter host, held mail on a Postfix host."""
    return [Service(None, (File.template(ACCOUNT_TOOL, "limits/mailstack-account.py.j2",
                                         {"prefix": PREFIX, "redis_settings": REDIS_INCLUDE}, mode="0750"),))]


COMPONENT = Component(
    name="limits",
    roles=frozenset({"filter", "submission"}),
    platform_only=True,
    section="limits",
    enabled=lambda inv: inv.limits["enabled"],
    extends={"rspamd": rspamd_files},
    configure=configure,
)
