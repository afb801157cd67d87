"""`mailstack dns`: the records a platform must publish, derived from the inventory."""

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from unitdata import VALID

from mailstack.dns import service_names, zone_file, zones
from mailstack.inventory import InventoryInvalid, check_text
from mailstack.secrets import dkim_key


def inventory(tmp_path, text=VALID):
    text = text.replace("  postmaster: postmaster@one.example",
                        f"  postmaster: postmaster@one.example\n  secrets_dir: {tmp_path}")
    return check_text(text, "inv.yml")


def by_name(records, name, type_):
    return [r.value for r in records if r.name == name and r.type == type_]


def test_records_follow_the_inventory(tmp_path):
    inv = inventory(tmp_path, VALID.replace("      policy: none", "      policy: quarantine\n      rua: [ann@one.example]"))
    one = zones(inv)["one.example"]
    assert by_name(one, "one.example", "MX") == ["10 mx1.t.example."]
    assert by_name(one, "one.example", "TXT") == ["v=spf1 ip4:192.0.2.1 ~all"]
    assert by_name(one, "_dmarc.one.example", "TXT") == [
        "v=DMARC1; p=quarantine; np=reject; rua=mailto:ann@one.example"]
    assert by_name(one, "imap.one.example", "A") == ["192.0.2.1"]
    assert by_name(one, "_submissions._tcp.one.example", "SRV") == ["0 1 465 smtp.one.example."]
    assert by_name(zones(inv)["t.example"], "mx1.t.example", "A") == ["192.0.2.1"]
    assert by_name(zones(inv)["2.0.192.in-addr.arpa"], "1.2.0.192.in-addr.arpa", "PTR") == ["mx1.t.example."]


def test_dmarc_records_follow_dmarcbis(tmp_path):
    """Issue 26: no pct (DMARCbis removed it); a stage in testing mode is t=y; subdomains that do
    not exist get their own policy (np=); a public suffix says so (psd=y)."""
    inv = inventory(tmp_path, VALID.replace("      policy: none", "      policy: reject\n      testing: true\n"
                                                                     "      nonexistent: quarantine\n      psd: true"))
    (record,) = by_name(zones(inv)["one.example"], "_dmarc.one.example", "TXT")
    assert record == "v=DMARC1; p=reject; np=quarantine; t=y; psd=y" and "pct=" not in record


def test_the_retired_percent_is_refused_with_what_replaced_it(tmp_path):
    with pytest.raises(InventoryInvalid) as refused:
        inventory(tmp_path, VALID.replace("      policy: none", "      policy: none\n      percent: 25"))
    assert "dmarc.percent: 'percent' was DMARC's pct, which DMARCbis (RFC 9989) removed" in str(refused.value)
    assert "testing: true" in str(refused.value)


def test_dkim_record_publishes_the_generated_key(tmp_path):
    inv = inventory(tmp_path)
    (record,) = by_name(zones(inv)["one.example"], "mail._domainkey.one.example", "TXT")
    key = serialization.load_pem_private_key(dkim_key(inv, "one.example", "mail", 2048).read_bytes(), None)
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    assert record == f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"
    assert (tmp_path / "t" / "dkim" / "one.example.mail.key").stat().st_mode & 0o077 == 0
    # generated once: a second look gives the same record
    assert by_name(zones(inv)["one.example"], "mail._domainkey.one.example", "TXT") == [record]


def test_pop3_off_means_no_pop3_srv(tmp_path):
    inv = inventory(tmp_path, VALID.replace("    tenant: second\n", "    tenant: second\n    pop3: false\n"))
    assert by_name(zones(inv)["two.example"], "_pop3s._tcp.two.example", "SRV") == []
    assert by_name(zones(inv)["one.example"], "_pop3s._tcp.one.example", "SRV") != []


def test_long_txt_values_are_split_into_255_byte_strings(tmp_path):
    inv = inventory(tmp_path)
    line = next(r.line() for r in zones(inv)["one.example"] if r.name.startswith("mail._domainkey"))
    strings = line.split("\t")[-1].split('" "')
    assert len(strings) > 1 and all(len(s.strip('"')) <= 255 for s in strings)


def test_zone_file_serial_follows_content(tmp_path):
    inv = inventory(tmp_path)
    records = zones(inv)["one.example"]
    ns = inv.host("other")
    first = zone_file(inv, "one.example", records, ns)
    assert first == zone_file(inv, "one.example", records, ns)
    assert first != zone_file(inv, "one.example", records[:-1], ns)
    assert "@\tIN\tNS\tother.t.example." in first


def test_certificate_names_cover_the_services_of_the_host(tmp_path):
    inv = inventory(tmp_path)
    assert service_names(inv, inv.host("mx1")) == [
        "mx1.t.example", "imap.one.example", "smtp.one.example", "imap.two.example", "smtp.two.example"]
    assert service_names(inv, inv.host("other")) == ["other.t.example"]
