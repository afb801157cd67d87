"""Hosts with `acme_ca` (lab only): Debian's Pebble plays the public ACME CA (RFC 8555) the
platform's hosts get their certificates from under `tls.source: acme`. It checks names
over HTTP-01 through the host's own validating resolver, as a public CA does through the
Internet's DNS, and serves its API over HTTPS with the host's lab-CA certificate. Its
certificates last 45 days. Pebble makes a new root at each start and keeps nothing: its current root is at
`https://HOST:15000/roots/0`, for the trust stores of the lab (`tls.acme_roots`)."""

from __future__ import annotations

import json

from mailstack import tls
from mailstack.component import Component, File, Opening, Service
from mailstack.plan import HostPlan

UNIT = "mailstack-pebble"
CONFIG = "/etc/mailstack/pebble.json"
API_PORT, MANAGEMENT_PORT = 14000, 15000
VALIDITY_DAYS = 45  # what the public CAs move to; short enough that a lab renewal window covers it


def settings(plan: HostPlan) -> dict:
    return {"pebble": {"listenAddress": f"{plan.host.address}:{API_PORT}",
                       "managementListenAddress": f"{plan.host.address}:{MANAGEMENT_PORT}",
                       "certificate": tls.CERT, "privateKey": tls.KEY,
                       "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "",
                       "externalAccountBindingRequired": False,
                       "certificateValidityPeriod": VALIDITY_DAYS * 86400}}


def configure(plan: HostPlan) -> list[Service]:
    return [Service(UNIT, (
        File.text(CONFIG, json.dumps(settings(plan), indent=2)),
        File.template(f"/etc/systemd/system/{UNIT}.service", "acme_ca/mailstack-pebble.service.j2",
                      {"config": CONFIG}),
    ))]


def openings(plan: HostPlan) -> list[Opening]:
    return [Opening(API_PORT, "tcp", "acme_ca: the ACME API", bind=plan.host.address),
            Opening(MANAGEMENT_PORT, "tcp", "acme_ca: its roots, for the lab's trust stores", bind=plan.host.address)]


COMPONENT = Component(
    name="acme_ca",
    roles=frozenset({"acme_ca"}),
    lab_only="plays a public ACME CA (Pebble); production names its CA in tls.acme_directory",
    packages=("pebble",),
    units=(UNIT,),
    openings=openings,
    configure=configure,
)
