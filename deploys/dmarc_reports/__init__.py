"""Filter hosts that run Postfix too, with `dmarc_reports.enabled`: rspamd's DMARC module keeps
what each check of received mail found (in Redis), and a daily timer has `rspamadm
dmarc_report` send yesterday's aggregate reports (RFC 7489) to the domains whose record asks
for them, from `dmarc_reports.sender`, through the host's own Postfix: a listener on
loopback for root alone (the timer runs as root) that takes it as the platform's own mail
(DKIM-signed, not held for an attachment analysis, as a user's submission would be)."""

from __future__ import annotations

from mailstack.component import Component, File, Service, schema_fragment
from mailstack.conventions import ORIGINATING
from mailstack.inventory import Positions, Problem
from mailstack.plan import HostPlan

UNIT = "mailstack-dmarc-reports"
POSTFIX_ROLES = {"mx", "submission"}
REPORTS_PORT = 10587  # Postfix, for the reports: loopback, root only


def postfix_services(inv, host) -> list[dict]:
    """The reports' way in: loopback only, the platform's own mail (milter daemon name)."""
    only_here = "permit_mynetworks,reject"
    return [{"line": f"127.0.0.1:{REPORTS_PORT} inet n - n - - smtpd",
             "options": ["syslog_name=postfix/dmarc-reports", f"smtpd_client_restrictions={only_here}",
                         f"smtpd_relay_restrictions={only_here}", f"smtpd_recipient_restrictions={only_here}",
                         f"milter_macro_daemon_name={ORIGINATING}"]}]


def rspamd_files(plan: HostPlan) -> tuple[File, ...]:
    """rspamd's reporting settings (also asked where the reports are off: to remove them)."""
    settings = plan.inv.dmarc_reports
    sender = settings.get("sender", "")
    return (File.template("/etc/rspamd/local.d/dmarc.conf", "dmarc_reports/dmarc.conf.j2",
                          {"sender": sender, "domain": sender.partition("@")[2], "fqdn": plan.host.fqdn,
                           "port": REPORTS_PORT,
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
    local=(("127.0.0.1", REPORTS_PORT),),
    loopback_clients=lambda plan: {REPORTS_PORT: ()},  # root's timer alone
    adds={"postfix.master": postfix_services},
    section="dmarc_reports",
    rules=(rules,),
    enabled=lambda inv: inv.dmarc_reports["enabled"],
    needed=lambda inv, host: bool(POSTFIX_ROLES & set(host.roles)),
    extends={"rspamd": rspamd_files},
    configure=configure,
)
