"""Hosts with `siem` (lab only): this host plays the operator's SIEM. rsyslog takes the
filter hosts' verdict records over TLS (RFC 5424) and a small HTTPS server takes them as
JSON; each writes them to a file the tests read."""

from __future__ import annotations

from deploys.parts import https_receiver
from mailstack import tls
from mailstack.component import Component, File, Opening, Service
from mailstack.conventions import RSYSLOG_CHECK
from mailstack.plan import HostPlan, platform_hosts

PORT = 6514
LOG = "/var/log/mailstack-siem.log"
HTTP_PORT = 8443
HTTP_LOG = "/var/log/mailstack-siem-http.log"




def configure(plan: HostPlan) -> list[Service]:
    context = tls.context(plan)
    return [Service("rsyslog", (
        File.template("/etc/rsyslog.d/mailstack-siem-receiver.conf", "siem_receiver/receive.conf.j2",
                      {"port": PORT, "log": LOG, "ca_file": tls.TRUST,
                       "cert": context["tls_cert"], "key": context["tls_key"]}),
    ), check=RSYSLOG_CHECK), https_receiver(plan, "mailstack-siem-http", "the SIEM's HTTPS JSON receiver",
                                            HTTP_PORT, HTTP_LOG)]


def openings(plan: HostPlan) -> list[Opening]:
    senders = plan.peers(platform_hosts(plan.inv, "filter"))
    if not senders:
        return []
    return [Opening(PORT, "tcp", "siem: verdict records from the filter hosts (syslog)", senders),
            Opening(HTTP_PORT, "tcp", "siem: verdict records from the filter hosts (HTTPS)", senders)]


COMPONENT = Component(
    name="siem-receiver",
    roles=frozenset({"siem"}),
    lab_only="plays a SIEM in a lab; name your SIEM's receivers under siem.syslog",
    packages=("rsyslog", "rsyslog-gnutls"),
    units=("rsyslog", "mailstack-siem-http"),
    openings=openings,
    configure=configure,
)
