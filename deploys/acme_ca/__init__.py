"""Hosts with `acme_ca` (lab only): Debian's Pebble plays the public ACME CA (RFC 8555) the
platform's hosts get their certificates from under `tls.source: acme`. It checks names
over HTTP-01 through the host's own validating resolver, as a public CA does through the
Internet's DNS, and serves its API over HTTPS with the host's lab-CA certificate. Its
certificates last 45 days. Pebble makes a new root at each start and keeps nothing: its current
root is at `https://HOST:15000/roots/0`, where the lab fetches it for every host's trust store
and the tests (mailstack/lab/acme.py)."""

from __future__ import annotations

import json

from mailstack import tls
from mailstack.component import Component, File, Opening, Service
from mailstack.conventions import ACME_CA_API_PORT as API_PORT
from mailstack.conventions import ACME_CA_MANAGEMENT_PORT as MANAGEMENT_PORT
from mailstack.conventions import ACME_CA_ROLE
from mailstack.plan import HostPlan

UNIT = "mailstack-pebble"
CONFIG = "/etc/mailstack/pebble.json"
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
    roles=frozenset({ACME_CA_ROLE}),
    lab_only="plays a public ACME CA (Pebble); production names its CA in tls.acme_directory",
    packages=("pebble",),
    units=(UNIT,),
    openings=openings,
    configure=configure,
)
