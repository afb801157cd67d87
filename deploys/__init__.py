"""The dispatch table: which deploys a host's roles call, in the order they run.

Every host gets `base` and `tls`; the rest follow its roles. A role that no deploy
serves yet is reported by deploy.py, never skipped silently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from deploys import base, dns, dovecot, postfix, rspamd, smime, tls

# (deploy, roles it serves; None = every host), in order of application
STEPS: tuple[tuple[object, frozenset[str] | None], ...] = (
    (base, None),
    (tls, None),
    (dns, frozenset({"dns"})),
    (rspamd, frozenset({"filter"})),
    (dovecot, frozenset({"mailbox"})),
    (smime, frozenset({"smime"})),
    (postfix, frozenset({"mx", "submission"})),
)


def deploys_for(roles: Iterable[str]) -> tuple[list[Callable[[], None]], list[str]]:
    """The deploy functions for a host with `roles`, and the roles none of them serves."""
    roles = set(roles)
    runs = [module.deploy for module, serves in STEPS if serves is None or serves & roles]
    served = set().union(*(serves for _, serves in STEPS if serves))
    return runs, sorted(roles - served)


def image_packages() -> tuple[str, ...]:
    """Every Debian package some deploy installs: the lab image carries them all."""
    return tuple(sorted({p for module, _ in STEPS for p in module.PACKAGES}))
