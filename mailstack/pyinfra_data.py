"""What a pyinfra host gets as data: connection settings and its slice of the model."""

from __future__ import annotations

import os

from mailstack.inventory import Host, Inventory
from mailstack.plan import HostPlan
from mailstack.remote import known_hosts


def connector() -> str:
    """`ssh` normally; `fake` builds every operation without touching a host."""
    return os.environ.get("MAILSTACK_CONNECTOR", "ssh")


def pyinfra_name(host: Host) -> str:
    return f"@fake/{host.name}" if connector() == "fake" else host.name


def host_data(inventory: Inventory, host: Host, plan: HostPlan) -> dict:
    data = {
        "mailstack_plan": plan,
        "ssh_hostname": host.address,
        "ssh_user": host.ssh["user"],
        "ssh_port": host.ssh["port"],
    }
    if connector() == "fake":  # facts the operations need to be built at all
        data.update(fake_delay=0, fake_responses={"uname -s": "Linux", "command -v useradd": "/usr/sbin/useradd"})
    if "key" in host.ssh:
        data["ssh_key"] = os.path.expanduser(host.ssh["key"])
    known, strict = known_hosts(host)
    # strict: pyinfra's own default (accept-new) would trust a first-seen key
    data["ssh_strict_host_key_checking"] = "yes" if strict else "off"
    if known:
        data["ssh_known_hosts_file"] = known
    return data
