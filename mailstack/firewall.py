"""The host firewall, derived from the inventory: what each host publishes to anyone
(the ports its roles serve), and which internal ports only named peers may reach.

Everything else inbound is refused. Loopback is always allowed, so services on one host
talk freely; an internal port opens to another host only when the topology says that
host uses it."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from mailstack.inventory import Host, Inventory

PUBLIC_PORTS = {  # role -> (port, what it is), open to anyone
    "mx": ((25, "SMTP from the Internet"),),
    "submission": ((587, "submission, STARTTLS"), (465, "submission, implicit TLS")),
    "mailbox": ((143, "IMAP, STARTTLS"), (993, "IMAP, implicit TLS"), (995, "POP3, implicit TLS")),
}

@dataclass(frozen=True, order=True)
class Opening:
    """One inbound port and who may reach it (no sources: anyone)."""

    port: int
    proto: str
    why: str
    sources: tuple[str, ...] = ()

    def rule(self) -> str:
        """The nftables rule; sources are validated addresses from the inventory."""
        match = ""
        if self.sources:
            families = {ipaddress.ip_address(s).version for s in self.sources}
            if len(families) != 1:  # one rule per family keeps nft happy
                raise ValueError("mixed address families in one opening")
            family = "ip" if families == {4} else "ip6"
            match = f"{family} saddr {{ {', '.join(self.sources)} }} "
        return f"{match}{self.proto} dport {self.port} accept comment \"{self.why}\""


def openings(inv: Inventory, host: Host) -> list[Opening]:
    """Every inbound port of `host`, from its roles and the hosts that use its services.
    (A milter or LMTP across hosts is refused by `mailstack check` until issue 13 builds it.)"""
    roles = set(host.roles)
    result = [Opening(host.ssh["port"], "tcp", "SSH (administration)")]
    for role, ports in PUBLIC_PORTS.items():
        if role in roles:
            result += [Opening(port, "tcp", f"{role}: {why}") for port, why in ports]
    hosted = [d for d in inv.domains if host.name in d.mailbox]
    if "mailbox" in roles and any(d.pop3 and d.pop3_starttls for d in hosted):
        result.append(Opening(110, "tcp", "mailbox: POP3, STARTTLS"))
    if "dns" in roles:  # lab only (mailstack check): its zones for every lab host and the tests
        result += [Opening(53, proto, "dns: the lab's zones") for proto in ("udp", "tcp")]
    if host.outside:
        return sorted(result)

    def peers(hosts) -> tuple[str, ...]:
        """Addresses of the other hosts among `hosts` (this host reaches itself on loopback)."""
        return tuple(sorted(h.address for h in hosts if h.name != host.name))

    settings = inv.smime
    mtas = [h for h in inv.hosts if not h.outside and {"mx", "submission"} & set(h.roles)]
    gateway = [h for h in inv.hosts_with("smime") if not h.outside][:1]  # the one Postfix uses
    if "smime" in roles and peers(mtas):
        result += [Opening(port, "tcp", "smime: the S/MIME gateway for Postfix", peers(mtas))
                   for port in (settings["port"], settings["submission_port"])]
    if host in mtas and peers(gateway):
        result += [Opening(port, "tcp", "Postfix: mail back from the S/MIME gateway", peers(gateway))
                   for port in (settings["reinject_port"], settings["reinject_outbound_port"])]
    return sorted(result)
