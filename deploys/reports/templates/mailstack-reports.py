#!/usr/bin/python3
"""Managed by mailstack: the DMARC aggregate (RFC 7489) and TLS-RPT (RFC 8460) reports other
mail servers send about the platform's domains, read from the mailboxes their `rua`
addresses reach on this host and kept in one SQLite store.

  mailstack-reports collect   read new messages (each mailbox from where the last run stopped)
  mailstack-reports show      everything kept, as JSON

A report is somebody else's data: only reports about the platform's own domains are kept,
each at most once (by its reporter and id); a compressed part may expand to REPORT_LIMIT
bytes, no more; a report that does not parse is skipped and logged (syslog tag
mailstack-reports), never fatal. The messages stay where they are."""

import email
import email.policy
import gzip
import io
import json
import sqlite3
import subprocess
import sys
import syslog
import xml.etree.ElementTree as ET
import zipfile

CONFIG = "/etc/mailstack/reports.json"
STORE = "/var/lib/mailstack/reports.sqlite"
REPORT_LIMIT = 20 * 1024 * 1024
SEARCH = ["(", "SUBJECT", "Report Domain:", "OR", "HEADER", "TLS-Report-Domain", "", ")"]
SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (kind TEXT, reporter TEXT, id TEXT, domain TEXT, begin TEXT, end TEXT,
                                    PRIMARY KEY (kind, reporter, id));
CREATE TABLE IF NOT EXISTS tls (kind TEXT, reporter TEXT, id TEXT, domain TEXT, policy TEXT, result TEXT,
                                mta TEXT, mx TEXT, sessions INTEGER);
CREATE TABLE IF NOT EXISTS dmarc (reporter TEXT, id TEXT, domain TEXT, source TEXT, count INTEGER,
                                  disposition TEXT, dkim TEXT, spf TEXT, header_from TEXT);
