"""Mailbox hosts that MX hosts elsewhere deliver to: Dovecot's LMTP trusts whoever reaches
it, so it listens on loopback only, behind an stunnel server end that admits a connection
only with the certificate of one of the platform's MX hosts (and the firewall only their
addresses). Postfix there speaks LMTP inside that TLS (wrapper mode) with its host's
certificate, checking the mailbox host's name in turn. Another process on an MX host has
neither the key (root's) nor a way in: delivery goes through Postfix and its filters."""

from __future__ import annotations

from deploys.parts import tunnel
from mailstack import tls
from mailstack.component import Component, Opening, Service
from mailstack.plan import LMTP_INSIDE_PORT, LMTP_PORT, HostPlan, lmtp_clients

UNIT = "mailstack-lmtp-tls"
CONFIG = "/etc/mailstack/stunnel-lmtp.conf"


def configure(plan: HostPlan) -> list[Service]:
    return [tunnel(plan, UNIT, CONFIG, "LMTP from the MX hosts elsewhere", "lmtp", client=False,
                   accept=f"{plan.host.address}:{LMTP_PORT}", connect=[f"127.0.0.1:{LMTP_INSIDE_PORT}"],
                   peers=plan.lmtp_clients)]


def openings(plan: HostPlan) -> list[Opening]:
    return [Opening(LMTP_PORT, "tcp", "mailbox: LMTP inside TLS, for the MX hosts' certificates",
                    plan.peers(plan.lmtp_clients), bind=plan.host.address)]


COMPONENT = Component(
    name="lmtp-link",
    roles=frozenset({"mailbox"}),
    packages=("stunnel4",),
    units=(UNIT,),
    disabled_units=("stunnel4.service",),
    needed=lambda inv, host: bool(lmtp_clients(inv, host)),
    local=lambda plan: {("127.0.0.1", LMTP_INSIDE_PORT)},
    loopback_clients=lambda plan: {LMTP_INSIDE_PORT: ("stunnel4",)},
    openings=openings,
    adds={"tls.readers": tls.readers(UNIT)},
    configure=configure,
)
