"""Hosts with `sandbox` (and `filter`): PeekabooAV, the pinned PyPI release installed
from wheels the control machine brings (hosts reach no package index), run by its own
user under a hardened unit on loopback, and asked by rspamd (the project's own Lua rule)
about every attachment of mail from outside, with the temp-fail-then-verdict flow."""

from __future__ import annotations

from pathlib import Path

from deploys.ops import directory, pip_install, system_user, virtualenv
from mailstack.component import Component, File, Service, schema_fragment, seconds, template_path
from mailstack.conventions import CLAMAV_UNSCANNED, SUBMISSION_VIA_GATEWAY
from mailstack.inventory import Positions, Problem, resolve, schema
from mailstack.plan import HostPlan
from mailstack.wheels import requirements, wheelhouse

USER = "mailstack-peekaboo"
HOME = "/opt/mailstack-peekaboo"
ETC = "/etc/mailstack-peekaboo"
STATE = "/var/lib/mailstack-peekaboo"
LOCK = Path(__file__).with_name("peekaboo.lock")
# the sandbox-free ruleset: the first rule that decides wins
RULES = ("known", "file_larger_than", "file_type_on_whitelist", "office_macro", "expressions", "final_rule")


def ruleset(plan: HostPlan) -> dict:
    settings = plan.inv.peekaboo
    return {"rules": [r for r in RULES if r != "office_macro" or settings["office_macros"]],
            "ignore_types": settings["ignore_types"],
            "bad_extensions": ", ".join(f"'{e}'" for e in settings["bad_extensions"])}


def configure(plan: HostPlan) -> list[Service]:
    settings = plan.inv.peekaboo
    wheels = wheelhouse(LOCK)
    paths = {"user": USER, "home": HOME, "etc": ETC, "state": STATE, "port": settings["port"]}
    return [
        Service(None, (*(File.copy(f"{HOME}/wheels/{w.name}", w) for w in wheels),
                       File.text(f"{HOME}/wheels/requirements.txt", "\n".join(requirements(LOCK)))),
                on_change=pip_install(f"{HOME}/venv", f"{HOME}/wheels")),
        Service("mailstack-peekaboo", (
            File.template(f"{ETC}/peekaboo.conf", "peekaboo/peekaboo.conf.j2", paths, group=USER, mode="0640"),
            File.template(f"{ETC}/ruleset.conf", "peekaboo/ruleset.conf.j2", ruleset(plan), group=USER, mode="0640"),
            File.text(f"{ETC}/analyzers.conf", "# Managed by mailstack: no sandbox analyzers.", group=USER,
                      mode="0640"),
            File.template("/etc/systemd/system/mailstack-peekaboo.service", "peekaboo/mailstack-peekaboo.service.j2",
                          paths),
            File.copy(f"{HOME}/check.py", template_path("peekaboo/check.py")),
        ), check=f"runuser -u {USER} -- {HOME}/venv/bin/python {HOME}/check.py {ETC}/peekaboo.conf"),
    ]


def rspamd_files(plan: HostPlan) -> tuple[File, ...]:
    """The project's own rspamd rule that asks Peekaboo (rspamd 3.4 has none)."""
    settings = plan.inv.peekaboo
    waits = sorted((d.name, d.inbound["attachment_wait"]) for d in plan.own_domains)
    return (File.template("/etc/rspamd/mailstack.d/peekaboo.lua", "peekaboo/peekaboo.lua.j2", {
        "port": settings["port"], "pending_timeout": seconds(settings["pending_timeout"]),
        "on_no_verdict": settings["on_no_verdict"], "waits": waits,
        "submission_via_gateway": SUBMISSION_VIA_GATEWAY,
        # a virus ClamAV names is refused with its name; Peekaboo is not asked then
        "runs_after": [CLAMAV_UNSCANNED] if plan.runs("clamav") else []}),)


def install(plan: HostPlan) -> None:
    system_user(USER, home=STATE)
    directory(HOME, mode="0755")
    directory(f"{HOME}/wheels", mode="0755")
    directory(ETC, user="root", group=USER, mode="0750")
    directory(STATE, user=USER, group=USER, mode="0750")
    virtualenv(f"{HOME}/venv", name="Peekaboo venv (Debian's python3)")


def rules(data: dict, pos: Positions) -> list[Problem]:
    """rspamd reaches Peekaboo on loopback: every filter host is a sandbox host and back.
    A domain's attachment wait needs Peekaboo to take effect."""
    hosts = [h for h in data["hosts"] if not h["outside"]]
    if not any("sandbox" in h["roles"] for h in hosts):
        default = resolve(schema()["properties"]["domains"]["items"])["properties"]["inbound"]
        default = default["properties"]["attachment_wait"]["default"]
        return [pos.problem(("domains", i, "inbound", "attachment_wait"), "has no effect: no host has the "
                            "'sandbox' role (Peekaboo)") for i, d in enumerate(data["domains"])
                if d["inbound"]["attachment_wait"] != default]
    return [pos.problem(("hosts", data["hosts"].index(h), "roles"), "'sandbox' and 'filter' go together on one "
                        "host (rspamd asks Peekaboo over loopback; a remote sandbox is not implemented yet)")
            for h in hosts if ("sandbox" in h["roles"]) != ("filter" in h["roles"])]


COMPONENT = Component(
    name="peekaboo",
    schema=schema_fragment(__file__),
    roles=frozenset({"sandbox"}),
    packages=("python3-venv", "libmagic1"),  # python3-venv brings the pip wheel pip_install runs
    units=("mailstack-peekaboo",),
    local=lambda plan: {("127.0.0.1", plan.inv.peekaboo["port"])},
    loopback_clients=lambda plan: {plan.inv.peekaboo["port"]: ("_rspamd",)},  # its rule runs in rspamd
    section="peekaboo",
    rules=(rules,),
    extends={"rspamd": rspamd_files},
    install=install,
    configure=configure,
)
