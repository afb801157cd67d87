"""Building blocks several components use, each rendered the same way wherever it is used:
one end of an stunnel TLS tunnel (the milter link, the LMTP link), the lab's small HTTPS
receiver (the SIEM's and the pager's) and the unit of an smimegw program (the S/MIME gateway's,
the first-pass signature check's). No component: nothing here is deployed by itself."""

from __future__ import annotations

from mailstack import tls
from mailstack.component import File, Service, template_path
from mailstack.plan import HostPlan

HTTPS_RECEIVER = "/usr/local/lib/mailstack/lab-https-receiver"


def tunnel(plan: HostPlan, unit: str, config: str, what: str, section: str, client: bool, accept: str,
           connect: list[str], peers) -> Service:
    """One stunnel end in a unit of its own: `accept` here, `connect` there, the peer's
    certificate checked against the platform's CA and the `peers`' names (a server end
    admits no client without such a certificate)."""
    context = {**tls.context(plan), "what": what, "section": section, "client": "yes" if client else "no",
               "accept": accept, "connect": connect, "peer_names": [h.fqdn for h in peers]}
    # stunnel has no checker of its own: a bad file fails the restart, and the deploy with it
    return Service(unit, (File.template(f"/etc/systemd/system/{unit}.service", "parts/stunnel.service.j2",
                                        {"what": what, "config": config}),
                          File.template(config, "parts/stunnel.conf.j2", context)))


def https_receiver(plan: HostPlan, unit: str, what: str, port: int, log: str) -> Service:
    """The lab's HTTPS receiver as `unit`: writes each POSTed JSON body as one line to `log`."""
    context = tls.context(plan)
    return Service(unit, (
        File.copy(HTTPS_RECEIVER, template_path("parts/http-receiver.py"), mode="0755"),
        File.template(f"/etc/systemd/system/{unit}.service", "parts/lab-https-receiver.service.j2",
                      {"what": what, "program": HTTPS_RECEIVER, "port": port, "log": log,
                       "cert": context["tls_cert"], "key": context["tls_key"]}),
    ))


def smimegw_unit(unit: str, description: str, module: str, home: str, config: str) -> File:
    """The hardened unit of the smimegw program `module` (Debian's python3, the code in `home`),
    run as the user of the unit's name."""
    return File.template(f"/etc/systemd/system/{unit}.service", "parts/smimegw.service.j2", {
        "description": description, "module": module, "service_user": unit, "home": home, "config": config})
