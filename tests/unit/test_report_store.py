"""The report store (deploys/reports/): what a DMARC aggregate and a TLS-RPT report become,
what is refused (another domain, a bomb, a document that is no report), and the summary."""

import gzip
import importlib.util
import io
import json
import sqlite3
import zipfile
from email.message import EmailMessage

import pytest
from unitdata import ROOT

from mailstack.reports import merged, summary

spec = importlib.util.spec_from_file_location("reports_tool", ROOT / "deploys/reports/templates/mailstack-reports.py")
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)
DOMAINS = {"one.example"}


def store() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.executescript(tool.SCHEMA)
    return db


def tls(domain="one.example", report_id="r1") -> bytes:
    return json.dumps({
        "organization-name": "Big Mail", "report-id": report_id,
        "date-range": {"start-datetime": "2026-12-01T00:00:00Z", "end-datetime": "2026-12-01T23:59:59Z"},
        "policies": [{"policy": {"policy-type": "tlsa", "policy-domain": domain},
                      "summary": {"total-successful-session-count": 9, "total-failure-session-count": 2},
                      "failure-details": [{"result-type": "starttls-not-supported", "sending-mta-ip": "198.51.100.1",
                                           "receiving-mx-hostname": "mx1.t.example", "failed-session-count": 2}]}],
    }).encode()


def dmarc(domain="one.example", report_id="d1") -> bytes:
    return (f"<feedback><report_metadata><org_name>big.example</org_name><report_id>{report_id}</report_id>"
            "<date_range><begin>1</begin><end>2</end></date_range></report_metadata>"
            f"<policy_published><domain>{domain}</domain></policy_published>"
            "<record><row><source_ip>198.51.100.2</source_ip><count>4</count><policy_evaluated>"
            "<disposition>none</disposition><dkim>pass</dkim><spf>fail</spf></policy_evaluated></row>"
            f"<identifiers><header_from>{domain}</header_from></identifiers></record></feedback>").encode()


def test_reports_become_rows_once():
    db = store()
    assert "2 rows" in tool.keep(db, tls(), DOMAINS)
    assert "kept already" in tool.keep(db, tls(), DOMAINS)
    assert "1 rows" in tool.keep(db, dmarc(), DOMAINS)
    kept = tool.show(db)
    assert [(r["result"], r["sessions"]) for r in kept["tls"]] == [("starttls-not-supported", 2), ("success", 9)]
    assert [(r["source"], r["count"], r["spf"]) for r in kept["dmarc"]] == [("198.51.100.2", 4, "fail")]
    text = summary(merged([kept, kept]))  # the same report from two hosts counts once
    assert "TLS: 9 sessions succeeded, 2 failed" in text
    assert "4  198.51.100.2  pass  fail  none" in text


@pytest.mark.parametrize("document,why", [
    (tls(domain="victim.example"), "about no domain of the platform"),
    (dmarc(domain="victim.example"), "not a domain of the platform"),
    (b"<html><body>hello</body></html>", "not DMARC feedback"),
])
def test_what_is_no_report_about_our_domains_is_refused(document, why):
    with pytest.raises(tool.Refused, match=why):
        tool.keep(store(), document, DOMAINS)


def test_compressed_parts_are_read_up_to_the_limit(monkeypatch):
    monkeypatch.setattr(tool, "REPORT_LIMIT", 1000)
    message = EmailMessage()
    message.set_content("report")
    message.add_attachment(gzip.compress(tls()), maintype="application", subtype="tlsrpt+gzip")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("report.xml", dmarc())
    message.add_attachment(archive.getvalue(), maintype="application", subtype="zip", filename="r.zip")
    assert [d[:1] for d in tool.documents(message)] == [b"{", b"<"]
    bomb = EmailMessage()
    bomb.set_content("report")
    bomb.add_attachment(gzip.compress(b" " * 5000), maintype="application", subtype="gzip")
    with pytest.raises(tool.Refused, match="expands beyond 1000 bytes"):
        tool.documents(bomb)
