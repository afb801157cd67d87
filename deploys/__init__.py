"""The components, in the order they are applied, and how one is applied to a host.

Every host gets `base` and `tls`; the rest follow its roles. Everything that lists
components (the lab image, the firewall, the tests' expectations) reads COMPONENTS.
"""

from __future__ import annotations

from dataclasses import replace
from importlib import import_module

from pyinfra import host
from pyinfra.api import deploy

from deploys.ops import apply as apply_service
from deploys.ops import (
    install_files,
    manifest,
    package_lists,
    packages,
    pending_marker,
    reload_units,
    retire,
    stamped,
    take_stock,
    unsettle,
)
from mailstack.component import Component, File, Service
from mailstack.plan import plans
from mailstack.registry import register
from mailstack.secrets import making_all

# The registry: every component's folder, in the order they apply to a host.
ORDER = (
    "base",
    "tls",
    "dns",
    "acme_ca",
    "acme",
    "siem_receiver",
    "pager_receiver",
    "directory",
    "idp",
    "storage",
    "backup_lock",
    "clamav",
    "peekaboo",
    "siem",
    "redis",
    "nauthilus",
    "limits",
    "dmarc_reports",
    "smime_verify",
    "rspamd",
    "filter_link",
    "lmtp_link",
    "ldap",
    "dovecot",
    "reports",
    "smime",
    "srs",
    "outbound_tls",
    "postfix",
    "webmail",
    "web",
    "bruteforce",
    "backup",
    "exporters",
    "monitoring",
    "loopback",
)

COMPONENTS: tuple[Component, ...] = tuple(import_module(f"deploys.{name}").COMPONENT for name in ORDER)


register(COMPONENTS)


def make_secrets(inv) -> None:
    """The secrets step, before a deploy plans: every host's plan and files are worked out
    once under the secrets directory's lock, which makes every password, key and certificate
    they use that does not exist yet (and renews certificates near expiry). After it the
    deploy reads secrets only (mailstack.secrets.reading_only)."""
    with making_all(inv):
        for plan in plans(inv).values():
            for component in plan.components:
                configured(component, plan)


def served_roles() -> set[str]:
    return set().union(*(c.roles for c in COMPONENTS if c.roles))


def configured(component: Component, plan) -> list[Service]:
    """The component's services on this host, with the files other components running
    here add to them (`extends`), and without those of components turned off here."""
    services = component.configure(plan) if component.configure else []

    off = [c for c in COMPONENTS if c not in plan.components]

    def added(unit: str, components) -> list[File]:
        return [f for c in components for f in c.extends.get(unit, lambda _: ())(plan)]

    def extended(service: Service) -> Service:
        files = (*service.files, *added(service.unit, plan.components))
        written = {f.path for f in files}
        unwritten = [path for c in (*plan.components, *off) for path in c.writes.get(service.unit, lambda _: ())(plan)
                     if path not in written]
        return replace(service, files=files, absent=tuple(dict.fromkeys(
            (*service.absent, *(f.path for f in added(service.unit, off)), *unwritten))))

    return [extended(s) if s.unit else s for s in services]


def apply(component: Component, plan, services: list[Service]) -> None:
    """The stages of one component on one host: install (packages, users, directories),
    configure (its services, rendered: the checker runs on change), activate (restart on
    change, enabled, then running)."""
    @deploy(f"mailstack {component.name}")
    def stages() -> None:
        packages(component.name, component.packages, component.preseed, component.quiet_install)
        if component.install:
            component.install(plan)
        for service in host.loop(services):
            apply_service(service)

    stages()


def converge(plan) -> None:
    """This host as its plan says: the components it no longer runs retired (their units
    stopped, exactly the files they had put here removed), then each of its components
    applied in order, then the files a component here wrote before and no longer writes
    removed, then the record of what each one put here (its manifest)."""
    services = {c.name: configured(c, plan) for c in plan.components}
    units = {c.name: sorted({*c.units, *(s.unit for s in services[c.name] if s.unit)}) for c in plan.components}
    files = {f.path for found in services.values() for s in found for f in s.files}
    kept = files | {unit for found in units.values() for unit in found}  # what the components here have now
    kept |= {path for c in plan.components if c.makes for path in c.makes(plan)}
    manifests = tuple(manifest(c.name, units[c.name], [f.path for s in services[c.name] for f in s.files])
                      for c in plan.components)
    everything = [s for found in services.values() for s in found]
    manifest_service = Service(None, manifests)
    known = take_stock(paths=list(dict.fromkeys([*(f.path for s in everything for f in s.files),
                                                 *(p for s in everything for p in s.absent),
                                                 *(f.path for f in manifests),
                                                 *map(pending_marker, [*everything, manifest_service])])),
               units=sorted({unit for found in units.values() for unit in found}),
               big=stamped(f for s in everything for f in s.files))
    package_lists(name="Refresh package lists (daily)", max_age=86400)
    retired = sorted((name, lines) for name, lines in known.manifests.items() if name not in services)
    if retired:
        unsettle()  # their units stop and their files go: ask the host from then on
    for name, lines in host.loop(retired):
        retire(name, lines, kept)
    # every host walks the same list, so operations line up across hosts in one order
    for component in host.loop(COMPONENTS):
        if component in plan.components:
            apply(component, plan, services[component.name])
    # what a component here had written and writes no more (the certificate of names that left):
    # removed once every component has its present configuration, which names it no longer
    left = sorted({line[5:] for name, lines in known.manifests.items() if name in services
                   for line in lines if line.startswith("file ") and line[5:] not in kept})
    if left:
        install_files(name="Files no component writes any more removed", files=(), absent=tuple(left))
    apply_service(manifest_service)
    reload_units()
