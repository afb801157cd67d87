"""The topology, worked out once on the typed model: for every host, what it serves,
whom it talks to and how, and what only a lab does. Deploys receive their host's plan
and never work topology out themselves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from mailstack import registry
from mailstack.component import EXTENSION_POINTS, PLATFORM_POINTS, Component, ExtensionConflict, Opening
from mailstack.dns import service_names, zones
from mailstack.dnssec import anchors, parents
from mailstack.inventory import Domain, Host, Inventory, User
from mailstack.tls import grouped, lab_ca_issues

MTA_ROLES = frozenset({"mx", "submission"})
LOGIN_ROLES = frozenset({"mailbox", "submission", "proxy"})  # where Dovecot checks passwords
MILTER_PORT = 11332  # rspamd's milter on loopback; across hosts, the TLS tunnel's port too
LMTP_PORT = 24  # LMTP for MX hosts elsewhere: stunnel, their client certificates required
LMTP_INSIDE_PORT = 2424  # Dovecot's LMTP behind that tunnel, on loopback


@dataclass(frozen=True)
class GatewayHop:
    """How Postfix and the S/MIME gateway reach each other (seen from either side)."""

    gateway: Host
    plaintext: bool  # same host, over loopback: no TLS on the hop
    connect: str  # where Postfix hands mail to the gateway
    gateway_listen: str  # where the gateway listens
    mta_addresses: tuple[str, ...]  # Postfix hosts that use the gateway

    def nexthop(self, port: int) -> str:
        return f"[{self.connect}]:{port}"


@dataclass(frozen=True)
class FilterLink:
    """The TLS tunnel that carries the milter protocol between Postfix hosts and a filter
    host elsewhere (Postfix and rspamd speak milter without TLS): its `server` end on the
    filter host, its `client` end on each Postfix host without `filter`."""

    side: str  # "server" or "client"
    filters: tuple[Host, ...]  # the filter hosts (a client tries them in order)
    mtas: tuple[Host, ...]  # the Postfix hosts that use them from elsewhere


@dataclass(frozen=True)
class Resolver:
    """The host's local unbound, which always validates: `isolated` (lab) serves only the
    platform's zones and their parents from its `dns` hosts, signed there, trusting `anchors`
    (mailstack/dnssec.py), and refuses the rest; otherwise it resolves from the root with the
    root's anchor."""

    isolated: bool
    zones: tuple[str, ...]
    nameservers: tuple[str, ...]
    anchors: tuple[str, ...] = ()


@dataclass(frozen=True)
class HostPlan:
    inv: Inventory
    host: Host
    components: tuple[Component, ...]  # in the order they are applied
    own_domains: tuple[Domain, ...]  # the platform's domains (not the lab's outside world)
    mx_domains: tuple[Domain, ...]  # domains this host receives mail for
    mailbox_domains: tuple[Domain, ...]  # domains whose mailboxes live here
    submission_domains: tuple[Domain, ...]  # domains whose users submit here
    login_domains: tuple[Domain, ...]  # domains whose users' passwords Dovecot here checks
    mailbox_users: tuple[User, ...]  # users whose mailboxes are on this host
    proxies: tuple[Host, ...]  # the Dovecot proxies in front of the mailbox hosts
    # hosts that tell Dovecot here their clients' addresses: the proxies in front of a mailbox
    # host, and the webmail host (its browsers' addresses)
    client_forwarders: tuple[Host, ...]
    milter: str | None  # where Postfix here reaches rspamd, or the tunnel to it (None: no filter)
    filter_link: FilterLink | None  # this host's end of the milter tunnel, if it has one
    lmtp_clients: tuple[Host, ...]  # MX hosts elsewhere that deliver here over LMTP
    gateway: GatewayHop | None  # the S/MIME hop, for its MTAs and the gateway host
    platform_fqdns: tuple[str, ...]  # every host name of the platform itself
    # the host's certificates, each a tuple of names: the first is its own (its FQDN first), the
    # others are served by the name a client asks for (SNI); see tls.grouped
    certificates: tuple[tuple[str, ...], ...]
    resolver: Resolver
    dnssec_probe: str  # Postfix's probe of the root zone ("" where the resolver refuses it)
    tune_kernel: bool  # a container (lab) cannot set kernel parameters
    lab_partner_certificates: tuple[str, ...]  # S/MIME partners the lab CA plays
    # extension point -> ((component name, what it adds), ...) from the components here (and,
    # for PLATFORM_POINTS, from those on every host, host after host)
    added: dict

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def certificate_names(self) -> tuple[str, ...]:
        """Every name the host's certificates carry, its FQDN first."""
        return tuple(name for names in self.certificates for name in names)

    def runs(self, component: str) -> bool:
        """Whether the component named so runs on this host."""
        return any(c.name == component for c in self.components)

    def contributed(self, point: str) -> tuple:
        """Everything the components add at extension point `point`, in component order."""
        return tuple(item for _, items in self.added[point] for item in items)

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(self.host.roles)

    @property
    def is_mta(self) -> bool:
        return bool(MTA_ROLES & self.roles)

    def lmtp_target(self, store: str) -> str:
        """Postfix's transport to a mailbox host: a socket here, else LMTP inside TLS
        (master.cf's lmtp-tls: this host's certificate shown, the other's name checked)."""
        if store == self.name:
            return "lmtp:unix:private/dovecot-lmtp"
        return f"lmtp-tls:inet:[{self.inv.host(store).fqdn}]:{LMTP_PORT}"

    @property
    def is_proxy(self) -> bool:
        return "proxy" in self.roles

    @cached_property
    def openings(self) -> tuple[Opening, ...]:
        """Every inbound port and who may reach it: SSH, each component's public ports
        for this host's roles, and the ports only named peers may use."""
        result = [Opening(self.host.ssh["port"], "tcp", "SSH (administration)")]
        for component in self.components:
            for role, ports in component.public.items():
                if role in self.roles:
                    result += [Opening(port, "tcp", f"{role}: {why}") for port, why in ports]
            if component.openings:
                result += component.openings(self)
        return tuple(sorted(result))

    @cached_property
    def listeners(self) -> frozenset[tuple[str | None, int]]:
        """Every TCP (address, port) this host listens on (None: every address): what
        the firewall opens, and what only the host itself uses."""
        found = {(o.bind, o.port) for o in self.openings if o.proto == "tcp"}
        for component in self.components:
            found |= set(component.local(self) if callable(component.local) else component.local)
        return frozenset(found)

    def peers(self, hosts) -> tuple[str, ...]:
        """Addresses of the other hosts among `hosts` (this host reaches itself on loopback)."""
        return tuple(sorted(h.address for h in hosts if h.name != self.name))


