"""The typed, read-only model of a validated inventory (every default applied)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import cached_property
from types import MappingProxyType
from typing import Any

from mailstack.inventory.rules import mailbox_hosts, submission_hosts


def freeze(value: Any) -> Any:
    """Deep read-only copy: mappings become MappingProxyType, lists tuples."""
    if isinstance(value, dict):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    return value


def _build(cls, values: Mapping):
    names = {f.name for f in fields(cls)}
    return cls(**{k: freeze(v) for k, v in values.items() if k in names})


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    fqdn: str
    roles: tuple[str, ...]
    outside: bool
    ssh: Mapping


@dataclass(frozen=True)
class Domain:
    name: str
    tenant: str
    mx: tuple[str, ...]
    mailbox: tuple[str, ...]
    submission: tuple[str, ...]
    imap: bool
    pop3: bool
    pop3_starttls: bool
    password_login: bool
    user_source: str
    quota: str
    dkim: Mapping
    dmarc: Mapping
    spf: Mapping
    inbound: Mapping
    allow: Mapping
    deny: Mapping
    limits: Mapping
    smime: Mapping
    mta_sts: str
    webmail: bool

    @property
    def smime_enabled(self) -> bool:
        return self.smime["sign"] != "never" or self.smime["encrypt"] != "never"


@dataclass(frozen=True)
class User:
    address: str
    password: str
    mailbox: str  # the host that holds the mailbox
    quota: str
    enabled: bool
    send_as: tuple[str, ...]
    inbound: Mapping  # the user's own spam/malware policy: only the keys it overrides
    limits: Mapping  # the user's own sending limits: only the keys it overrides
    name: str = ""

    @property
    def domain(self) -> str:
        return self.address.split("@")[1]


@dataclass(frozen=True)
class Alias:
    address: str
    to: tuple[str, ...]

    @property
    def domain(self) -> str:
        return self.address.split("@")[1]


# top-level sections that describe the platform itself; every other section of the
# schema holds the settings of one component
CORE_SECTIONS = ("platform", "hosts", "domains", "users", "aliases", "tls", "artifacts", "migration", "lab")


@dataclass(frozen=True)
class Inventory:
    """A validated inventory with every default applied; read-only."""

    file: str
    platform: Mapping
    hosts: tuple[Host, ...]
    domains: tuple[Domain, ...]
    users: tuple[User, ...]
    aliases: tuple[Alias, ...]
    tls: Mapping
    artifacts: Mapping
    migration: Mapping
    lab: Mapping
    components: Mapping

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def hosts_with(self, role: str) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if role in h.roles)

    def lab_nameservers(self) -> tuple[str, ...]:
        """A lab's own nameservers, which every lab host asks (the outside world's DNS is not
        the lab's); none on a platform (its hosts and the control machine ask their own)."""
        return tuple(h.address for h in self.hosts_with("dns")) if self.platform["lab"] else ()

    def domain(self, name: str) -> Domain:
        return self._domains_by_name[name]

    @cached_property
    def _domains_by_name(self) -> Mapping[str, Domain]:
        return {d.name: d for d in self.domains}

    def own_domains(self) -> tuple[Domain, ...]:
        """The platform's domains: all but those whose MX hosts all play the outside world."""
        outside = {h.name for h in self.hosts if h.outside}
        return tuple(d for d in self.domains if not set(d.mx) <= outside)

    def senders(self, domains: set[str] | None = None) -> dict[str, tuple[str, ...]]:
        """Who may send as whom: each address -> the logins that may use it (its own user,
        the users an alias reaches, `send_as` grants), for users of `domains` (default: all)."""
        logins: dict[str, set[str]] = {}
        users = {u.address for u in self.users if domains is None or u.domain in domains}
        for user in self.users:
            if user.address in users:
                for address in (user.address, *user.send_as):
                    logins.setdefault(address, set()).add(user.address)
        for alias in self.aliases:
            for target in alias.to:
                if target in users and (domains is None or alias.domain in domains):
                    logins.setdefault(alias.address, set()).add(target)
        return {address: tuple(sorted(who)) for address, who in sorted(logins.items())}

    def __getattr__(self, name: str) -> Mapping:
        components = object.__getattribute__(self, "components")
        if name in components:
            return components[name]
        raise AttributeError(name)


def _domain(user: dict) -> str:
    return user["address"].split("@")[1].lower()


def model(data: dict, file: str, sections) -> Inventory:
    """The model of validated `data` (defaults applied); `sections`: the component sections."""
    platform = data["platform"]
    hosts = [_build(Host, {**h, "fqdn": h.get("fqdn", f"{h['name']}.{platform['domain']}")})
             for h in data["hosts"]]
    domains = [_build(Domain, {**d, "tenant": d.get("tenant", d["name"]),
                               "mailbox": mailbox_hosts(d, data["hosts"]),
                               "submission": submission_hosts(d, data["hosts"])})
               for d in data["domains"]]
    by_name = {d.name: d for d in domains}
    users = [_build(User, {**u, "address": u["address"].lower(),
                           "mailbox": u.get("mailbox", next(iter(by_name[_domain(u)].mailbox), "")),
                           "quota": u.get("quota", by_name[_domain(u)].quota)})
             for u in data["users"]]
    aliases = [_build(Alias, {**a, "address": a["address"].lower(),
                              "to": [t.lower() for t in a["to"]]}) for a in data["aliases"]]
    return Inventory(
        file=file, platform=freeze(platform), hosts=tuple(hosts), domains=tuple(domains),
        users=tuple(users), aliases=tuple(aliases), tls=freeze(data["tls"]),
        artifacts=freeze(data["artifacts"]), migration=freeze(data["migration"]), lab=freeze(data["lab"]),
        components=freeze({name: data[name] for name in sections}),
    )

