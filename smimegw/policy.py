"""Who signs, who is encrypted to, what is decrypted and what is refused: from the
rendered inventory and the listener a message arrived on, never from its addresses alone.

The gateway has two listeners. Mail that Postfix took from an authenticated user
(587/465, sender already bound to the login) arrives on the submission listener; mail
from outside arrives on the inbound listener. Only submission mail is ever signed,
and decryption only ever happens for a local recipient, with that recipient's own
domain key."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from pathlib import Path

STRENGTH = {"never": 0, "opportunistic": 1, "required": 2}


@dataclass(frozen=True)
class Domain:
    sign: str = "never"
    encrypt: str = "never"
    cert: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class Plan:
    """What one recipient's copy needs."""

    local: bool
    sign_as: str | None = None
    encrypt_to: str | None = None
    decrypt_for: str | None = None  # a local recipient's domain, whose own key may open the mail
    refuse: str | None = None  # SMTP reply when this copy must not be sent


@dataclass(frozen=True)
class Config:
    hostname: str
    listen: str
    port: int  # inbound: mail from outside, handed over by the MX
    trust: str
    returns: dict[str, str]  # client address -> name on its certificate: mail goes back where it came from
    inbound_port: int
    outbound_port: int
    reinject_ca: str | None
    submission_port: int | None = None  # mail of authenticated users, handed over by submission
    tls_cert: str | None = None
    tls_key: str | None = None
    clients: tuple[str, ...] = ()
    on_missing_certificate: str = "bounce"
    max_message_size: int = 64 * 1024 * 1024
    max_mime_depth: int = 16
    max_mime_parts: int = 500
    openssl_timeout: float = 30.0
    # inbound mail the gateway decrypted returns here, where Postfix has it scanned (none: it
    # is never returned, only deferred: the content nobody scanned never reaches a mailbox)
    decrypted_port: int | None = None
    tenants: dict[str, Domain] = field(default_factory=dict)
    partners: dict[str, Domain] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> Config:
        raw = json.loads(Path(path).read_text())
        raw["tenants"] = {d: Domain(**v) for d, v in raw.get("tenants", {}).items()}
        raw["partners"] = {d: Domain(**v) for d, v in raw.get("partners", {}).items()}
        raw["clients"] = tuple(raw.get("clients", ()))
        config = cls(**raw)
        config.check()
        return config

    def check(self) -> None:
        """Plaintext only when both ends are on loopback, and only when asked for."""
        if self.tls_cert is None:
            for address in (self.listen, *self.returns):
                if not ipaddress.ip_address(address).is_loopback:
                    raise ValueError(f"plaintext is allowed on loopback only, not on {address}")
        if self.on_missing_certificate not in ("bounce", "defer"):
            raise ValueError("on_missing_certificate must be 'bounce' or 'defer'")
        if self.submission_port == self.port:
            raise ValueError("the submission and inbound listeners need different ports")

    def files(self) -> list[str]:
        """Every file the gateway reads: certificates, keys, trust store."""
        paths = [self.trust, self.tls_cert, self.tls_key, self.reinject_ca]
        for domain in (*self.tenants.values(), *self.partners.values()):
            paths += [domain.cert, domain.key]
        return [p for p in paths if p]

    def plan(self, sender: str, recipient: str, submitted: bool) -> Plan:
        """The copy for `recipient`. `submitted`: the mail came in on the submission
        listener, so Postfix has bound `sender` to the user's login."""
        domain = recipient.rpartition("@")[2].lower()
        recipient_tenant = self.tenants.get(domain)
        if recipient_tenant is not None:
            sign_as = self._signer(sender, Domain()) if submitted else None
            opener = domain if recipient_tenant.cert and recipient_tenant.key else None
            return Plan(local=True, sign_as=sign_as, decrypt_for=opener)
        if not submitted:  # forwarded outside mail: not ours to sign, open or encrypt
            return Plan(local=False)
        partner = self.partners.get(domain, Domain())
        tenant = self.tenants.get(sender.rpartition("@")[2].lower())
        need = max(STRENGTH[tenant.encrypt if tenant else "never"], STRENGTH[partner.encrypt])
        cert = partner.cert if partner.cert and Path(partner.cert).is_file() else None
        if need == STRENGTH["required"] and cert is None:
            code = "550 5.7.1" if self.on_missing_certificate == "bounce" else "450 4.7.1"
            return Plan(local=False, refuse=f"{code} <{recipient}>: encryption to {domain} is "
                        "required but no certificate for it is known; not sent in clear")
        return Plan(local=False, sign_as=self._signer(sender, partner), encrypt_to=cert if need else None)

    def _signer(self, sender: str, partner: Domain) -> str | None:
        """The tenant whose certificate signs submitted mail of `sender`, if any."""
        sender_domain = sender.rpartition("@")[2].lower()
        tenant = self.tenants.get(sender_domain)
        if tenant and tenant.cert and "always" in (tenant.sign, partner.sign):
            return sender_domain
        return None
