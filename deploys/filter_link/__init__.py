"""Postfix on one host, rspamd on another: Postfix and rspamd speak milter without TLS,
so stunnel (Debian) carries it inside TLS. The client end on each Postfix host listens on
loopback where rspamd would be, and tries the filter hosts in order; the server end on each
filter host admits only the platform's Postfix hosts, by firewall and by certificate name.
A filter host that cannot be reached fails the milter, and Postfix answers 4xx."""

from __future__ import annotations

from deploys.parts import tunnel
from mailstack import tls
from mailstack.component import Component, Opening, Service
from mailstack.plan import MILTER_PORT, HostPlan, filter_link

UNIT = "mailstack-milter-tls"  # its own unit: Debian's stunnel4 service starts /etc/stunnel/*.conf
CONFIG = "/etc/mailstack/stunnel-milter.conf"




def configure(plan: HostPlan) -> list[Service]:
    link = plan.filter_link
    client = link.side == "client"
    return [tunnel(plan, UNIT, CONFIG, "the milter between Postfix and rspamd on another host", "milter", client,
                   accept=f"127.0.0.1:{MILTER_PORT}" if client else f"{plan.host.address}:{MILTER_PORT}",
                   connect=[f"{h.address}:{MILTER_PORT}" for h in link.filters] if client
                   else [f"127.0.0.1:{MILTER_PORT}"],
                   peers=link.filters if client else link.mtas)]


def openings(plan: HostPlan) -> list[Opening]:
    link = plan.filter_link
    if link.side != "server":
        return []
    return [Opening(MILTER_PORT, "tcp", "filter: rspamd milter, inside TLS, for Postfix hosts elsewhere",
                    plan.peers(link.mtas), bind=plan.host.address)]


def loopback_clients(plan: HostPlan) -> dict[int, tuple[str, ...]]:
    """The tunnel's client end stands where rspamd would: for Postfix alone."""
    return {MILTER_PORT: ("postfix",)} if plan.filter_link.side == "client" else {}


def local(plan: HostPlan) -> set[tuple[str, int]]:
    return {("127.0.0.1", MILTER_PORT)} if plan.filter_link.side == "client" else set()


COMPONENT = Component(
    name="filter-link",
    roles=frozenset({"mx", "submission", "filter"}),
    packages=("stunnel4",),
    units=(UNIT,),
    disabled_units=("stunnel4.service",),
    needed=lambda inv, host: filter_link(inv, host) is not None,
    local=local,
    loopback_clients=loopback_clients,
    openings=openings,
    adds={"tls.readers": tls.readers(UNIT)},
    configure=configure,
)
