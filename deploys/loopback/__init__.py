"""Every platform host: loopback ports are reached only by the local users that must reach
them (root always may). A daemon on loopback is not thereby private: any process of any
local user could speak milter to rspamd (mail DKIM-signed as a tenant), ask its scanner or
controller, delete holds in Redis, or post silences to Alertmanager. Each listening
component declares its clients (`loopback_clients`); this one renders them as an nftables
output table that /etc/nftables.conf includes. It runs last: every user named exists by then."""

from __future__ import annotations

from mailstack.component import Component, File, Service, render
from mailstack.conventions import NFT_INCLUDED
from mailstack.plan import HostPlan

RULES = f"{NFT_INCLUDED}/loopback.nft"


def rules(plan: HostPlan) -> list[str]:
    ports: dict[int, set[str]] = {}
    for component in plan.components:
        for port, users in (component.loopback_clients(plan) if component.loopback_clients else {}).items():
            ports.setdefault(port, set()).update(users)
    return [f"oif \"lo\" tcp dport {port} meta skuid != {{ {', '.join(['root', *sorted(users)])} }} "
            f"reject with tcp reset" for port, users in sorted(ports.items())]


def configure(plan: HostPlan) -> list[Service]:
    text = render("loopback/loopback.nft.j2", {"rules": rules(plan)}, RULES)
    return [Service(None, (File.text(RULES, text),), check="nft -c -f /etc/nftables.conf",
                    on_change="nft -f /etc/nftables.conf")]


COMPONENT = Component(
    name="loopback",
    roles=None,
    platform_only=True,
    configure=configure,
)
