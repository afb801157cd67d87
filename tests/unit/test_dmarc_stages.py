"""`mailstack dmarc`: the impact of a domain's next stage from the aggregate reports, and the
inventory edit that advances it (byte for byte elsewhere, refused when it would be invalid)."""

import pytest
from unitdata import ROOT, VALID

from mailstack import dmarc
from mailstack.inventory import InventoryInvalid, check_text
from mailstack.inventory.source import load_yaml

LAB = (ROOT / "inventories" / "lab.yml").read_text()


def store(*rows):
    return {"reports": [{"kind": "dmarc", "reporter": "big.example", "id": "1", "domain": "one.example",
                         "begin": "1", "end": "2"}],
            "tls": [], "dmarc": [{"reporter": "big.example", "id": "1", "domain": "one.example", "source": source,
                                  "count": count, "disposition": "none", "dkim": dkim, "spf": spf,
                                  "header_from": "one.example"} for source, count, dkim, spf in rows]}


def test_failing_sources_are_named_and_explained_only_by_the_inventory():
    inv = check_text(VALID, "inv.yml")
    rows = [("192.0.2.1", 40, "pass", "pass"), ("198.51.100.7", 3, "fail", "fail"), ("203.0.113.5", 2, "pass", "fail")]
    report = dmarc.impact(inv, inv.domain("one.example"), store(*rows))
    assert report["next"] == "quarantine" and report["reports"] == 1
    assert [(s["address"], s["passes"], s["platform"]) for s in report["sources"]] == [
        ("192.0.2.1", True, True), ("198.51.100.7", False, False), ("203.0.113.5", True, False)]
    assert report["unexplained"] == ["198.51.100.7"]
    assert "FAILS: quarantine would hit it" in dmarc.text(report)
    fixed = check_text(VALID.replace("      policy: none\n", "      policy: none\n    spf: {ip: [198.51.100.0/24]}\n"),
                       "inv.yml")
    assert dmarc.impact(fixed, fixed.domain("one.example"), store(*rows))["unexplained"] == []


@pytest.mark.parametrize("text,domain,stage", [
    (VALID, "one.example", "quarantine"),  # a block mapping with the key
    (LAB, "example.test", "reject"),  # a flow mapping: dmarc: {policy: quarantine, rua: [...]}
    (VALID, "two.example", "quarantine"),  # no dmarc at all
    (VALID.replace("    mx: [mx1]\nusers:", "    mx: [mx1]\n    dmarc: {rua: [ann@one.example]}\nusers:"),
     "two.example", "quarantine"),  # a flow mapping without the key
    (VALID.replace("    mx: [mx1]\nusers:", "    mx: [mx1]\n    dmarc:\n      rua: [ann@one.example]\nusers:"),
     "two.example", "quarantine"),  # a block mapping without the key
])
def test_advancing_edits_one_place_and_records_why(text, domain, stage):
    assert text.count("dmarc") >= VALID.count("dmarc")
    result = dmarc.advanced(text, "inv.yml", domain, stage, "mailstack dmarc advance: test")
    inv = check_text(result, "inv.yml")
    assert inv.domain(domain).dmarc["policy"] == stage
    assert "# mailstack dmarc advance: test\n" in result
    others = {d.name: d.dmarc for d in check_text(text, "inv.yml").domains if d.name != domain}
    assert {d.name: d.dmarc for d in inv.domains if d.name != domain} == others
    added = [line for line in result.splitlines() if line not in text.splitlines()]
    assert len(added) <= 3, added  # the comment, the changed line (and a new dmarc line)
    assert load_yaml(result, "inv.yml")[2] == []


@pytest.mark.parametrize("settings,why", [
    ("{enabled: true}", "name the reports' sender"),
    ("{enabled: true, sender: someone@elsewhere.example}", "is no user or alias of the inventory"),
])
def test_reports_leave_only_from_an_address_of_the_platform(settings, why):
    with pytest.raises(InventoryInvalid, match=why):
        check_text(VALID + f"dmarc_reports: {settings}\n", "inv.yml")


def test_reports_need_a_filter_host_that_runs_postfix():
    separate = VALID.replace("roles: [mx, submission, mailbox, filter]", "roles: [mx, submission, mailbox]").replace(
        "roles: [smime]", "roles: [smime, filter]")
    check_text(separate, "inv.yml")  # fine while the reports are off
    with pytest.raises(InventoryInvalid, match="no filter host runs Postfix"):
        check_text(separate + "dmarc_reports: {enabled: true, sender: ann@one.example}\n", "inv.yml")
