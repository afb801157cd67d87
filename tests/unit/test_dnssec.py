"""DNSSEC of the lab's zones and the TLSA records of DANE (issue 25): signatures that a
validator accepts with the key the resolvers trust, that do not change within a period (a
redeploy changes nothing) and do change after it; TLSA records that pin the host's key and
survive a certificate renewal."""

import dns.dnssec
import dns.name
import dns.rdatatype
import dns.zone
from unitdata import VALID

import deploys  # noqa: F401  (hands the components in)
from deploys.postfix import tlsa_records
from mailstack import dnssec
from mailstack.dns import zone_file, zones
from mailstack.inventory import check_text
from mailstack.secrets import host_certificate
from mailstack.tls import key_digest


def inventory(tmp_path, text=VALID):
    text = text.replace("  postmaster: postmaster@one.example",
                        f"  postmaster: postmaster@one.example\n  secrets_dir: {tmp_path}")
    return check_text(text, "inv.yml")


def signed_zone(inv, zone="one.example", now=None):
    text = zone_file(inv, zone, zones(inv)[zone], inv.host("mx1"))
    inception, expiration = dnssec.validity(now)
    return dnssec._signed(text, zone, *dnssec._key(inv, zone), inception, expiration)


def test_a_signed_zone_validates_with_the_anchor_the_resolvers_get(tmp_path, monkeypatch):
    inv = inventory(tmp_path)
    parsed = dns.zone.from_text(signed_zone(inv), origin="one.example", relativize=False)
    anchor = dns.rdata.from_text("IN", "DNSKEY", dnssec.trust_anchor(inv, "one.example").split(" DNSKEY ", 1)[1])
    apex = dns.name.from_text("one.example")
    keys = parsed.get_rrset(apex, "DNSKEY")
    assert anchor in keys
    for name, node in parsed.nodes.items():
        for rdataset in node.rdatasets:
            if rdataset.rdtype == dns.rdatatype.RRSIG:
                continue
            rrset = parsed.get_rrset(name, rdataset.rdtype)
            sig = parsed.get_rrset(name, dns.rdatatype.RRSIG, rdataset.rdtype)
            dns.dnssec.validate(rrset, sig, {apex: keys}, now=dnssec.validity()[0] + 2 * 86400)
    assert parsed.get_rrset(apex, "NSEC") is not None  # denial of existence is signed too


def test_signatures_are_the_same_within_a_period_and_renewed_after_it(tmp_path):
    inv = inventory(tmp_path)
    start = dnssec.validity()[0] + 86400
    first, later = signed_zone(inv, now=start), signed_zone(inv, now=start + dnssec.PERIOD - 60)
    assert first == later  # a redeploy in the same period rewrites nothing
    renewed = signed_zone(inv, now=start + dnssec.PERIOD)
    assert renewed != first
    serial = [line.split()[6] for text in (first, renewed) for line in text.splitlines() if " SOA " in line]
    assert serial[0] != serial[1]  # a new serial goes with new signatures
    inception, expiration = dnssec.validity(start)
    assert expiration - start >= 4 * 7 * 86400 - dnssec.PERIOD and inception < start


def test_tlsa_records_pin_the_host_key_at_its_mx_and_submission_names(tmp_path):
    inv = inventory(tmp_path)
    records = tlsa_records(inv, inv.host("mx1"))
    pin = f"3 1 1 {key_digest(inv, inv.host('mx1'))}"
    assert {(r.name, r.value) for r in records} == {
        ("_25._tcp.mx1.t.example", pin),
        *((f"_{port}._tcp.smtp.{d}", pin) for d in ("one.example", "two.example") for port in (465, 587))}
    assert tlsa_records(inv, inv.host("other")) == []  # neither MX nor submission


def test_a_renewed_certificate_keeps_the_key_its_tlsa_records_pin(tmp_path):
    inv = inventory(tmp_path)
    before = key_digest(inv, inv.host("mx1"))
    cert, key = host_certificate(inv, "mx1", ["mx1.t.example"])
    first = cert.read_bytes()
    cert.unlink()  # as when it nears its end: the next run issues a new one
    host_certificate(inv, "mx1", ["mx1.t.example"])
    assert cert.read_bytes() != first
    assert key_digest(inv, inv.host("mx1")) == before


def test_the_lab_has_parents_that_vouch_for_each_zone(tmp_path):
    inv = inventory(tmp_path)
    names = sorted(zones(inv))
    assert dnssec.parents(names) == {"example": ["one.example", "t.example", "two.example"]}
    anchors = dnssec.anchors(inv, names)
    assert [a.split(".", 1)[0] for a in anchors] == ["2", "example"]  # the reverse zone, the parent
    records = dnssec.delegations(inv, ["one.example"], "ns.t.example")
    assert [(r.name, r.type) for r in records] == [("one.example", "NS"), ("one.example", "DS")]
    key = dnssec._key(inv, "one.example")[1]
    assert records[1].value == dns.dnssec.make_ds("one.example.", key, "SHA256").to_text()


def test_a_signed_zone_comes_from_the_cache_until_its_text_key_or_period_changes(tmp_path, monkeypatch):
    inv = inventory(tmp_path / "secrets")
    monkeypatch.setattr(dnssec, "CACHE", tmp_path / "zones")
    text = zone_file(inv, "one.example", zones(inv)["one.example"], inv.host("mx1"))
    first = dnssec.signed(inv, "one.example", text)
    calls = []
    monkeypatch.setattr(dnssec, "_signed", lambda *args: calls.append(args) or "re-signed")
    assert dnssec.signed(inv, "one.example", text) == first and calls == []
    assert dnssec.signed(inv, "one.example", text + "x.one.example. 300 IN A 192.0.2.9\n") == "re-signed"
    later = dnssec.validity()[0] + 86400 + dnssec.PERIOD
    monkeypatch.setattr(dnssec.time, "time", lambda: later)
    assert dnssec.signed(inv, "one.example", text) == "re-signed" and len(calls) == 2
