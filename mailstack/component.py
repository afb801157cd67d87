"""What a component is: one declaration (roles, packages, units, ports, schema section,
rules, stages) from which the dispatch order, the lab image, the firewall and the lab
tests' expectations are all derived; and the files it renders, as plain data.

Nothing here talks to a host: deploys/ turns a component's files into pyinfra operations.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pyinfra.api.util import get_template

COMPONENTS_DIR = Path(__file__).resolve().parent.parent / "deploys"  # one folder per component


def schema_fragment(module_file: str) -> dict:
    """The inventory sections a component owns: `schema.json` in its folder, if any."""
    fragment = Path(module_file).with_name("schema.json")
    return json.loads(fragment.read_text()) if fragment.exists() else {}


def template_path(name: str) -> Path:
    """`COMPONENT/FILE`: FILE in that component's `templates/` folder."""
    component, _, file = name.partition("/")
    return COMPONENTS_DIR / component / "templates" / file


# What a component may add to another's configuration (`Component.adds`), each a function
# of (inventory, host) that the plan calls once per host the component runs on.
EXTENSION_POINTS = {
    "postfix.main": "Postfix main.cf parameters, {name: value}; two components (or a component and "
                    "Postfix itself) setting one parameter is an error",
    "postfix.master": "Postfix master.cf services, [{'line': 'name type private ... command', "
                      "'options': ['name=value', ...]}]; one service name, one owner",
    "postfix.lookups": "more tables Postfix consults after its own file, {lookup: 'type:table'}; "
                       "lookups: 'mailboxes' (recipients), 'senders' (sender -> login)",
    "tls.names": "more names the host's certificate carries, [name]",
    "tls.readers": "units whose daemons serve the host's certificate, [unit]: where the host renews it itself "
                   "(ACME), each is reloaded (restarted if it cannot reload) with the new one",
    "dns.records": "DNS records the platform publishes, [mailstack.dns.Record]; each in a zone of the platform",
    "monitoring.targets": "what Prometheus scrapes on the host, [(job, 'address:port')]",
    "monitoring.certificates": "more certificate files on the host (besides its own) whose expiry its metrics "
                               "report, the expiry alert and `mailstack status` watch, [path]",
    "monitoring.rules": "alerts on what it exports, [mailstack.component.AlertRule]; one alert name, one rule",
    "bruteforce.ports": "more ports where the host takes passwords (besides IMAP, POP3 and submission), [port]: "
                        "a banned address is refused there too",
    "directory.accounts": "accounts a directory the platform runs must hold for its clients, [(dn, password)]",
}
# points whose additions are gathered from every host and handed to every host's plan
PLATFORM_POINTS = frozenset({"dns.records", "monitoring.targets", "monitoring.rules", "directory.accounts"})


class ExtensionConflict(ValueError):
    """Two components (or a component and the one it extends) claim the same setting."""


class UnsafeValue(ValueError):
    """An inventory value that would add lines to a configuration file."""


def guard(value, where: str = "a rendered file"):
    """Refuse a value that could add lines to a configuration file, whatever the schema
    let through: every inventory value passes here on its way into a file."""
    if isinstance(value, str):
        if any(c in value for c in "\n\r\0"):
            raise UnsafeValue(f"refusing to write {value[:60]!r} into {where}: it contains a line break or NUL")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            guard(key, where)
            guard(item, where)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            guard(item, where)
    return value


def table(rows) -> str:
    """A lookup table of "key value" lines (Postfix maps, rspamd maps); every cell guarded."""
    return "\n".join(f"{guard(key)} {guard(value)}" for key, value in rows)


def render(template: str, context: Mapping, where: str) -> str:
    """The template `COMPONENT/FILE` rendered with `context` (every value guarded first)."""
    guard(context, where)
    return get_template(str(template_path(template))).render(**context)


@functools.lru_cache(maxsize=64)
def _read(path: Path, size: int, mtime_ns: int) -> bytes:
    return path.read_bytes()


@dataclass(frozen=True)
class File:
    """One file on a host, fully rendered. A `secret` file (keys, passwords) is never
    shown and never readable by others, not even for a moment."""

    path: str
    content: bytes
    mode: str = "0644"
    user: str = "root"
    group: str = "root"
    secret: bool = False

    @classmethod
    def text(cls, path: str, text: str, **kwargs) -> File:
        """A text file, newline-terminated (its values were guarded as it was built)."""
        return cls(path, (text.rstrip("\n") + "\n").encode(), **kwargs)

    @classmethod
    def template(cls, path: str, template: str, context: Mapping, **kwargs) -> File:
        return cls(path, render(template, context, path).encode(), **kwargs)

    @classmethod
    def copy(cls, path: str, source: str | Path, **kwargs) -> File:
        """A file of the control machine (a key, a certificate, code): read once a run
        for all hosts while it is unchanged (a program of ~100 MB is read and hashed once)."""
        found = Path(source).expanduser().resolve()
        status = found.stat()
        return cls(path, _read(found, status.st_size, status.st_mtime_ns), **kwargs)

    @property
    def lines(self) -> list[str]:
        return self.content.decode().splitlines()


