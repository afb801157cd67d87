"""Hosts with `siem` (lab only): rsyslog plays the operator's SIEM, taking the filter
hosts' verdict records over TLS and writing them to a file the tests read."""

from __future__ import annotations

from deploys import tls
from deploys.siem import RSYSLOG_CHECK, SYSTEM_CA
from mailstack.component import Component, File, Opening, Service
from mailstack.plan import HostPlan

PORT = 6514
LOG = "/var/log/mailstack-siem.log"


def configure(plan: HostPlan) -> list[Service]:
    context = tls.context(plan)
    return [Service("rsyslog", (
        File.template("/etc/rsyslog.d/mailstack-siem-receiver.conf", "siem/receive.conf.j2",
                      {"port": PORT, "log": LOG, "ca_file": SYSTEM_CA,
                       "cert": context["tls_cert"], "key": context["tls_key"]}),
    ), check=RSYSLOG_CHECK)]


def openings(plan: HostPlan) -> list[Opening]:
    senders = plan.peers(h for h in plan.inv.hosts if not h.outside and "filter" in h.roles)
    return [Opening(PORT, "tcp", "siem: verdict records from the filter hosts", senders)] if senders else []


COMPONENT = Component(
    name="siem-receiver",
    roles=frozenset({"siem"}),
    packages=("rsyslog", "rsyslog-gnutls"),
    units=("rsyslog",),
    openings=openings,
    configure=configure,
)