def platform_hosts(inv: Inventory, *roles: str) -> tuple[Host, ...]:
    """The platform's own hosts (not those a lab plays the outside world with), those with
    any of `roles` if given, in inventory order."""
    return tuple(h for h in inv.hosts if not h.outside and (not roles or set(roles) & set(h.roles)))


def received_domains(inv: Inventory, host: Host) -> tuple[Domain, ...]:
    """The domains `host` receives mail for (it is one of their MX)."""
    return tuple(d for d in inv.domains if host.name in d.mx)


def submitted_domains(inv: Inventory, host: Host) -> tuple[Domain, ...]:
    """The domains whose users submit mail on `host`."""
    return tuple(d for d in inv.domains if host.name in d.submission)


def own_domains(inv: Inventory) -> tuple[Domain, ...]:
    """The platform's mail domains: those with an MX of the platform (not the lab's outside world)."""
    outside = {h.name for h in inv.hosts if h.outside}
    return tuple(d for d in inv.domains if not set(d.mx) <= outside)


def additions(inv: Inventory, host: Host, components: tuple[Component, ...]) -> dict:
    """What the host's components add at each extension point, checked: an unknown point, or
    two components claiming one Postfix parameter or service, is an error naming both."""
    for component in components:
        for point in component.adds:
            if point not in EXTENSION_POINTS:
                raise ExtensionConflict(f"component {component.name!r} adds to {point!r}, which is no extension "
                                        f"point (there are: {', '.join(EXTENSION_POINTS)})")
    added = {point: tuple((c.name, c.adds[point](inv, host)) for c in components if point in c.adds)
             for point in EXTENSION_POINTS}
    for point, key in (("postfix.main", lambda item: item), ("postfix.master", lambda item: item["line"].split()[0])):
        owners: dict[str, str] = {}
        for name, items in added[point]:
            for item in items:
                if key(item) in owners:
                    raise ExtensionConflict(f"components {owners[key(item)]!r} and {name!r} both set {point} "
                                            f"{key(item)!r} on {host.name}")
                owners[key(item)] = name
    return added


def _gateway(inv: Inventory, host: Host, mtas: list[Host]) -> GatewayHop | None:
    gateways = [h for h in inv.hosts_with("smime") if not h.outside]
    if not gateways or host.outside or not (host in mtas or host == gateways[0]):
        return None
    gateway = gateways[0]  # the one Postfix uses
    plaintext = inv.smime["plaintext_loopback"]  # refused by the rules unless all on one host
    return GatewayHop(
        gateway=gateway,
        plaintext=plaintext,
        connect="127.0.0.1" if plaintext else gateway.fqdn,
        gateway_listen="127.0.0.1" if plaintext else gateway.address,
        mta_addresses=tuple(sorted(h.address for h in mtas)),
    )