@dataclass(frozen=True)
class Service:
    """Files that belong together, the checker that validates them, and what applies
    them: restarting `unit`, or `on_change` (a command) for files no daemon reads. Paths
    in `absent` are removed (what a component turned off had added)."""

    unit: str | None
    files: tuple[File, ...]
    check: str | None = None
    on_change: str | None = None
    absent: tuple[str, ...] = ()  # paths that must not exist (left by a component now off)
    reload: bool = False  # the daemon takes changes gracefully (a reload, not a restart)

    def file(self, path: str) -> File:
        return next(f for f in self.files if f.path == path)


@dataclass(frozen=True)
class AlertRule:
    """A Prometheus alert (monitoring.rules): its name, the expression that fires it, for how
    long it must hold first ("" at once, or a duration such as "2m"), and what the operator reads
    (Prometheus's own {{ $labels.x }} and {{ $value }} work in `summary`)."""

    name: str
    expr: str
    summary: str
    severity: str = "warning"
    after: str = ""


@dataclass(frozen=True, order=True)
class Opening:
    """One inbound port and who may reach it (addresses or networks; no sources: anyone);
    `bind` is the address the daemon listens on (None: every address)."""

    port: int
    proto: str
    why: str
    sources: tuple[str, ...] = ()
    bind: str | None = None

    def rule(self) -> str:
        """The nftables rule; sources are validated addresses from the inventory."""
        match = ""
        if self.sources:
            families = {ipaddress.ip_network(s, strict=False).version for s in self.sources}
            if len(families) != 1:  # one rule per family keeps nft happy
                raise ValueError("mixed address families in one opening")
            family = "ip" if families == {4} else "ip6"
            match = f"{family} saddr {{ {', '.join(self.sources)} }} "
        return f"{match}{self.proto} dport {self.port} accept comment \"{self.why}\""


@dataclass(frozen=True)
class Component:
    """A part of the platform, declared once.

    roles: the host roles it serves (None: every host). packages: Debian packages it
    installs (the lab image carries them). units: the daemons it keeps running (the lab
    image ships them disabled until configured). public: ports open to anyone, per role.
    local: (address, port) it listens on for this host's own use only (or a function of
    the plan giving them); the firewall opens none of them. loopback_clients: which local
    users may connect to which loopback ports (its own, or another's it is a client of).
    section: its inventory schema section, whose settings have no effect without a host of
    its roles. schema: the sections it adds to the
    inventory schema (its folder's schema.json, assembled by mailstack/schemabuild.py). adds:
    what it adds at an extension point (EXTENSION_POINTS) of the hosts it runs on.
    rules: checks of the inventory (data, positions) -> problems. enabled: whether the
    inventory turns it on (default: always, for hosts with its roles). needed: whether a
    host with its roles needs it under the topology (inventory, host) -> bool. extends: files it adds
    to another component's service, by unit (e.g. rspamd's antivirus settings), so that
    service is checked and restarted with them. writes: by unit, every path its `extends` may
    write there (a function of the plan); those it does not write on a host are removed there.
    makes: the paths it makes on the host itself, not from this machine (a function of the
    plan), which no other component's leftovers removal may take (the certificates ACME fetches).
    Stages, each given the host's plan:
    `openings` (ports only some peers may reach), `install` (pyinfra operations: users,
    directories), `configure` (the Services it renders, pure data).
    """

    name: str
    roles: frozenset[str] | None
    packages: tuple[str, ...] = ()
    preseed: tuple[str, ...] = ()  # debconf answers its packages need before they install
    quiet_install: bool = False  # its daemons must not start from the install (e.g. a packaged default password)
    units: tuple[str, ...] = ()
    disabled_units: tuple[str, ...] = ()  # units its packages ship that must not start
    public: Mapping[str, tuple[tuple[int, str], ...]] = field(default_factory=dict)
    local: tuple[tuple[str, int], ...] | Callable = ()
    # loopback ports -> the system users (besides root) that may connect there, a function of
    # the plan: its own listeners' clients, or its own user as a client of another component's
    # port (Redis's clients declare themselves); the firewall refuses every other local user
    # (deploys/loopback/ joins what every component here declares)
    loopback_clients: Callable | None = None
    section: str | None = None
    schema: Mapping[str, dict] = field(default_factory=dict)
    adds: Mapping[str, Callable] = field(default_factory=dict)
    rules: tuple[Callable, ...] = ()
    enabled: Callable | None = None
    needed: Callable | None = None
    platform_only: bool = False  # never on a lab host that plays the outside world
    # a part only a lab plays (an outside party's server): what it plays and what a production
    # platform uses instead; `mailstack check` refuses its roles unless platform.lab is true
    lab_only: str = ""
    extends: Mapping[str, Callable] = field(default_factory=dict)
    writes: Mapping[str, Callable] = field(default_factory=dict)
    makes: Callable | None = None
    openings: Callable | None = None
    install: Callable | None = None
    configure: Callable | None = None

    def serves(self, inv, host) -> bool:
        """Whether `host` runs this component under inventory `inv`."""
        if self.platform_only and host.outside:
            return False
        wanted = self.roles is None or bool(self.roles & set(host.roles))
        return (wanted and (self.enabled is None or self.enabled(inv))
                and (self.needed is None or self.needed(inv, host)))


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def seconds(duration: str) -> int:
    """An inventory duration (30s, 10m, 1h, 30d, 2w) in seconds."""
    return int(duration[:-1]) * DURATION_UNITS[duration[-1]]
