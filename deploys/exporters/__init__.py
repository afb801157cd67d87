"""Every platform host, when some host has `monitoring`: node exporter (with mailstack's own
metrics through its textfile collector: the certificate's expiry, accounts on hold) and, on
Postfix hosts, the Postfix exporter (queue sizes and ages); reachable from the monitoring
hosts only."""

from __future__ import annotations

from mailstack import tls
from mailstack.component import Component, File, Opening, Service
from mailstack.conventions import ACCOUNT_TOOL, METRICS_DIR
from mailstack.inventory import Host
from mailstack.plan import MTA_ROLES, HostPlan

NODE_PORT, POSTFIX_PORT = 9100, 9154
METRICS = "/usr/local/sbin/mailstack-metrics"


def runs_postfix(host: Host) -> bool:
    return bool(MTA_ROLES & set(host.roles))


def watched_units(plan: HostPlan) -> str:
    """The daemons this host's components keep running, and the jobs their timers start,
    as node exporter's unit pattern."""
    units = sorted({u.removesuffix(".timer") for c in plan.components for u in c.units
                    if "." not in u.removesuffix(".timer")})  # names: [a-z0-9@-]
    return "(" + "|".join(units) + ")[.]service"


def configure(plan: HostPlan) -> list[Service]:
    services = [
        Service("prometheus-node-exporter", (
            File.template("/etc/default/prometheus-node-exporter", "exporters/node-exporter.default.j2",
                          {"port": NODE_PORT, "directory": METRICS_DIR, "units": watched_units(plan)}),)),
        Service("mailstack-metrics.timer", (
            File.template(METRICS, "exporters/mailstack-metrics.py.j2",
                          {"directory": METRICS_DIR, "account_tool": ACCOUNT_TOOL,
                           "certificates": [*(path for path, _ in tls.certificate_files(plan)),
                                            *plan.contributed("monitoring.certificates")]},
                          mode="0755"),
            File.template("/etc/systemd/system/mailstack-metrics.service", "exporters/mailstack-metrics.service.j2",
                          {"program": METRICS}),
            File.template("/etc/systemd/system/mailstack-metrics.timer", "exporters/mailstack-metrics.timer.j2",
                          {"interval": plan.inv.monitoring["scrape_interval"]}),
        )),
    ]
    if runs_postfix(plan.host):
        services.append(Service("prometheus-postfix-exporter", (
            File.template("/etc/default/prometheus-postfix-exporter", "exporters/postfix-exporter.default.j2",
                          {"port": POSTFIX_PORT}),)))
    return services


def targets(inv, host: Host) -> list[tuple[str, str]]:
    """What the monitoring hosts scrape here (nothing on a host that plays the outside world)."""
    if host.outside:
        return []
    return [("node", f"{host.address}:{NODE_PORT}")] + (
        [("postfix", f"{host.address}:{POSTFIX_PORT}")] if runs_postfix(host) else [])


def ports(plan: HostPlan) -> list[tuple[int, str]]:
    return [(NODE_PORT, "node exporter")] + ([(POSTFIX_PORT, "Postfix exporter")] if runs_postfix(plan.host) else [])


def watchers(plan: HostPlan) -> tuple[str, ...]:
    return plan.peers(h for h in plan.inv.hosts if "monitoring" in h.roles)


def openings(plan: HostPlan) -> list[Opening]:
    return [Opening(port, "tcp", f"monitoring: {why}", watchers(plan)) for port, why in ports(plan)] \
        if watchers(plan) else []


def local(plan: HostPlan) -> set[tuple[None, int]]:
    """On the monitoring host itself: scraped over its own address, which the firewall keeps local."""
    return set() if watchers(plan) else {(None, port) for port, _ in ports(plan)}


COMPONENT = Component(
    name="exporters",
    roles=None,
    packages=("prometheus-node-exporter", "prometheus-postfix-exporter"),
    units=("prometheus-node-exporter", "mailstack-metrics.timer"),
    disabled_units=("prometheus-postfix-exporter.service",),  # started on Postfix hosts only
    enabled=lambda inv: any("monitoring" in h.roles for h in inv.hosts),
    local=local,
    adds={"monitoring.targets": targets},
    openings=openings,
    configure=configure,
)
