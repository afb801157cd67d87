"""DKIM keys on the DNS, and their rotation. A domain publishes the key of `dkim.selector`
and, during a rotation, that of `dkim.previous` too. It signs with `selector` once the DNS
serves that key; until then with `previous`, so no mail is ever signed with a key receivers
cannot find. Each deploy looks (only for domains in a rotation); `mailstack dkim rotate`
deploys, waits for the DNS, and deploys again."""

from __future__ import annotations

import datetime
import json
import re
import tempfile
import time
from pathlib import Path

import dns.exception
import dns.resolver

from mailstack.inventory import Domain, Inventory, check_text, load, rewrite
from mailstack.inventory.source import load_yaml
from mailstack.remote import deploy
from mailstack.secrets import dkim_key, dkim_public_record


def selectors(domain: Domain) -> list[str]:
    """The selectors whose keys the domain publishes: the signing one first."""
    return [domain.dkim["selector"], *([domain.dkim["previous"]] if domain.dkim.get("previous") else [])]


def key_name(domain: Domain, selector: str) -> str:
    return f"{selector}._domainkey.{domain.name}"


def key_record(inv: Inventory, domain: Domain, selector: str) -> str:
    """The TXT value that publishes the domain's key of `selector` (made here the first time)."""
    return dkim_public_record(dkim_key(inv, domain.name, selector, domain.dkim["bits"]))


def resolver(nameservers: tuple[str, ...] = ()) -> dns.resolver.Resolver:
    """A resolver asking `nameservers` (a lab's own), or this machine's."""
    found = dns.resolver.Resolver(configure=not nameservers)
    if nameservers:
        found.nameservers = list(nameservers)
    found.lifetime = 10
    return found


def served(inv: Inventory, domain: Domain, selector: str, asking: dns.resolver.Resolver) -> bool:
    """Whether the DNS answers the key of `selector` as this platform publishes it (no answer,
    another key, an error: not served)."""
    try:
        answer = asking.resolve(key_name(domain, selector), "TXT")
    except dns.exception.DNSException:
        return False
    return any(b"".join(r.strings).decode() == key_record(inv, domain, selector) for r in answer)


def signing_selector(inv: Inventory, domain: Domain, nameservers: tuple[str, ...] = ()) -> str:
    """The selector the domain signs with now: `selector`, or during a rotation `previous`
    while the DNS does not serve the new key yet."""
    new, previous = domain.dkim["selector"], domain.dkim.get("previous")
    if previous is None or served(inv, domain, new, resolver(nameservers)):
        return new
    return previous


def with_dkim(text: str, file: str, domain: str, changes: dict, dropped: tuple[str, ...] = ()) -> str:
    """The inventory text with `changes` in `domain`'s `dkim` mapping and `dropped` out of it
    (what the inventory left to the defaults stays so), written on one line; everything else
    byte for byte. Raises InventoryInvalid if the result is invalid."""
    data, pos, _ = load_yaml(text, file)
    index = next(i for i, d in enumerate(data["domains"]) if d["name"].lower() == domain)
    dkim = {k: v for k, v in {**(data["domains"][index].get("dkim") or {}), **changes}.items() if k not in dropped}
    lines = text.splitlines(keepends=True)
    flow = "{" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in dkim.items()) + "}"
    if "dkim" in data["domains"][index]:
        at = pos.lines[("domains", index, "dkim")] - 1  # the value's first line; the key is on it or above
        while not re.match(r"\s*(- )?dkim\s*:", lines[at]):
            at -= 1
        column = lines[at].index("dkim")
        end = at + 1
        while end < len(lines) and lines[end].strip() and len(lines[end]) - len(lines[end].lstrip()) > column:
            end += 1
        lines[at:end] = [f"{lines[at][:column]}dkim: {flow}\n"]
    else:
        at = pos.lines[("domains", index, "name")] - 1
        lines.insert(at + 1, " " * lines[at].index("name") + f"dkim: {flow}\n")
    result = "".join(lines)
    changed = check_text(result, file).domain(domain).dkim
    assert all(changed.get(k) == dkim.get(k) for k in {*dkim, "previous"}), "the inventory edit did not take"
    return result


