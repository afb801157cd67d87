"""The host firewall, computed from the inventory: public ports by role, internal ports
only for the hosts that use them."""

from unitdata import ROOT

from mailstack.firewall import openings
from mailstack.inventory import load


def rules(inventory: str) -> dict[str, set[str]]:
    inv = load(ROOT / "inventories" / inventory)
    return {h.name: {o.rule().split(" accept")[0] for o in openings(inv, h)} for h in inv.hosts}


def test_a_gateway_on_its_own_host_is_reachable_from_the_mtas_only():
    found = rules("multi-host.example.yml")
    mtas = "ip saddr { 198.51.100.11, 198.51.100.12 }"
    assert found["smime"] == {"tcp dport 22", f"{mtas} tcp dport 10025", f"{mtas} tcp dport 10028"}
    for mta in ("mail1", "mail2"):
        assert {"ip saddr { 10.20.0.25 } tcp dport 10026", "ip saddr { 10.20.0.25 } tcp dport 10027"} <= found[mta]
        assert not any(p in r for r in found[mta] for p in ("6379", "11332", "11333", "11334", "10025"))


def test_pop3_on_110_opens_only_where_a_hosted_domain_offers_it():
    found = rules("multi-host.example.yml")
    assert "tcp dport 110" in found["mail2"]  # clinic.example: pop3_starttls
    assert "tcp dport 110" not in found["mail1"]


def test_single_host_lab_publishes_nothing_internal():
    found = rules("lab.yml")
    assert found["mail"] == {f"tcp dport {p}" for p in (22, 25, 110, 143, 465, 587, 993, 995)}
    assert {"tcp dport 53", "udp dport 53"} <= found["ext"]
