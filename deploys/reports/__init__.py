"""Mailbox hosts that hold a report mailbox: the reports other mail servers send about the
platform's domains (DMARC aggregate reports to each domain's `dmarc.rua`, TLS-RPT reports to
the `_smtp._tls` address, the platform's postmaster) are read from those mailboxes into one
store on the host by `mailstack-reports`; `mailstack reports` collects and summarises them.
Only reports about the platform's own domains are kept, each once."""

from __future__ import annotations

import json

from mailstack.component import Component, File, Service, template_path
from mailstack.inventory import Host, Inventory
from mailstack.plan import HostPlan

TOOL = "/usr/local/sbin/mailstack-reports"  # `mailstack reports` runs it over SSH
CONFIG = "/etc/mailstack/reports.json"


def report_addresses(inv: Inventory) -> set[str]:
    """Where reports about the platform's domains are sent: DMARC `rua`, and TLS-RPT's."""
    return {inv.platform["postmaster"], *(a for d in inv.own_domains() for a in d.dmarc["rua"])}


def report_mailboxes(inv: Inventory, host: Host) -> list[str]:
    """The users on `host` whose mailbox those addresses reach (an address, or an alias of it)."""
    reached = inv.senders()
    logins = {login for address in report_addresses(inv) for login in reached.get(address.lower(), ())}
    return sorted(u.address for u in inv.users if u.address in logins and u.mailbox == host.name)


def configure(plan: HostPlan) -> list[Service]:
    config = {"mailboxes": report_mailboxes(plan.inv, plan.host),
              "domains": sorted(d.name for d in plan.inv.own_domains())}
    return [Service(None, (File.text(CONFIG, json.dumps(config, indent=1)),
                           File.copy(TOOL, template_path("reports/mailstack-reports.py"), mode="0750")))]


COMPONENT = Component(
    name="reports",
    roles=frozenset({"mailbox"}),
    platform_only=True,
    needed=lambda inv, host: bool(report_mailboxes(inv, host)),
    configure=configure,
)
