"""MX hosts, unless `srs.enabled` is false: postsrsd (Debian) rewrites the envelope sender of
mail an alias forwards off the platform into an SRS address of the platform's SRS domain, so
the receiver's SPF check passes, and turns a bounce to such an address back into the original
sender. The address carries a keyed hash (one secret for every MX host, from the secrets
directory): a made-up SRS address does not reverse and is refused like an unknown user.

Postfix rewrites every foreign envelope sender as mail enters the queue (cleanup); LMTP
delivery here reverses it again, so mail delivered on the platform keeps its sender and only
mail that leaves over SMTP carries the SRS address. The platform's own domains are never
rewritten. All of it reaches Postfix through the extension point `postfix.main`.
"""

from __future__ import annotations

from mailstack.component import Component, File, Service, schema_fragment
from mailstack.inventory.source import Positions, Problem
from mailstack.plan import HostPlan, own_domains
from mailstack.secrets import password

FORWARD_PORT, REVERSE_PORT = 10001, 10002
SECRET = "/etc/postsrsd.secret"


def srs_domain(inv) -> str:
    return inv.srs.get("domain") or own_domains(inv)[0].name


def postfix_parameters(inv, host) -> dict[str, str]:
    """Foreign envelope senders rewritten on the way into the queue, SRS recipients reversed;
    LMTP delivery reverses the sender again (mail delivered here is never rewritten)."""
    forward, reverse = f"tcp:127.0.0.1:{FORWARD_PORT}", f"tcp:127.0.0.1:{REVERSE_PORT}"
    return {"sender_canonical_maps": forward, "sender_canonical_classes": "envelope_sender",
            "recipient_canonical_maps": reverse, "recipient_canonical_classes": "envelope_recipient",
            "lmtp_generic_maps": reverse}


def configure(plan: HostPlan) -> list[Service]:
    context = {"domain": srs_domain(plan.inv), "excluded": ",".join(d.name for d in plan.own_domains),
               "secret": SECRET, "forward_port": FORWARD_PORT, "reverse_port": REVERSE_PORT}
    return [Service("postsrsd", (
        File.template("/etc/default/postsrsd", "srs/postsrsd.default.j2", context),
        File.text(SECRET, password(plan.inv, "srs"), mode="0600", secret=True),
    ), check="sh -n /etc/default/postsrsd")]


def rules(data: dict, pos: Positions) -> list[Problem]:
    """The SRS domain is one of the platform's own domains (its MX and SPF name the MX hosts)."""
    domain = data["srs"].get("domain")
    outside = {h["name"] for h in data["hosts"] if h.get("outside")}
    own = {d["name"] for d in data["domains"] if not set(d.get("mx", ())) <= outside}
    if not data["srs"]["enabled"] or domain is None or domain in own:
        return []
    return [pos.problem(("srs", "domain"), f"{domain} is not a domain of the platform: SRS addresses must "
                        "come back to its MX hosts (name one of `domains` whose MX is a platform host)")]


COMPONENT = Component(
    name="srs",
    schema=schema_fragment(__file__),
    roles=frozenset({"mx"}),
    platform_only=True,
    packages=("postsrsd",),
    units=("postsrsd",),
    local=(("127.0.0.1", FORWARD_PORT), ("127.0.0.1", REVERSE_PORT)),
    loopback_clients=lambda plan: {FORWARD_PORT: ("postfix",), REVERSE_PORT: ("postfix",)},
    section="srs",
    rules=(rules,),
    enabled=lambda inv: inv.srs["enabled"],
    needed=lambda inv, host: bool(own_domains(inv)),  # no platform domain: nothing to make SRS addresses in
    adds={"postfix.main": postfix_parameters},
    configure=configure,
)