class RotationError(Exception):
    """A rotation step that cannot be taken, or failed: the message says which and why."""


def _signing_domain(inv: Inventory, name: str) -> Domain:
    domain = next((d for d in inv.own_domains() if d.name == name), None)
    if domain is None or not domain.dkim["enabled"]:
        raise RotationError(f"{name} is not a platform domain that signs with DKIM in {inv.file}")
    return domain


def _edit(path: Path, name: str, changes: dict, dropped: tuple[str, ...] = ()) -> Inventory:
    """Write the change into the inventory file (whole, or not at all); the inventory after it."""
    rewrite(path, with_dkim(path.read_text(), str(path), name, changes, dropped))
    return load(path)


def _deploy(path: Path, why: str) -> None:
    with tempfile.NamedTemporaryFile("w", prefix="mailstack-dkim-", suffix=".log", delete=False) as log:
        print(f"dkim: deploying {path} ({why}; log: {log.name})", flush=True)
        done = deploy(path)
        log.write(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RotationError(f"the deploy failed ({done.returncode}): see {log.name}")


def rotate(path: Path, name: str, selector: str | None, wait: int, nameservers: tuple[str, ...] | None) -> None:
    """Rotate `name`'s key to `selector` (default: s and today's date), or finish a rotation
    the inventory names already."""
    inv = load(path)
    domain = _signing_domain(inv, name)
    asking = resolver(nameservers if nameservers is not None else inv.lab_nameservers())
    current, previous = domain.dkim["selector"], domain.dkim.get("previous")
    if previous is None:
        new = selector or f"s{datetime.datetime.now(datetime.UTC):%Y%m%d}"
        if new == current:
            raise RotationError(f"{name} signs with {new!r} already: name another with --selector")
        inv = _edit(path, name, {"selector": new, "previous": current})
        domain, current, previous = inv.domain(name), new, current
        print(f"dkim: {path}: {name} rotates from {previous!r} to {current!r}")
    elif selector and selector != current:
        raise RotationError(f"{name} is rotating to {current!r} already (dkim.previous: {previous!r})")
    record = f"{key_name(domain, current)} TXT \"{key_record(inv, domain, current)}\""
    if not served(inv, domain, current, asking):
        _deploy(path, f"publish {key_name(domain, current)}; signing stays with {previous!r}")
        if not inv.hosts_with("dns"):  # the zone is the operator's
            print(f"dkim: publish this record at the DNS of {name} (`mailstack dns` prints it too):\n{record}")
        deadline = time.monotonic() + wait
        while not served(inv, domain, current, asking):
            if time.monotonic() > deadline:
                raise RotationError(f"the DNS does not serve {record} after {wait} s; {name} signs with "
                                    f"{previous!r} until it does: run this again then")
            time.sleep(5)
    _deploy(path, f"sign with {current!r}, which the DNS serves")
    print(f"dkim: {name} signs with {current!r}; {previous!r} stays published for mail signed before. "
          f"After a grace period (a week), retire it: mailstack dkim retire {name}")


def retire(path: Path, name: str, nameservers: tuple[str, ...] | None) -> None:
    """Take `name`'s previous key out of the inventory and the DNS, once the new one is served."""
    inv = load(path)
    domain = _signing_domain(inv, name)
    asking = resolver(nameservers if nameservers is not None else inv.lab_nameservers())
    current, previous = domain.dkim["selector"], domain.dkim.get("previous")
    if previous is None:
        raise RotationError(f"{name} has no previous selector to retire")
    if not served(inv, domain, current, asking):
        raise RotationError(f"not retiring {previous!r}: the DNS does not serve {key_name(domain, current)} yet, "
                            f"so {name} still signs with {previous!r}")
    _edit(path, name, {}, dropped=("previous",))
    _deploy(path, f"retire {key_name(domain, previous)}")
    print(f"dkim: {name} signs with {current!r}; {previous!r} is no longer published")
