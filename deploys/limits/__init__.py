"""Hosts with `filter`: what one login may send through submission, counted in Redis by
mailstack's rspamd rule (limits.lua), with the inventory's limits per platform, domain and
user; an account over its hold threshold is put on hold, its mail kept in the hold queue of
the Postfix that took it, and (limits.lock_password) its logins refused until released.
`mailstack account` runs the host tool (on filter and submission hosts) that shows, holds
and releases an account."""

from __future__ import annotations

from mailstack.component import AlertRule, Component, File, Service, schema_fragment
from mailstack.conventions import (
    ACCOUNT_TOOL,
    DOVECOT_ETC,
    DOVECOT_SECRET,
    LIMITS_KEYS,
    REDIS_ACCOUNT_SECRET,
    REDIS_ACCOUNT_USER,
    REDIS_PASSWORD,
    REDIS_PORT,
)
from mailstack.inventory import Positions, Problem
from mailstack.plan import LOGIN_ROLES, HostPlan
from mailstack.secrets import password

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
                          {"prefix": LIMITS_KEYS, "default": lua_table(plan.inv.limits), "overrides": overrides}),)


def dovecot_files(plan: HostPlan) -> tuple[File, ...]:
    """The deny passdb that refuses an account on hold (found in Redis), or, with
    lock_password off, the same paths saying so: its include then adds nothing."""
    passdb, lookup = f"{DOVECOT_ETC}/held-passdb.conf", f"{DOVECOT_ETC}/held.conf.ext"
    if not plan.inv.limits["lock_password"]:
        off = "# Managed by mailstack: limits.lock_password is off, a held account may still log in.\n"
        return File.text(passdb, off), File.text(lookup, off, **DOVECOT_SECRET)
    return (File.template(passdb, "limits/held-passdb.conf.j2", {"lookup": lookup}),
            File.template(lookup, "limits/held.conf.ext.j2",
                          {"prefix": LIMITS_KEYS, "redis_port": REDIS_PORT,
                           "redis_password": password(plan.inv, REDIS_PASSWORD)},
                          **DOVECOT_SECRET))


def rules(data: dict, pos: Positions) -> list[Problem]:
    """lock_password asks the filter host's Redis on loopback: each login host must be one."""
    if not (data["limits"]["enabled"] and data["limits"]["lock_password"]):
        return []
    return [pos.problem(("hosts", i, "roles"), f"limits.lock_password with logins on {h['name']}, which is no "
                        "filter host, is not implemented yet (Dovecot would ask another host's Redis in clear): "
                        "add the filter role here or turn lock_password off")
            for i, h in enumerate(data["hosts"])
            if not h.get("outside") and LOGIN_ROLES & set(h["roles"]) and "filter" not in h["roles"]]


def redis_clients(plan: HostPlan) -> dict[int, tuple[str, ...]]:
    """Dovecot here reads the hold record from Redis, as its own user."""
    return {REDIS_PORT: ("dovecot",)} if plan.runs("dovecot") and plan.inv.limits["lock_password"] else {}


WATCH = "mailstack-hold-watch"


def configure(plan: HostPlan) -> list[Service]:
    """The host tool: counters on a filter host, held mail on a Postfix host; where users
    also log in (IMAP, POP3) next to the counters, the service that ends a held account's
    open sessions."""
    tool = Service(None, (File.template(ACCOUNT_TOOL, "limits/mailstack-account.py.j2",
                                        {"prefix": LIMITS_KEYS, "redis_user": REDIS_ACCOUNT_USER,
                                         "redis_secret": REDIS_ACCOUNT_SECRET}, mode="0750"),))
    if not ("filter" in plan.roles and {"mailbox", "proxy"} & set(plan.roles)):
        return [tool]
    return [tool, Service(WATCH, (File.template(f"/etc/systemd/system/{WATCH}.service",
                                                f"limits/{WATCH}.service.j2", {"program": ACCOUNT_TOOL}),))]


ON_HOLD = AlertRule("MailstackAccountOnHold", "mailstack_account_on_hold > 0",
                    "{{ $labels.login }} was put on hold (over its sending limit); its mail waits in the hold queue",
                    severity="critical")

COMPONENT = Component(
    name="limits",
    schema=schema_fragment(__file__),
    roles=frozenset({"filter", "submission"}),
    platform_only=True,
    section="limits",
    enabled=lambda inv: inv.limits["enabled"],
    rules=(rules,),
    extends={"rspamd": rspamd_files, "dovecot": dovecot_files},
    adds={"monitoring.rules": lambda inv, host: [ON_HOLD]},  # the account tool exports who is on hold
    loopback_clients=redis_clients,
    configure=configure,
)