CREATE TABLE IF NOT EXISTS seen (mailbox TEXT PRIMARY KEY, validity TEXT, uid INTEGER);
"""


class Refused(Exception):
    """A report that is not kept, and why."""


def doveadm(*args: str) -> bytes:
    done = subprocess.run(["doveadm", *args], capture_output=True)
    if done.returncode:
        raise RuntimeError(f"doveadm {' '.join(args[:4])}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def bounded(stream) -> bytes:
    data = stream.read(REPORT_LIMIT + 1)
    if len(data) > REPORT_LIMIT:
        raise Refused(f"expands beyond {REPORT_LIMIT} bytes")
    return data


def documents(message: email.message.Message) -> list[bytes]:
    """The report documents a message carries: gzip, zip or plain JSON/XML parts."""
    found = []
    for part in message.walk():
        if part.is_multipart():
            continue
        kind, name = part.get_content_type(), (part.get_filename() or "").lower()
        payload = part.get_payload(decode=True) or b""
        if kind in ("application/tlsrpt+gzip", "application/gzip", "application/x-gzip") or name.endswith(".gz"):
            found.append(bounded(gzip.GzipFile(fileobj=io.BytesIO(payload))))
        elif kind in ("application/zip", "application/x-zip-compressed") or name.endswith(".zip"):
            with zipfile.ZipFile(io.BytesIO(payload)) as archive:
                found += [bounded(archive.open(entry)) for entry in archive.namelist()[:4]]
        elif kind in ("application/tlsrpt+json", "text/xml", "application/xml"):
            found.append(payload[:REPORT_LIMIT])
    return found


def tls_report(data: dict, domains: set[str]) -> tuple[tuple, list[tuple]]:
    reporter, report_id = str(data["organization-name"]), str(data["report-id"])
    span = data["date-range"]
    rows, kept = [], set()
    for entry in data["policies"]:
        policy = entry["policy"]
        domain = str(policy["policy-domain"]).lower().rstrip(".")
        if domain not in domains:
            continue
        kept.add(domain)
        summary = entry["summary"]
        rows.append(("tls", reporter, report_id, domain, policy["policy-type"], "success", "", "",
                     int(summary.get("total-successful-session-count", 0))))
        for failure in entry.get("failure-details", []):
            rows.append(("tls", reporter, report_id, domain, policy["policy-type"], str(failure["result-type"]),
                         str(failure.get("sending-mta-ip", "")), str(failure.get("receiving-mx-hostname", "")),
                         int(failure.get("failed-session-count", 0))))
    if not kept:
        raise Refused("about no domain of the platform")
    return ("tls", reporter, report_id, ",".join(sorted(kept)), span["start-datetime"], span["end-datetime"]), rows


def dmarc_report(root: ET.Element, domains: set[str]) -> tuple[tuple, list[tuple]]:
    def text(node, path):
        return (node.findtext(path) or "").strip()

    reporter, report_id = text(root, "report_metadata/org_name"), text(root, "report_metadata/report_id")
    domain = text(root, "policy_published/domain").lower().rstrip(".")
    if domain not in domains:
        raise Refused(f"about {domain or 'no domain'}, not a domain of the platform")
    rows = [(reporter, report_id, domain, text(r, "row/source_ip"), int(text(r, "row/count") or 0),
             text(r, "row/policy_evaluated/disposition"), text(r, "row/policy_evaluated/dkim"),
             text(r, "row/policy_evaluated/spf"), text(r, "identifiers/header_from").lower())
            for r in root.iter("record")]
    return ("dmarc", reporter, report_id, domain, text(root, "report_metadata/date_range/begin"),
            text(root, "report_metadata/date_range/end")), rows


def keep(db: sqlite3.Connection, document: bytes, domains: set[str]) -> str:
    """Store one report document; what it was."""
    if document.lstrip()[:1] == b"{":
        head, rows = tls_report(json.loads(document), domains)
        table = "tls"
    else:
        root = ET.fromstring(document)
        if root.tag != "feedback":
            raise Refused(f"an XML document <{root.tag}>, not DMARC feedback")
        head, rows = dmarc_report(root, domains)
        table = "dmarc"
    if db.execute("SELECT 1 FROM reports WHERE kind=? AND reporter=? AND id=?", head[:3]).fetchone():
        return f"{head[0]} report {head[2]} from {head[1]}: kept already"
    db.execute("INSERT INTO reports VALUES (?,?,?,?,?,?)", head)
    db.executemany(f"INSERT INTO {table} VALUES ({','.join('?' * len(rows[0]))})" if rows else "SELECT 1", rows)
    return f"{head[0]} report {head[2]} from {head[1]} about {head[3]}: {len(rows)} rows"


def collect(db: sqlite3.Connection, config: dict) -> None:
    domains = set(config["domains"])
    for mailbox in config["mailboxes"]:
        status = doveadm("-f", "flow", "mailbox", "status", "-u", mailbox, "uidvalidity", "INBOX").decode()
        validity = status.split("=", 1)[1].strip()
        seen = db.execute("SELECT validity, uid FROM seen WHERE mailbox=?", (mailbox,)).fetchone()
        after = seen[1] if seen and seen[0] == validity else 0
        found = doveadm("-f", "flow", "search", "-u", mailbox, "mailbox", "INBOX", "UID", f"{after + 1}:*", *SEARCH)
        uids = sorted(int(line.split()[1]) for line in found.decode().splitlines() if line.strip())
        for uid in (u for u in uids if u > after):
            raw = doveadm("fetch", "-u", mailbox, "text", "mailbox", "INBOX", "uid", str(uid))
            message = email.message_from_bytes(raw[len(b"text:\n"):], policy=email.policy.compat32)
            try:
                for document in documents(message):
                    syslog.syslog(f"{mailbox} UID {uid}: " + keep(db, document, domains))
            except (Refused, ValueError, KeyError, TypeError, OSError, EOFError, zipfile.BadZipFile,
                    ET.ParseError) as why:
                syslog.syslog(syslog.LOG_WARNING, f"{mailbox} UID {uid}: report not kept: {why}")
            db.execute("INSERT OR REPLACE INTO seen VALUES (?,?,?)", (mailbox, validity, uid))
            db.commit()
        if not seen or seen[0] != validity:
            db.execute("INSERT OR REPLACE INTO seen VALUES (?,?,?)", (mailbox, validity, max(uids, default=0)))
            db.commit()


def show(db: sqlite3.Connection) -> dict:
    def rows(query: str) -> list[dict]:
        cursor = db.execute(query)
        names = [c[0] for c in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]

    return {"reports": rows("SELECT * FROM reports ORDER BY begin, reporter"),
            "tls": rows("SELECT * FROM tls ORDER BY domain, result"),
            "dmarc": rows("SELECT * FROM dmarc ORDER BY domain, source")}


def main(argv: list[str]) -> int:
    if argv[1:] not in (["collect"], ["show"]):
        print(__doc__, file=sys.stderr)
        return 2
    syslog.openlog("mailstack-reports")
    with open(CONFIG) as handle:
        config = json.load(handle)
    db = sqlite3.connect(STORE)
    db.executescript(SCHEMA)
    if argv[1] == "collect":
        try:
            collect(db, config)
        except RuntimeError as failed:
            print(f"mailstack-reports: {failed}", file=sys.stderr)
            return 1
    else:
        json.dump(show(db), sys.stdout, indent=1)
        print()
    db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
