"""Hosts with `dns` (lab only): an authoritative nsd serving the zones of `mailstack dns`."""

from __future__ import annotations

from pyinfra.api import deploy as pyinfra_deploy
from pyinfra.operations import files

from deploys.common import ConfigFile, configure_service, install, inventory, this_host
from mailstack.dns import zone_file, zones

PACKAGES = ("nsd",)
ZONES_DIR = "/etc/nsd/zones"


@pyinfra_deploy("mailstack dns")
def deploy() -> None:
    install("nsd", PACKAGES)
    inv, me = inventory(), this_host()
    all_zones = zones(inv)
    items = [ConfigFile(f"{ZONES_DIR}/{zone}.zone", content=zone_file(inv, zone, records, me))
             for zone, records in all_zones.items()]
    items.insert(0, ConfigFile("/etc/nsd/nsd.conf", template="dns/nsd.conf.j2"))
    checks = ["nsd-checkconf /etc/nsd/nsd.conf"]
    checks += [f"nsd-checkzone {zone} {ZONES_DIR}/{zone}.zone >/dev/null" for zone in all_zones]
    files.directory(name=ZONES_DIR, path=ZONES_DIR, mode="0755")
    configure_service("nsd", items, {"address": me.address, "zones": sorted(all_zones),
                                     "zones_dir": ZONES_DIR}, check=" && ".join(checks))
