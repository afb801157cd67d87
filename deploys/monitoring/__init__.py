"""Hosts with `monitoring`: Prometheus and Alertmanager from Debian, on loopback. Prometheus
scrapes what every host offers at `monitoring.targets` (deploys/exporters/) and evaluates the alert
rules (an account on hold, the queue's size and growth, an exporter down, a certificate
about to expire, a mailbox too large, too full or growing too fast); Alertmanager sends
to the inventory's webhooks, never through the mail queue it watches."""

from __future__ import annotations

from mailstack.component import Component, ExtensionConflict, File, Service, schema_fragment
from mailstack.conventions import PROMETHEUS_PORT, VOLATILE_FILESYSTEMS
from mailstack.plan import HostPlan

ALERTMANAGER_PORT = 9093


def jobs(plan: HostPlan) -> list[tuple[str, str]]:
    """Each scrape job with its targets (a YAML flow list of quoted host:port), from what the
    components on every host add at `monitoring.targets`."""
    found: dict[str, list[str]] = {}
    for job, target in plan.contributed("monitoring.targets"):
        found.setdefault(job, []).append(f'"{target}"')
    return [(job, ", ".join(targets)) for job, targets in found.items()]


def size_bytes(size: str) -> int:
    """An inventory size ("10G", "512M", "1024") in bytes."""
    units = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}
    return int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)


def component_rules(plan: HostPlan) -> list:
    """The alerts the platform's components add (monitoring.rules), once each however many
    hosts run them; two different rules under one name are an error naming it."""
    rules = {}
    for rule in plan.contributed("monitoring.rules"):
        if rules.setdefault(rule.name, rule) != rule:
            raise ExtensionConflict(f"two different alert rules are named {rule.name!r} (monitoring.rules)")
    return list(rules.values())


def configure(plan: HostPlan) -> list[Service]:
    settings = plan.inv.monitoring
    return [
        # command-line settings need a restart; the configuration only a reload (SIGHUP): a restart
        # would keep the series of a changed target alive for 5 minutes, with no staleness marker
        Service("prometheus", (
            File.template("/etc/default/prometheus", "monitoring/prometheus.default.j2", {"port": PROMETHEUS_PORT}),)),
        Service("prometheus", (
            File.template("/etc/prometheus/prometheus.yml", "monitoring/prometheus.yml.j2",
                          {"interval": settings["scrape_interval"], "alertmanager_port": ALERTMANAGER_PORT,
                           "jobs": jobs(plan)}),
            File.template("/etc/prometheus/mailstack-rules.yml", "monitoring/rules.yml.j2",
                          {**settings, "mailbox_size_bytes": size_bytes(settings["mailbox_size_alert"]),
                           "volatile_filesystems": "|".join(VOLATILE_FILESYSTEMS),
                           "rules": component_rules(plan)}),
        ), check="promtool check config /etc/prometheus/prometheus.yml >/dev/null", reload=True),
        Service("prometheus-alertmanager", (
            File.template("/etc/default/prometheus-alertmanager", "monitoring/alertmanager.default.j2",
                          {"port": ALERTMANAGER_PORT}),)),
        Service("prometheus-alertmanager", (
            File.template("/etc/prometheus/alertmanager.yml", "monitoring/alertmanager.yml.j2", settings),
        ), check="amtool check-config /etc/prometheus/alertmanager.yml >/dev/null", reload=True),
    ]

COMPONENT = Component(
    name="monitoring",
    schema=schema_fragment(__file__),
    roles=frozenset({"monitoring"}),
    packages=("prometheus", "prometheus-alertmanager"),
    units=("prometheus", "prometheus-alertmanager"),
    local=(("127.0.0.1", PROMETHEUS_PORT), ("127.0.0.1", ALERTMANAGER_PORT)),
    loopback_clients=lambda plan: {ALERTMANAGER_PORT: ("prometheus",)},  # no silences from anyone else
    section="monitoring",
    configure=configure,
)
