"""Every verdict reaches the SIEM: rspamd's record goes through rsyslog on the filter host to
the receivers ext plays, over TLS as RFC 5424 (octet-counted) and as JSON over HTTPS. A clean,
a spam and a virus mail give three records with the right fields on both; a SIEM that is
down never holds up mail and gets its records when it is back; only the filter hosts may
write to it."""

import json
import re
import socket
import time

import pytest
from helpers import imap_find, message
from test_clamav import WAIT_FOR_CLAMD
from test_mail_flow import smtp_from_test_machine
from test_monitoring import alert
from test_policies import spam

from deploys.clamav import EICAR, LAB_SIGNATURE
from deploys.siem import DEAD_LETTERS, FIELD, LISTED
from deploys.siem_receiver import HTTP_LOG, HTTP_PORT, LOG, PORT
from mailstack.conventions import METRICS_DIR as TEXTFILES

RECORD = re.compile(r"^<(?P<pri>\d+)>1 (?P<time>\S+) (?P<host>\S+) (?P<app>\S+) - - - (?P<msg>\{.*\})$")


def syslog_records(ext) -> list[dict]:
    """The verdict records the syslog receiver wrote, header fields under '_'."""
    found = []
    for line in ext.run(f"cat {LOG}").stdout.splitlines():
        match = RECORD.match(line)
        if match and match["app"] == "mailstack-verdict":
            record = json.loads(match["msg"])
            record["_"] = match.groupdict()
            found.append(record)
    return found


def http_records(ext) -> list[dict]:
    """The records the HTTPS receiver got, one JSON body a line."""
    return [json.loads(line) for line in ext.run(f"cat {HTTP_LOG}").stdout.splitlines() if line.startswith("{")]


def record_of(ext, timeout: float = 30, source=syslog_records, **fields) -> dict | None:
    deadline = time.monotonic() + timeout
    while True:
        for record in source(ext):
            if all(record.get(k) == v for k, v in fields.items()):
                return record
        if time.monotonic() > deadline:
            return None
        time.sleep(1)


def send(addr, sender: str, recipient: str, data: bytes) -> int:
    with smtp_from_test_machine(addr) as client:
        client.ehlo("unknown-host.example.com")
        client.mail(sender)
        client.rcpt(recipient)
        return client.data(data)[0]


@pytest.fixture(scope="module", autouse=True)
def ready(mail, rspamd_ready):
    mail.check_output(WAIT_FOR_CLAMD)


def test_clean_spam_and_virus_mail_each_leave_a_record(ext, addr, tag):
    assert send(addr, "carol@ext.test", "alice@example.test", message("carol@ext.test", "alice@example.test",
                                                                      f"{tag}-clean").as_bytes()) == 250
    spammer = f"bounce-{tag}@paypa1-secure.example.test"
    assert send(addr, spammer, "alice@example.test", spam(tag)) == 554
    virus = message("carol@ext.test", "alice@example.test", f"{tag}-virus", body=f"see below\n{EICAR}\n")
    assert send(addr, "carol@ext.test", "alice@example.test", virus.as_bytes()) == 554

    clean = record_of(ext, message_id=f"{tag}-clean@lab.test")
    spammy = record_of(ext, mail_from=spammer)
    infected = record_of(ext, message_id=f"{tag}-virus@lab.test")
    assert clean and spammy and infected, (clean, spammy, infected)
    for record in (clean, spammy, infected):
        assert record["_"]["host"] == "mail.lab.test" and record["_"]["pri"] == "134"
        assert record["client_ip"] == "10.77.0.1" and record["rcpt_to"] == ["alice@example.test"]
        assert record["tenants"] == ["example"] and record["queue_id"] and record["time"]
        assert record["symbols"] == sorted(record["symbols"]) and record["symbols"]
    assert clean["action"] in ("no action", "add header") and clean["header_from"] == ["carol@ext.test"]
    assert clean["finding"] == "" and clean["mail_from"] == "carol@ext.test"
    assert spammy["action"] == "reject" and spammy["score"] >= 15 and "PHISHING" in spammy["symbols"]
    assert spammy["policy"] == "spam:reject" and spammy["header_from"] == ["service@paypa1-secure.example.test"]
    assert infected["action"] == "reject" and infected["finding"] == f"virus found: {LAB_SIGNATURE}.UNOFFICIAL"
    assert "CLAM_VIRUS" in infected["symbols"] and infected["policy"] == "malware:reject"
    # the same records, as JSON over HTTPS
    for record in (clean, spammy, infected):
        sent = record_of(ext, source=http_records, queue_id=record["queue_id"])
        assert sent == {k: v for k, v in record.items() if k != "_"}, (sent, record)


