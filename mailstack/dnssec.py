"""DNSSEC for the zones a lab serves: one Ed25519 key per zone (a combined signing key,
kept in the secrets directory), signatures made on the control machine, and the trust
anchors the lab's resolvers validate with. Like the Internet, the lab has parents: it serves
each top-level domain of its zones (`test`) with a DS record per zone, so a validator walks
the chain from one anchor per top-level domain; reverse zones are anchored on their own.
Production zones are signed where the operator publishes them (docs/internet.md)."""

from __future__ import annotations

import functools
import hashlib
import os
import time
import warnings
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from mailstack.dns import Record
from mailstack.inventory import Inventory
from mailstack.secrets import _making, _pem_key, _write_private, secrets_dir

with warnings.catch_warnings():  # dnspython imports every algorithm, DSA's deprecation included
    warnings.simplefilter("ignore")
    import dns.dnssec
    import dns.name
    import dns.rdataset
    import dns.rdatatype
    import dns.zone

ALGORITHM = "ED25519"  # deterministic: the same zone signed twice is the same text
# Signatures start a day before the current period and end three periods after it: a redeploy
# within a period changes nothing, and a lab left alone validates for at least 4 weeks.
PERIOD = 14 * 86400
CACHE = Path(os.environ.get("MAILSTACK_ZONE_CACHE", "/var/cache/mailstack/zones"))


def zone_key(inv: Inventory, zone: str) -> Path:
    """The zone's private key, generated once."""
    path = secrets_dir(inv) / "dnssec" / f"{zone}.key"
    if not path.exists():
        with _making(inv, f"the DNSSEC key of {zone}"):
            if not path.exists():
                _write_private(path, _pem_key(ed25519.Ed25519PrivateKey.generate()))
    return path


@functools.cache
def _loaded(path: Path, mtime_ns: int):
    key = serialization.load_pem_private_key(path.read_bytes(), None)
    return key, dns.dnssec.make_dnskey(key.public_key(), ALGORITHM, flags=257)  # ZONE | SEP


def _key(inv: Inventory, zone: str):
    path = zone_key(inv, zone)
    return _loaded(path, path.stat().st_mtime_ns)


def trust_anchor(inv: Inventory, zone: str) -> str:
    """The zone's key as unbound's `trust-anchor:` takes it."""
    return f"{zone}. DNSKEY {_key(inv, zone)[1].to_text()}"


def parents(zones: list[str]) -> dict[str, list[str]]:
    """The lab's top-level domains (not themselves a platform zone) and the zones under each."""
    found: dict[str, list[str]] = {}
    for zone in sorted(zones):
        top = zone.rsplit(".", 1)[-1]
        if "." in zone and not zone.endswith(".arpa") and top not in zones:
            found.setdefault(top, []).append(zone)
    return found


def delegations(inv: Inventory, children: list[str], nameserver: str) -> list[Record]:
    """A parent's records for its children: NS, and the DS of each child's key."""
    return [record for child in children for record in (
        Record(child, "NS", f"{nameserver}."),
        Record(child, "DS", dns.dnssec.make_ds(child + ".", _key(inv, child)[1], "SHA256").to_text()))]


def anchors(inv: Inventory, zones: list[str]) -> tuple[str, ...]:
    """What a lab resolver trusts: each top-level domain's key, and each zone no parent vouches for."""
    tops = parents(zones)
    covered = {zone for children in tops.values() for zone in children}
    return tuple(trust_anchor(inv, zone) for zone in sorted({*tops, *(z for z in zones if z not in covered)}))


def validity(now: float | None = None) -> tuple[int, int]:
    """(inception, expiration) of signatures made now."""
    start = int((time.time() if now is None else now) // PERIOD) * PERIOD
    return start - 86400, start + 3 * PERIOD


def signed(inv: Inventory, zone: str, text: str) -> str:
    """The zone file `text` with its key, signatures and NSEC chain; from the control
    machine's cache while the text, the key and the period are the same (signing takes some
    10 ms a zone: 10 s of every deploy for a lab of 1,000 domains)."""
    inception, expiration = validity()
    key, dnskey = _key(inv, zone)
    digest = hashlib.sha256(f"{text}\0{dnskey.to_text()}\0{inception}\0{expiration}".encode()).hexdigest()
    cached = CACHE / f"{zone}.zone"
    try:
        head, _, body = cached.read_text().partition("\n")
        if head == f"; {digest}":
            return body
    except OSError:
        pass
    body = _signed(text, zone, key, dnskey, inception, expiration)
    try:  # public data: a cache that cannot be written costs time, nothing else
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f".{cached.name}.{os.getpid()}")
        partial.write_text(f"; {digest}\n{body}")
        partial.replace(cached)
    except OSError:
        pass
    return body


@functools.lru_cache(maxsize=4096)
def _signed(text: str, zone: str, key, dnskey, inception: int, expiration: int) -> str:
    parsed = dns.zone.from_text(text, origin=zone, relativize=False, check_origin=True)
    apex = parsed.nodes[parsed.origin].rdatasets  # a new serial with new signatures, SOA first
    soa = next(i for i, rdataset in enumerate(apex) if rdataset.rdtype == dns.rdatatype.SOA)
    serial = int(hashlib.sha256(f"{text}{inception}".encode()).hexdigest()[:7], 16)
    apex[soa] = dns.rdataset.from_rdata(apex[soa].ttl, apex[soa][0].replace(serial=serial))
    dns.dnssec.sign_zone(parsed, keys=[(key, dnskey)], inception=inception, expiration=expiration)
    return parsed.to_text(relativize=False, want_origin=True)
