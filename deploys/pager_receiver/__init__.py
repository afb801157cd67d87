"""Hosts with `pager` (lab only): this host plays the operator's chat or pager webhook. It
takes Alertmanager's notices over HTTPS and writes each as one line to a file the tests
read."""

from __future__ import annotations

from deploys.parts import https_receiver
from mailstack.component import Component, Opening, Service
from mailstack.plan import HostPlan

PORT = 8444
LOG = "/var/log/mailstack-alerts.log"


def configure(plan: HostPlan) -> list[Service]:
    return [https_receiver(plan, "mailstack-pager", "the pager's webhook receiver", PORT, LOG)]


def openings(plan: HostPlan) -> list[Opening]:
    senders = plan.peers(h for h in plan.inv.hosts if "monitoring" in h.roles)
    return [Opening(PORT, "tcp", "pager: alerts from the monitoring hosts", senders)] if senders else []


COMPONENT = Component(
    name="pager-receiver",
    roles=frozenset({"pager"}),
    lab_only="plays an alert receiver in a lab; name your webhooks under monitoring.webhooks",
    units=("mailstack-pager",),
    openings=openings,
    configure=configure,
)
