"""DNS records of the platform: what to publish, and the zones the lab serves."""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from mailstack.dkim import key_name, key_record, selectors
from mailstack.inventory import Domain, Host, Inventory

TTL = 300


@dataclass(frozen=True, order=True)
class Record:
    name: str  # fully qualified, without the final dot
    type: str
    value: str

    def line(self) -> str:
        value = self.value
        if self.type == "TXT":  # split into 255-byte strings
            value = " ".join(f'"{value[i:i + 255]}"' for i in range(0, len(value), 255))
        return f"{self.name}.\t{TTL}\tIN\t{self.type}\t{value}"


def address_records(name: str, hosts: list[Host]) -> list[Record]:
    return [Record(name, "A" if ipaddress.ip_address(h.address).version == 4 else "AAAA", h.address)
            for h in hosts]


def imap_name(domain: Domain) -> str:
    return f"imap.{domain.name}"


def smtp_name(domain: Domain) -> str:
    return f"smtp.{domain.name}"


def webmail_name(domain: Domain) -> str:
    return f"webmail.{domain.name}"


def reading_hosts(inv: Inventory, domain: Domain) -> list[Host]:
    """Where the domain's users read mail: the platform's proxies, else its mailbox hosts."""
    proxies = [h for h in inv.hosts_with("proxy") if not h.outside]
    return proxies if proxies and domain in inv.own_domains() else [inv.host(name) for name in domain.mailbox]


def service_names(inv: Inventory, host: Host) -> list[str]:
    """Every name clients use to reach `host`: its FQDN first, then service names."""
    names = [host.fqdn]
    for domain in inv.domains:
        if host in reading_hosts(inv, domain):
            names.append(imap_name(domain))
        if host.name in domain.submission:
            names.append(smtp_name(domain))
    return names


def _spf(inv: Inventory, domain: Domain) -> str:
    senders = {inv.host(name).address for name in (*domain.mx, *domain.submission)}
    parts = ["v=spf1"]
    parts += [f"ip{ipaddress.ip_address(a).version}:{a}" for a in sorted(senders)]
    parts += [f"ip{ipaddress.ip_network(a, strict=False).version}:{a}" for a in domain.spf["ip"]]
    parts += [f"include:{i}" for i in domain.spf["include"]]
    parts.append(domain.spf["all"])
    return " ".join(parts)


def _dmarc(domain: Domain) -> str:
    """The domain's DMARC record as DMARCbis writes it: its stage, testing mode (t=y, no pct),
    the policy for subdomains that do not exist (np=), psd=y for a public suffix, report addresses."""
    dmarc = domain.dmarc
    tags = [f"p={dmarc['policy']}", f"np={dmarc['nonexistent']}", *(["t=y"] if dmarc["testing"] else []),
            *(["psd=y"] if dmarc["psd"] else []),
            *([f"rua={','.join(f'mailto:{a}' for a in dmarc['rua'])}"] if dmarc["rua"] else [])]
    return "; ".join(["v=DMARC1", *tags])


def domain_records(inv: Inventory, domain: Domain) -> list[Record]:
    d = domain.name
    records = [Record(d, "MX", f"{10 * (i + 1)} {inv.host(mx).fqdn}.")
               for i, mx in enumerate(domain.mx)]
    records.append(Record(d, "TXT", _spf(inv, domain)))
    records.append(Record(f"_dmarc.{d}", "TXT", _dmarc(domain)))
    records.append(Record(f"_smtp._tls.{d}", "TXT",
                          f"v=TLSRPTv1; rua=mailto:{inv.platform['postmaster']}"))
    if domain.dkim["enabled"]:
        records += [Record(key_name(domain, s), "TXT", key_record(inv, domain, s)) for s in selectors(domain)]
    records += address_records(imap_name(domain), reading_hosts(inv, domain))
    if domain.imap:
        records.append(Record(f"_imaps._tcp.{d}", "SRV", f"0 1 993 {imap_name(domain)}."))
    if domain.pop3:
        records.append(Record(f"_pop3s._tcp.{d}", "SRV", f"0 1 995 {imap_name(domain)}."))
    if domain.submission:
        records += address_records(smtp_name(domain), [inv.host(n) for n in domain.submission])
        records.append(Record(f"_submissions._tcp.{d}", "SRV", f"0 1 465 {smtp_name(domain)}."))
        records.append(Record(f"_submission._tcp.{d}", "SRV", f"0 1 587 {smtp_name(domain)}."))
    return records


def reverse_name(address: str) -> tuple[str, str]:
    """(zone, name) of an address's PTR record: /24 zones for IPv4, /64 for IPv6."""
    name = ipaddress.ip_address(address).reverse_pointer
    labels = name.split(".")
    return ".".join(labels[1:] if len(labels) == 6 else labels[16:]), name


def zones(inv: Inventory, added: tuple[Record, ...] = ()) -> dict[str, list[Record]]:
    """Records grouped by zone: the platform domain, every mail domain, and the reverse
    zones of the hosts' addresses (publish those, or ask the network's owner to); `added`:
    the records components add (extension point dns.records), each in one of those zones."""
    result: dict[str, list[Record]] = {inv.platform["domain"]: []}
    for domain in inv.domains:
        result.setdefault(domain.name, []).extend(domain_records(inv, domain))
    for host in inv.hosts:
        zone = _zone_of(host.fqdn, result)
        if zone:
            result[zone] += address_records(host.fqdn, [host])
    for record in added:
        zone = _zone_of(record.name, result)
        if zone is None:
            raise ValueError(f"DNS record {record.name} {record.type} is in no zone of the platform")
        result[zone].append(record)
    for host in inv.hosts:
        zone, name = reverse_name(host.address)
        result.setdefault(zone, []).append(Record(name, "PTR", f"{host.fqdn}."))
    return {zone: sorted(set(records)) for zone, records in result.items()}


def _zone_of(name: str, zones_: dict) -> str | None:
    candidates = [z for z in zones_ if name == z or name.endswith("." + z)]
    return max(candidates, key=len) if candidates else None


def zone_snippet(inv: Inventory, added: tuple[Record, ...] = ()) -> str:
    out = [f"; DNS records for platform {inv.platform['name']} (generated by mailstack dns)"]
    for zone, records in zones(inv, added).items():
        out.append(f"\n; zone {zone}")
        out += [r.line() for r in records]
    return "\n".join(out) + "\n"


def zone_file(inv: Inventory, zone: str, records: list[Record], nameserver: Host) -> str:
    """A complete zone for an authoritative server; the serial follows the content."""
    body = "\n".join(r.line() for r in records)
    serial = int(hashlib.sha256(body.encode()).hexdigest()[:7], 16)
    head = (f"$ORIGIN {zone}.\n$TTL {TTL}\n"
            f"@\tIN\tSOA\t{nameserver.fqdn}. hostmaster.{zone}. {serial} 3600 600 604800 300\n"
            f"@\tIN\tNS\t{nameserver.fqdn}.\n")
    return head + body + "\n"