def filter_link(inv: Inventory, host: Host) -> FilterLink | None:
    """The host's end of the milter tunnel, if Postfix and rspamd are on different hosts."""
    filters = tuple(h for h in inv.hosts_with("filter") if not h.outside)
    remote = tuple(h for h in inv.hosts if not h.outside and MTA_ROLES & set(h.roles) and "filter" not in h.roles)
    if host.outside or not filters or not remote:
        return None
    if host in remote:
        return FilterLink("client", filters, remote)
    if host in filters:
        return FilterLink("server", filters, remote)
    return None


def lmtp_clients(inv: Inventory, host: Host) -> tuple[Host, ...]:
    """The MX hosts elsewhere that deliver to this host's mailboxes over LMTP."""
    return tuple(m for m in inv.hosts if not m.outside and "mx" in m.roles and m.name != host.name
                 and any(host.name in d.mailbox for d in inv.domains if m.name in d.mx))


def plans(inv: Inventory, components: tuple[Component, ...] | None = None) -> dict[str, HostPlan]:
    """Every host's plan, by host name."""
    if components is None:
        components = registry.components()
    own = own_domains(inv)
    mtas = [h for h in inv.hosts if not h.outside and MTA_ROLES & set(h.roles)]
    isolated = bool(inv.lab_nameservers())
    lab_zones = sorted(zones(inv)) if isolated else []
    resolver = Resolver(isolated=isolated, zones=tuple(sorted({*lab_zones, *parents(lab_zones)})),
                        nameservers=tuple(h.address for h in inv.hosts_with("dns")), anchors=anchors(inv, lab_zones))
    own_names = {d.name for d in own}
    lab_partners = tuple(p["domain"] for p in inv.smime["partners"]
                         if lab_ca_issues(inv.tls["source"], inv.platform["lab"]) and "certificate" not in p
                         and p["domain"] not in own_names and p["domain"] in {d.name for d in inv.domains})
    filtered = any(not h.outside for h in inv.hosts_with("filter"))
    proxies = tuple(h for h in inv.hosts_with("proxy") if not h.outside)
    here = {host.name: tuple(c for c in components if c.serves(inv, host)) for host in inv.hosts}
    added = {host.name: additions(inv, host, here[host.name]) for host in inv.hosts}
    gathered = {point: tuple(item for host in inv.hosts for item in added[host.name][point])
                for point in PLATFORM_POINTS}
    result = {}
    for host in inv.hosts:
        mailbox = tuple(d for d in inv.domains if host.name in d.mailbox)
        submission = submitted_domains(inv, host)
        proxied = own if "proxy" in host.roles else ()
        logins = {d.name for d in (*mailbox, *submission, *proxied)}  # names: comparing Domains is slow
        own_added = added[host.name]
        result[host.name] = HostPlan(
            inv=inv,
            host=host,
            components=here[host.name],
            own_domains=own,
            mx_domains=received_domains(inv, host),
            mailbox_domains=mailbox,
            submission_domains=submission,
            login_domains=tuple(d for d in inv.domains if d.name in logins),
            # rspamd here, or this host's end of the tunnel to the filter host
            milter="127.0.0.1" if filtered and not host.outside and host in mtas else None,
            filter_link=filter_link(inv, host),
            lmtp_clients=lmtp_clients(inv, host),
            mailbox_users=tuple(u for u in inv.users if u.mailbox == host.name),
            proxies=() if host.outside else proxies,  # the outside world has none in front of it
            client_forwarders=() if host.outside else (
                *(p for p in proxies if mailbox and p.name != host.name), *platform_hosts(inv, "webmail")),
            gateway=_gateway(inv, host, mtas),
            platform_fqdns=tuple(h.fqdn for h in inv.hosts if not h.outside),
            certificates=grouped(inv, host, dict.fromkeys((
                *service_names(inv, host), *(name for _, names in own_added["tls.names"] for name in names)))),
            resolver=resolver,
            # the lab's isolated resolver refuses the root zone: no DNSSEC probe of it there
            dnssec_probe="" if inv.platform["lab"] else "ns:.",
            tune_kernel=not inv.platform["lab"],
            lab_partner_certificates=lab_partners,
            added={**own_added, **gathered},
        )
    return result


def own_authserv_ids(plan: HostPlan) -> str:
    """A regexp of Authentication-Results that claim to come from one of the platform's hosts."""
    return rf"^Authentication-Results:\s*({'|'.join(re.escape(n) for n in plan.platform_fqdns)})\b"
