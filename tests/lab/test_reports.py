"""Reports other mail servers send about the platform's domains (issues 25 and 26): a TLS-RPT
report (RFC 8460, gzip JSON) and a DMARC aggregate report (RFC 7489, gzip XML), mailed from
ext to the addresses the platform publishes (`_smtp._tls` and `_dmarc` rua: the postmaster),
are collected from that mailbox by `mailstack reports` into the mailbox host's store, once, and
summarised. The platform reports too (rspamd, `dmarc_reports`), and `mailstack dmarc` reads
its own domain's reports to stage its policy. Attacker tests: a report is somebody else's data: one about a domain that is not
the platform's is not kept, and a compressed bomb is refused without stopping the collection."""

import email
import email.policy
import gzip
import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from email.message import EmailMessage

from helpers import imap_find, message, submit
from labenv import ROOT, ssh

SENDER = "carol@ext.test"  # ext plays the reporting mail provider
RUA = "postmaster@example.test"  # reaches alice's mailbox
EXT_SERVER = "10.77.0.20"  # ext's address: where its mail comes from


def tls_report(report_id: str, domain: str, failures: int) -> bytes:
    report = {
        "organization-name": "Ext Mail Reporting", "report-id": report_id, "contact-info": "tls@ext.test",
        "date-range": {"start-datetime": "2026-12-05T00:00:00Z", "end-datetime": "2026-12-05T23:59:59Z"},
        "policies": [{
            "policy": {"policy-type": "sts", "policy-domain": domain, "mx-host": ["mail.lab.test"]},
            "summary": {"total-successful-session-count": 40, "total-failure-session-count": failures},
            "failure-details": [{"result-type": "certificate-host-mismatch", "sending-mta-ip": "192.0.2.7",
                                 "receiving-mx-hostname": "mail.lab.test", "failed-session-count": failures}],
        }],
    }
    return gzip.compress(json.dumps(report).encode())


def dmarc_report(report_id: str, domain: str) -> bytes:
    return gzip.compress(f"""<?xml version="1.0" encoding="UTF-8"?>
<feedback>
  <report_metadata><org_name>ext.test</org_name><email>dmarc@ext.test</email><report_id>{report_id}</report_id>
    <date_range><begin>1764892800</begin><end>1764979199</end></date_range></report_metadata>
  <policy_published><domain>{domain}</domain><p>quarantine</p></policy_published>
  <record><row><source_ip>192.0.2.99</source_ip><count>5</count>
      <policy_evaluated><disposition>quarantine</disposition><dkim>fail</dkim><spf>fail</spf></policy_evaluated></row>
    <identifiers><header_from>{domain}</header_from></identifiers></record>
</feedback>
""".encode())


