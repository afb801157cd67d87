"""Hosts with `web`: nginx from Debian, HTTPS only with the host's certificate, answering
for each platform domain what other mail servers and mail clients read over the web: its
MTA-STS policy (RFC 8461) at mta-sts.DOMAIN when the domain's `mta_sts` is not `none`,
Thunderbird's autoconfig at autoconfig.DOMAIN and Outlook's autodiscover at
autodiscover.DOMAIN, all from the inventory (a domain without POP3 advertises none). The
site is chosen by the name a request asks for; any other name gets nothing. The names go
into the host's certificate (tls.names) and the platform's DNS (dns.records), with the
`_mta-sts` TXT record whose id changes whenever the policy does."""

from __future__ import annotations

import hashlib

from mailstack import tls
from mailstack.component import Component, File, Service, render, schema_fragment
from mailstack.dns import Record, address_records, imap_name, smtp_name
from mailstack.inventory import Inventory, Positions, Problem
from mailstack.inventory.model import Domain, Host
from mailstack.plan import HostPlan

ROOT = "/var/www/mailstack"  # a folder per domain, read by nginx
SITE = "/etc/nginx/sites-enabled/mailstack"
PORT = 443


def policy_mx(inv: Inventory, domain: Domain) -> list[str]:
    """The names the domain's MX records give: the only ones a sender may deliver to."""
    return [inv.host(name).fqdn for name in domain.mx]


def mta_sts_policy(inv: Inventory, domain: Domain) -> str:
    return render("web/mta-sts.txt.j2", {"mode": domain.mta_sts, "mx_names": policy_mx(inv, domain),
                                         "max_age": inv.web["mta_sts_max_age"]}, "mta-sts.txt")


def policy_id(policy: str) -> str:
    """The `_mta-sts` record's id: it changes whenever the policy text does (RFC 8461 3.1)."""
    return hashlib.sha256(policy.encode()).hexdigest()[:20]


def site_names(domain: Domain) -> list[str]:
    return [*([f"mta-sts.{domain.name}"] if domain.mta_sts != "none" else []),
            f"autoconfig.{domain.name}", f"autodiscover.{domain.name}"]


def names(inv: Inventory, host: Host) -> list[str]:
    """What the host's certificate must carry: every site name of every platform domain."""
    return [name for domain in inv.own_domains() for name in site_names(domain)]


def records(inv: Inventory, host: Host) -> list[Record]:
    """Each site name at this host, and each MTA-STS domain's `_mta-sts` record."""
    found = [record for domain in inv.own_domains() for name in site_names(domain)
             for record in address_records(name, [host])]
    return found + [Record(f"_mta-sts.{d.name}", "TXT", f"v=STSv1; id={policy_id(mta_sts_policy(inv, d))}")
                    for d in inv.own_domains() if d.mta_sts != "none"]


def server(kind: str, host: str, port: int, socket: str) -> dict:
    """One server as both autoconfig formats name it (socket: SSL or STARTTLS)."""
    return {"kind": kind, "protocol": kind.upper(), "host": host, "port": port, "socket": socket,
            "encryption": "TLS" if socket == "STARTTLS" else "SSL"}


def servers(domain: Domain) -> tuple[list[dict], list[dict]]:
    """(incoming, outgoing) servers a client of the domain uses, as the domain offers them."""
    incoming = [*([server("imap", imap_name(domain), 993, "SSL")] if domain.imap else []),
                *([server("pop3", imap_name(domain), 995, "SSL")] if domain.pop3 else [])]
    outgoing = [server("smtp", smtp_name(domain), 465, "SSL"),
                server("smtp", smtp_name(domain), 587, "STARTTLS")] if domain.submission else []
    return incoming, outgoing


def domain_files(plan: HostPlan, domain: Domain) -> list[File]:
    incoming, outgoing = servers(domain)
    context = {"domain": domain.name, "incoming": incoming, "outgoing": outgoing, "servers": incoming + outgoing,
               # a domain without passwords takes OAuth2 tokens only
               "authentication": "password-cleartext" if domain.password_login else "OAuth2"}
    folder = f"{ROOT}/{domain.name}"
    return [*([File.text(f"{folder}/.well-known/mta-sts.txt", mta_sts_policy(plan.inv, domain))]
              if domain.mta_sts != "none" else []),
            File.template(f"{folder}/mail/config-v1.1.xml", "web/config-v1.1.xml.j2", context),
            File.template(f"{folder}/autodiscover/autodiscover.xml", "web/autodiscover.xml.j2", context)]


def configure(plan: HostPlan) -> list[Service]:
    domains = plan.own_domains
    context = {**tls.context(plan),
               "protocols": tls.nginx_protocols(plan.inv),
               "sites": [{"names": " ".join(site_names(d)), "root": f"{ROOT}/{d.name}",
                          "cert": tls.certificate_of(plan, site_names(d)[0])} for d in domains]}
    return [
        # answers are files nginx reads on each request: no reload for a changed one
        Service(None, tuple(f for d in domains for f in domain_files(plan, d))),
        # restarted, not reloaded: a reload whose new listeners cannot bind leaves the old
        # configuration serving while systemd reports success
        Service("nginx", (File.template(SITE, "web/nginx.conf.j2", context),), check="nginx -t -q",
                absent=("/etc/nginx/sites-enabled/default",)),
    ]


def rules(data: dict, pos: Positions) -> list[Problem]:
    """A published MTA-STS policy needs a web host to serve it (else senders that enforce it
    would find none and, once they cached one, refuse to deliver); a domain whose MX hosts all
    play the outside world publishes its own, never the platform's."""
    outside = {h["name"] for h in data["hosts"] if h["outside"]}
    served = any("web" in h["roles"] and h["name"] not in outside for h in data["hosts"])
    problems = []
    for i, domain in enumerate(data["domains"]):
        if domain["mta_sts"] == "none":
            continue
        if set(domain["mx"]) <= outside:
            problems.append(pos.problem(("domains", i, "mta_sts"), f"{domain['name']} is not a domain of the "
                                        "platform (its MX hosts are outside): the platform serves no policy for it"))
        elif not served:
            problems.append(pos.problem(("domains", i, "mta_sts"), f"MTA-STS for {domain['name']} needs a host "
                                        "with the 'web' role to serve its policy"))
    return problems


COMPONENT = Component(
    name="web",
    schema=schema_fragment(__file__),
    roles=frozenset({"web"}),
    packages=("nginx-light",),
    units=("nginx",),
    public={"web": ((PORT, "HTTPS: MTA-STS policies, mail client autoconfig"),)},
    section="web",
    platform_only=True,
    rules=(rules,),
    adds={"tls.readers": tls.readers("nginx"), "tls.names": names, "dns.records": records},
    configure=configure,
)
