"""Hosts with `dns` (lab only): an authoritative nsd serving the zones of `mailstack dns`,
signed (mailstack/dnssec.py), with their top-level domains (`test`) as signed parents that
hold each zone's DS record: every lab resolver validates them from those anchors. Signatures are made at
deploy and last at least 4 weeks; a deploy renews them."""

from __future__ import annotations

from deploys.ops import directory
from mailstack.component import Component, File, Opening, Service
from mailstack.dns import zone_file, zones
from mailstack.dnssec import delegations, parents, signed
from mailstack.plan import HostPlan

ZONES_DIR = "/etc/nsd/zones"


def configure(plan: HostPlan) -> list[Service]:
    all_zones = zones(plan.inv, plan.contributed("dns.records"))
    all_zones |= {top: delegations(plan.inv, children, plan.host.fqdn)
                  for top, children in parents(list(all_zones)).items()}
    checks = ["nsd-checkconf /etc/nsd/nsd.conf"]
    checks += [f"nsd-checkzone {zone} {ZONES_DIR}/{zone}.zone >/dev/null" for zone in all_zones]
    return [Service("nsd", (
        File.template("/etc/nsd/nsd.conf", "dns/nsd.conf.j2", {"address": plan.host.address,
                                                                "zones": sorted(all_zones), "zones_dir": ZONES_DIR}),
        *(File.text(f"{ZONES_DIR}/{zone}.zone", signed(plan.inv, zone, zone_file(plan.inv, zone, records, plan.host)))
          for zone, records in all_zones.items()),
    ), check=" && ".join(checks))]


def install(plan: HostPlan) -> None:
    directory(ZONES_DIR, mode="0755")


def openings(plan: HostPlan) -> list[Opening]:
    """The lab's zones, for every lab host and the tests (`mailstack check` keeps `dns` in labs)."""
    return [Opening(53, proto, "dns: the lab's zones", bind=plan.host.address) for proto in ("tcp", "udp")]


COMPONENT = Component(
    name="dns",
    roles=frozenset({"dns"}),
    lab_only="serves a lab's zones; publish production DNS from `mailstack dns`",
    packages=("nsd",),
    units=("nsd",),
    openings=openings,
    install=install,
    configure=configure,
)
