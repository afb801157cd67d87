"""Platform hosts that send mail out (`mx`, `submission`): the TLS policy Postfix follows
for each receiving domain. DANE where the domain publishes DNSSEC-validated TLSA records
(Postfix's own `dane` level, main.cf); else, with `outbound_tls.mta_sts`, the domain's
MTA-STS policy from Debian's postfix-mta-sts-resolver (`enforce`: only its MX names, with a
certificate valid for the name, or the mail waits); else TLS when offered.

postfix-mta-sts-resolver alone would let a domain's MTA-STS policy replace its DANE, which
RFC 8461 forbids (a weaker check, fetched over a channel an attacker can block): a small
socketmap of mailstack's own (templates/mailstack-dane-first.py) answers first, `dane` for a
domain with validated TLSA, so the MTA-STS map is asked only for the others; when DNS fails
it answers TEMP and the mail waits. Both maps reach Postfix through `postfix.main`.
"""

from __future__ import annotations

from mailstack.component import Component, File, Service, schema_fragment
from mailstack.plan import HostPlan

MTA_STS_PORT, DANE_FIRST_PORT = 8461, 8462
DANE_FIRST = "mailstack-dane-first"
PROGRAM = f"/usr/local/sbin/{DANE_FIRST}"


def postfix_parameters(inv, host) -> dict[str, str]:
    """DANE's map first; the first map that knows a domain decides its policy."""
    maps = [f"socketmap:inet:127.0.0.1:{DANE_FIRST_PORT}:dane"]
    if inv.outbound_tls["mta_sts"]:
        maps.append(f"socketmap:inet:127.0.0.1:{MTA_STS_PORT}:postfix")
    return {"smtp_tls_policy_maps": ", ".join(maps)}


def configure(plan: HostPlan) -> list[Service]:
    """Both daemons run; Postfix asks the MTA-STS one only with `outbound_tls.mta_sts`."""
    return [
        Service(DANE_FIRST, (
            File.template(PROGRAM, "outbound_tls/mailstack-dane-first.py", {}, mode="0755"),
            File.template(f"/etc/systemd/system/{DANE_FIRST}.service", f"outbound_tls/{DANE_FIRST}.service.j2",
                          {"program": PROGRAM, "port": DANE_FIRST_PORT}),
        ), check=f"python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read())' {PROGRAM}"),
        Service("postfix-mta-sts-resolver", (
            File.template("/etc/mta-sts-daemon.yml", "outbound_tls/mta-sts-daemon.yml.j2", {"port": MTA_STS_PORT}),
        ), check="python3 -c 'import yaml; yaml.safe_load(open(\"/etc/mta-sts-daemon.yml\"))'"),
    ]


COMPONENT = Component(
    name="outbound_tls",
    schema=schema_fragment(__file__),
    roles=frozenset({"mx", "submission"}),
    platform_only=True,
    packages=("postfix-mta-sts-resolver", "python3-dnspython"),
    units=(DANE_FIRST, "postfix-mta-sts-resolver"),
    local=(("127.0.0.1", DANE_FIRST_PORT), ("127.0.0.1", MTA_STS_PORT)),
    loopback_clients=lambda plan: {DANE_FIRST_PORT: ("postfix",), MTA_STS_PORT: ("postfix",)},
    section="outbound_tls",
    adds={"postfix.main": postfix_parameters},
    configure=configure,
)