def test_a_siem_that_is_down_holds_up_no_mail_and_loses_no_record(ext, addr, fqdn, ca_file, tag):
    ext.check_output("systemctl stop rsyslog.service syslog.socket mailstack-siem-http.service")
    try:
        assert send(addr, "carol@ext.test", "alice@example.test",
                    message("carol@ext.test", "alice@example.test", tag).as_bytes()) == 250
        # delivered (to Junk: from this machine SPF fails and the HELO does not resolve)
        assert imap_find(addr["mail"], fqdn["mail"], ca_file, "alice@example.test", tag, mailbox="Junk") is not None
        assert record_of(ext, timeout=3, message_id=f"{tag}@lab.test") is None
    finally:
        ext.check_output("systemctl start rsyslog.service mailstack-siem-http.service")
    for source in (syslog_records, http_records):
        assert record_of(ext, timeout=60, source=source, message_id=f"{tag}@lab.test"), f"no queued {source.__name__}"


def test_only_filter_hosts_reach_the_siem(addr, ext):
    """A host on the lab network (this machine) cannot write records into the SIEM."""
    for port in (PORT, HTTP_PORT):
        with pytest.raises(OSError):
            socket.create_connection((addr["ext"], port), timeout=5).close()


def test_the_siem_takes_no_plain_text(mail, ext, tag):
    """A filter host that skips TLS gets nothing written (the receiver speaks TLS only)."""
    mail.run(f"python3 -c \"import socket; s = socket.create_connection(('ext.lab.test', {PORT}), 5); "
             f"line = b'<134>1 - forged mailstack-verdict - - - {{\\\"message_id\\\": \\\"{tag}\\\"}}'; "
             f"s.sendall(str(len(line)).encode() + b' ' + line); s.close()\"")
    assert record_of(ext, timeout=5, message_id=tag) is None


def test_a_sender_sized_header_neither_truncates_nor_drops_a_record(ext, addr, tag):
    """400 long addresses in From (30 KiB, the sender's to choose): the record keeps a
    bounded few, and arrives whole on both receivers."""
    crowd = ",\r\n ".join(f"someone-with-a-rather-long-name-{i:03}@ext.test" for i in range(400))
    data = (f"From: {crowd}\r\nTo: bob@example.test\r\nSubject: {tag}\r\nMessage-ID: <{tag}@lab.test>\r\n\r\n"
            "a crowd of senders\r\n").encode()
    assert send(addr, "carol@ext.test", "bob@example.test", data) == 250
    for source in (syslog_records, http_records):
        record = record_of(ext, source=source, message_id=f"{tag}@lab.test")
        assert record is not None, f"no whole record reached the {source.__name__}"
        assert len(record["header_from"]) == LISTED and all(len(a) <= FIELD + 3 for a in record["header_from"])


def test_a_record_the_siem_refuses_is_kept_and_raises_an_alert_while_the_queue_goes_on(mail, ext, addr, tag):
    """A SIEM that answers 4xx to one record (its own content rule) no longer stalls the
    queue: that record goes to the dead letters, an alert says so, the next ones arrive."""
    refused, after = f"{tag}-refused-by-the-siem", f"{tag}-after"
    since = time.time()
    try:
        for message_id in (refused, after):
            data = message("carol@ext.test", "bob@example.test", message_id).as_bytes()
            assert send(addr, "carol@ext.test", "bob@example.test", data) == 250
        assert record_of(ext, source=http_records, message_id=f"{after}@lab.test") is not None, "the queue stalled"
        assert f"{refused}@lab.test" in mail.check_output(f"cat {DEAD_LETTERS}")
        assert alert(ext, "SiemRecordsRefused", "firing", since) is not None
    finally:
        mail.run(f"rm -f {DEAD_LETTERS} {TEXTFILES}/mailstack-siem.prom")