def mail_report(addr, fqdn, ca_file, subject: str, data: bytes, kind: str, tag: str) -> None:
    """A report mailed from ext as its software would: TLS-RPT as multipart/report, DMARC as
    a gzip attachment with the subject RFC 7489 suggests."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = SENDER, RUA, f"{subject} {tag}"
    if kind == "tls":
        msg["TLS-Report-Domain"], msg["TLS-Report-Submitter"] = "example.test", "Ext Mail Reporting"
        msg.set_content("This is an aggregate TLS report.\n")
        msg.add_attachment(data, maintype="application", subtype="tlsrpt+gzip", filename=f"{tag}.json.gz")
        msg.set_type("multipart/report")
        msg.set_param("report-type", "tlsrpt")
    else:
        msg.set_content("DMARC aggregate report.\n")
        msg.add_attachment(data, maintype="application", subtype="gzip", filename=f"{tag}.xml.gz")
    submit(addr["ext"], fqdn["ext"], ca_file, SENDER, msg)
    assert imap_find(addr["mail"], fqdn["mail"], ca_file, "alice@example.test", tag), f"{subject} never arrived"


def reports(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mailstack.cli", "reports", "-i",
                           str(ROOT / "inventories" / "lab.yml"), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def kept() -> dict:
    done = reports("--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_reports_about_our_domains_are_kept_once_and_summarised(addr, fqdn, ca_file, tag):
    mail_report(addr, fqdn, ca_file, "Report Domain: example.test Submitter: ext.test Report-ID:",
                dmarc_report(f"dmarc-{tag}", "example.test"), "dmarc", tag)
    mail_report(addr, fqdn, ca_file, "Report Domain: example.test Submitter: Ext Mail Reporting",
                tls_report(f"tls-{tag}", "example.test", 3), "tls", tag)
    store = kept()
    ours = [r for r in store["reports"] if tag in r["id"]]
    assert sorted((r["kind"], r["domain"]) for r in ours) == [("dmarc", "example.test"), ("tls", "example.test")]
    tls = [r for r in store["tls"] if r["id"] == f"tls-{tag}"]
    assert {(r["result"], r["mta"], r["mx"], r["sessions"]) for r in tls} == {
        ("success", "", "", 40), ("certificate-host-mismatch", "192.0.2.7", "mail.lab.test", 3)}
    dmarc = [r for r in store["dmarc"] if r["id"] == f"dmarc-{tag}"]
    assert [(r["source"], r["count"], r["dkim"], r["spf"], r["disposition"]) for r in dmarc] == [
        ("192.0.2.99", 5, "fail", "fail", "quarantine")]
    assert kept() == store  # collecting again adds nothing
    text = reports().stdout
    assert "certificate-host-mismatch  from 192.0.2.7 to mail.lab.test" in text
    assert "192.0.2.99  fail  fail  quarantine" in text


def test_a_report_about_another_domain_or_a_bomb_is_not_kept(mail, addr, fqdn, ca_file, tag):
    since = time.time() - 1
    mail_report(addr, fqdn, ca_file, "Report Domain: victim.test Submitter: ext.test Report-ID:",
                dmarc_report(f"victim-{tag}", "victim.test"), "dmarc", f"{tag}-victim")
    # 30 MB in ~30 KB: under what ClamAV scans whole (a bigger one is refused at SMTP), over
    # what the report tool reads
    bomb = gzip.compress(b"{" + b" " * (30 * 1024 * 1024) + b"}", compresslevel=9)
    mail_report(addr, fqdn, ca_file, "Report Domain: example.test Submitter: bomb", bomb, "tls", f"{tag}-bomb")
    mail_report(addr, fqdn, ca_file, "Report Domain: example.test Submitter: Ext Mail Reporting",
                tls_report(f"after-{tag}", "example.test", 1), "tls", f"{tag}-after")
    store = kept()
    ids = {r["id"] for r in store["reports"]}
    assert f"victim-{tag}" not in ids
    assert f"after-{tag}" in ids  # what came after the bomb is kept
    log = mail.check_output(f"journalctl -t mailstack-reports --since @{int(since)} -o cat --no-pager")
    assert "about victim.test, not a domain of the platform" in log
    assert "expands beyond" in log


def report_documents(raw: bytes) -> list[bytes]:
    """The decompressed report documents of a report message."""
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    return [gzip.decompress(part.get_content()) for part in parsed.walk()
            if part.get_content_type() == "application/gzip"]


def dmarc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mailstack.cli", "dmarc", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_the_platform_reports_what_it_saw_and_its_own_reports_stage_a_domain(
        mail, addr, fqdn, ca_file, tag, tmp_path, rspamd_ready):
    """rspamd's DMARC reporting, a real reporter: ext.test's mail (SPF aligned) and mail that
    ext's own server sends as example.test (the 'Gmail case') are reported, to ext.test's rua
    and to example.test's own. The platform then reads its domain's report: ext fails, so
    `dmarc advance` refuses until the inventory authorises it."""
    submit(addr["ext"], fqdn["ext"], ca_file, SENDER, message(SENDER, "dave@tenant-b.test", f"{tag}-ext"))
    forged = message("newsletter@example.test", "dave@tenant-b.test", f"{tag}-forged")
    ssh("ext", "/usr/sbin/sendmail -f bounces@ext.test dave@tenant-b.test", forged.as_bytes())
    assert imap_find(addr["mail"], fqdn["mail"], ca_file, "dave@tenant-b.test", f"{tag}-ext")
    # DMARC fails and example.test says quarantine: it lands in Junk (or INBOX, if rspamd scores it low)
    deadline = time.monotonic() + 60
    while not any(imap_find(addr["mail"], fqdn["mail"], ca_file, "dave@tenant-b.test", f"{tag}-forged",
                            mailbox=box, timeout=0) for box in ("Junk", "INBOX")):
        assert time.monotonic() < deadline, "the forged mail never arrived"
        time.sleep(1)
    mail.check_output(f"rspamadm dmarc_report {time.strftime('%Y%m%d', time.gmtime())}")

    raw = imap_find(addr["ext"], fqdn["ext"], ca_file, SENDER, "Report Domain: ext.test", timeout=90)
    assert raw, "ext.test's rua got no report"
    feedback = ET.fromstring(report_documents(raw)[0])
    assert feedback.findtext("policy_published/domain") == "ext.test"
    rows = {r.findtext("row/source_ip"): r for r in feedback.iter("record")}
    assert rows[addr["ext"]].findtext("row/policy_evaluated/spf") == "pass"

    inventory = tmp_path / "lab.yml"
    inventory.write_text((ROOT / "inventories" / "lab.yml").read_text())
    report = json.loads(dmarc("-i", str(inventory), "report", "--json", "example.test").stdout)
    failing = {s["address"]: s for s in report["sources"] if not s["passes"]}
    assert EXT_SERVER in failing and not failing[EXT_SERVER]["platform"]
    assert EXT_SERVER in report["unexplained"] and report["next"] == "reject"
    refused = dmarc("-i", str(inventory), "advance", "example.test")
    assert refused.returncode == 1 and EXT_SERVER in refused.stderr
    assert "policy: quarantine" in inventory.read_text()  # untouched

    overridden = tmp_path / "override.yml"
    overridden.write_text(inventory.read_text())
    # the operator authorises the failing sources (ext, and what other tests forged) in SPF
    ips = ", ".join(f"{address}/32" for address in report["unexplained"])
    inventory.write_text(inventory.read_text().replace("    spf: {all: -all}\n", f"    spf: {{all: -all, ip: [{ips}]}}\n"))
    advanced = dmarc("-i", str(inventory), "advance", "example.test")
    assert advanced.returncode == 0, advanced.stderr
    text = inventory.read_text()
    assert "dmarc: {policy: reject, rua: [postmaster@example.test]}" in text
    assert "# mailstack dmarc advance" in text and "quarantine -> reject" in text

    forced = dmarc("-i", str(overridden), "advance", "--override", "ext is the newsletter service", "example.test")
    assert forced.returncode == 0, forced.stderr
    assert "override: ext is the newsletter service" in overridden.read_text()
