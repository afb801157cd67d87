"""Platform hosts under `tls.source: acme`: each gets its certificates (its own, and those
its other names are grouped in, `tls.grouped`) from the ACME CA the inventory names (uacme
from Debian) and renews them itself, daily when due, with the key made
once on the control machine (the `tls` component installs it), so that the TLSA records that
pin it stay true across renewals. The CA checks each name over HTTP-01: nginx answers on port
80 with the tokens uacme's hook put there, and nothing else. A new certificate is put in place
atomically and the daemons that serve it (`tls.readers`) reload; a failed renewal leaves the
old one serving and fails the timer's job, which the monitoring alerts on, as it does on the
days left."""

from __future__ import annotations

import hashlib

from deploys.ops import directory
from mailstack import tls
from mailstack.component import Component, File, Opening, Service
from mailstack.inventory import Positions, Problem
from mailstack.plan import HostPlan
from mailstack.secrets import host_key

PROGRAM = "/usr/local/sbin/mailstack-acme"
HOOK = "/usr/local/sbin/mailstack-acme-hook"
WEB_ROOT = "/var/lib/mailstack/acme/web"  # port 80 serves its .well-known/acme-challenge/
SITE = "/etc/nginx/sites-enabled/mailstack-acme"
PORT = 80


def state_dir(inv) -> str:
    """uacme's folder (account key, certificate key, certificates): one for each CA, so that
    an account of one is never presented to another."""
    return f"/var/lib/mailstack/acme/{hashlib.sha256(inv.tls['acme_directory'].encode()).hexdigest()[:12]}"


def configure(plan: HostPlan) -> list[Service]:
    inv, settings = plan.inv, plan.inv.tls
    state = state_dir(inv)
    fqdn = plan.certificates[0][0]  # uacme files the host's own certificate (and key) under it
    context = {"program": PROGRAM, "hook": HOOK, "certificates": tls.CERTIFICATES, "web_root": WEB_ROOT,
               "state": state, "directory": settings["acme_directory"], "email": settings.get("acme_email", ""),
               "days": settings["acme_renew_days"], "fqdn": fqdn, "cert": tls.CERT, "sni_dir": tls.SNI_DIR,
               "readers": " ".join(dict.fromkeys(plan.contributed("tls.readers")))}
    return [
        Service("nginx", (File.template(SITE, "acme/nginx-acme.conf.j2", context),), check="nginx -t -q",
                absent=("/etc/nginx/sites-enabled/default",)),
        Service(None, (
            File.template(HOOK, "acme/mailstack-acme-hook.sh.j2", context, mode="0755"),
            File.template(PROGRAM, "acme/mailstack-acme.sh.j2", context, mode="0755"),
            # the key uacme signs requests for this host's certificate with: never one of its own making
            File.copy(f"{state}/private/{fqdn}/key.pem", host_key(inv, plan.name), mode="0600", secret=True),
        )),
        # a name more or less: that certificate now, in the deploy, not tomorrow (the program forces
        # it: uacme keeps a valid certificate that carries every name asked, and more); another CA
        # has a state folder of its own, with no certificate in it yet
        Service(None, (File.text(tls.CERTIFICATES, tls.certificate_list(plan)),
                       File.text(f"{state}/directory", settings["acme_directory"])), on_change=PROGRAM),
        Service("mailstack-acme.timer", (
            File.template("/etc/systemd/system/mailstack-acme.service", "acme/mailstack-acme.service.j2", context),
            File.template("/etc/systemd/system/mailstack-acme.timer", "acme/mailstack-acme.timer.j2", context),
        )),
    ]


def install(plan: HostPlan) -> None:
    state = state_dir(plan.inv)
    directory(state, mode="0700")
    directory(f"{state}/private", mode="0700")
    directory(f"{state}/{plan.certificates[0][0]}", mode="0755")  # where uacme files the host's own


def openings(plan: HostPlan) -> list[Opening]:
    return [Opening(PORT, "tcp", "acme: HTTP-01 challenges of the ACME CA (nothing else is served)")]


def rules(data: dict, pos: Positions) -> list[Problem]:
    """An HTTPS directory; renewal well before the expiry alert would fire; no ACME setting
    without ACME."""
    settings, problems = data["tls"], []
    if settings["source"] != "acme":
        return [pos.problem(("tls", key), "has no effect unless tls.source is 'acme'; remove it")
                for key in ("acme_email", "acme_roots") if key in settings]
    if not settings["acme_directory"].startswith("https://"):
        problems.append(pos.problem(("tls", "acme_directory"), "an ACME directory is reached over HTTPS only"))
    alert_days = data["monitoring"]["certificate_days"]
    if any("monitoring" in h["roles"] for h in data["hosts"]) and settings["acme_renew_days"] <= alert_days:
        problems.append(pos.problem(("tls", "acme_renew_days"), f"renewal begins {settings['acme_renew_days']} days "
                                    f"before expiry, but monitoring.certificate_days alerts at {alert_days}: every "
                                    "healthy certificate would alert before it is renewed"))
    return problems


COMPONENT = Component(
    name="acme",
    roles=None,
    packages=("uacme", "nginx-light"),
    units=("nginx", "mailstack-acme.timer"),
    enabled=lambda inv: inv.tls["source"] == "acme",
    platform_only=True,  # a lab's outside hosts keep the lab CA
    rules=(rules,),
    makes=lambda plan: [path for path, _ in tls.certificate_files(plan)],  # fetched by the host
    openings=openings,
    install=install,
    configure=configure,
)
