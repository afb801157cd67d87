"""Hosts with `filter`, when the inventory names SIEM receivers (`siem.syslog`, `siem.http`):
a record of every rspamd verdict, sent by rspamd as a loopback datagram to rsyslog, which
forwards it over TLS (RFC 5424, RFC 5425 framing) and as JSON over HTTPS (omprog and a small
program of ours), with a disk queue per receiver. Mail never waits for the SIEM: a receiver
that is down gets its records when it is back."""

from __future__ import annotations

from mailstack import tls
from mailstack.component import AlertRule, Component, File, Service, schema_fragment
from mailstack.conventions import METRICS_DIR, RSYSLOG_CHECK
from mailstack.plan import HostPlan

RELAY_PORT = 10514  # rsyslog's UDP input for rspamd's records, on 127.0.0.1 only
HTTP_PROGRAM = "/usr/local/lib/mailstack/siem-http"
# records a SIEM refused for good (a 4xx): kept here, counted for an alert
DEAD_LETTERS = "/var/log/mailstack-siem-refused.jsonl"
# a sender-chosen value is cut to FIELD characters, a list to LISTED addresses: with them a
# record stays well inside rsyslog's 8 KiB message (and one datagram)
FIELD, LISTED = 200, 8


def rspamd_files(plan: HostPlan) -> tuple[File, ...]:
    """The rule that writes the records (tenants from the inventory)."""
    tenants = sorted((d.name, d.tenant) for d in plan.own_domains)
    return (File.template("/etc/rspamd/mailstack.d/siem.lua", "siem/siem.lua.j2",
                          {"port": RELAY_PORT, "tenants": tenants, "host": plan.host.name,
                           "fqdn": plan.host.fqdn, "field_limit": FIELD, "list_limit": LISTED}),)


def configure(plan: HostPlan) -> list[Service]:
    own = tls.context(plan)
    return [Service("rsyslog", (
        File.template("/etc/rsyslog.d/mailstack-siem.conf", "siem/forward.conf.j2",
                      {"port": RELAY_PORT, "receivers": plan.inv.siem["syslog"], "ca_file": tls.TRUST,
                       "cert": own["tls_cert"], "key": own["tls_key"], "endpoints": plan.inv.siem["http"],
                       "http_program": HTTP_PROGRAM}),
        File.template(HTTP_PROGRAM, "siem/siem-http.py.j2",
                      {"dead_letters": DEAD_LETTERS, "metric_file": f"{METRICS_DIR}/mailstack-siem.prom"}, mode="0755"),
    ), check=RSYSLOG_CHECK)]


REFUSED = AlertRule("SiemRecordsRefused", "mailstack_siem_refused_records > 0",
                    "the SIEM refused {{ $value }} verdict records from {{ $labels.instance }} for good: they are "
                    "kept in /var/log/mailstack-siem-refused.jsonl (move it away and remove mailstack-siem.prom "
                    "once handled)")

COMPONENT = Component(
    name="siem",
    schema=schema_fragment(__file__),
    roles=frozenset({"filter"}),
    packages=("rsyslog", "rsyslog-gnutls"),
    units=("rsyslog",),
    section="siem",
    enabled=lambda inv: bool(inv.siem["syslog"] or inv.siem["http"]),
    extends={"rspamd": rspamd_files},
    adds={"tls.readers": tls.readers("rsyslog"),
          "monitoring.rules": lambda inv, host: [REFUSED]},  # the HTTP export counts what it gave up on
    configure=configure,
)
