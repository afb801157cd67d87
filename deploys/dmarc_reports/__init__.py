"""Filter hosts that run Postfix too, with `dmarc_reports.enabled`: rspamd's DMARC module keeps
what each check of received mail found (in Redis), and a daily timer has `rspamadm
dmarc_report` send yesterday's aggregate reports (RFC 7489) to the domains whose record asks
for them, from `dmarc_reports.sender`, through the host's own Postfix (and so signed and sent
like any mail of the platform)."""

from __future__ import annotations

from mailstack.component import Component, File, Service, schema_fragment
from mailstack.inventory import Positions, Problem
from mailstack.plan import HostPlan

UNIT = "mailstack-dmarc-reports"
POSTFIX_ROLES = {"mx", "submission"}


def rspamd_files(plan: HostPlan) -> tuple[File, ...]:
    """rspamd's reporting settings (also asked where the reports are off: to remove them)."""
    settings = plan.inv.dmarc_reports
    sender = settings.get("sender", "")
    return (File.template("/etc/rspamd/local.d/dmarc.conf", "dmarc_reports/dmarc.conf.j2",
                          {"sender": sender, "domain": sender.partition("@")[2], "fqdn": plan.host.fqdn,
                           "org_name": settings.get("org_name") or plan.inv.platform["name"]}),)


def configure(plan: HostPlan) -> list[Service]:
    return [Service(f"{UNIT}.timer", (
        File.template(f"/etc/systemd/system/{UNIT}.service", f"dmarc_reports/{UNIT}.service.j2", {}),
        File.template(f"/etc/systemd/system/{UNIT}.timer", f"dmarc_reports/{UNIT}.timer.j2",
                      {"time": plan.inv.dmarc_reports["time"]}),
    ))]


def rules(data: dict, pos: Positions) -> list[Problem]:
    """A sender of the platform, and a filter host whose own Postfix sends the reports."""
    settings = data["dmarc_reports"]
    if not settings["enabled"]:
        return []
    problems = []
    addresses = {u["address"].lower() for u in data["users"]} | {a["address"].lower() for a in data["aliases"]}
    if "sender" not in settings:
        problems.append(pos.problem(("dmarc_reports",), "name the reports' sender (dmarc_reports.sender): "
                                    "an address of the platform, where their bounces arrive"))
    elif settings["sender"].lower() not in addresses:
        problems.append(pos.problem(("dmarc_reports", "sender"), f"{settings['sender']} is no user or alias of "
                                    "the inventory: bounces of the reports would be lost"))
    if not any("filter" in h["roles"] and POSTFIX_ROLES & set(h["roles"]) and not h.get("outside")
               for h in data["hosts"]):
        problems.append(pos.problem(("dmarc_reports", "enabled"), "no filter host runs Postfix (mx or "
                                    "submission) to send the reports: not implemented yet for separate filter "
                                    "hosts; set dmarc_reports.enabled: false"))
    return problems


COMPONENT = Component(
    name="dmarc_reports",
    schema=schema_fragment(__file__),
    roles=frozenset({"filter"}),
    platform_only=True,
    units=(f"{UNIT}.timer",),
    section="dmarc_reports",
    rules=(rules,),
    enabled=lambda inv: inv.dmarc_reports["enabled"],
    needed=lambda inv, host: bool(POSTFIX_ROLES & set(host.roles)),
    extends={"rspamd": rspamd_files},
    configure=configure,
)
