"""Alerts that do not depend on the mail queue: Prometheus and Alertmanager on the monitoring
host, with real exporters, send to the webhook ext plays. An account the limits put on hold,
a queue over its size, mail deferred too long, a filter that only answers 4xx, a stopped
daemon and a mailbox over its message count each raise an alert there; Dovecot's and
rspamd's own counters reach Prometheus;
the metrics ports are closed to other hosts."""

import json
import socket
import ssl
import time
from pathlib import Path

import pytest
from helpers import imap_find, message
from labenv import INVENTORY
from test_clamav import WAIT_FOR_CLAMD
from test_limits import LIMITED, NEIGHBOUR, OUTSIDE, account, arrived, burst
from test_mail_flow import smtp_from_test_machine
from test_platform import deploy

from deploys.exporters import NODE_PORT, POSTFIX_PORT
from deploys.monitoring import ALERTMANAGER_PORT, PROMETHEUS_PORT
from deploys.pager_receiver import LOG
from mailstack.conventions import METRICS_DIR as TEXTFILES


def notices(ext) -> list[dict]:
    return [json.loads(line) for line in ext.run(f"cat {LOG}").stdout.splitlines() if line.startswith("{")]


def alert(ext, rule: str, status: str, since: float, timeout: float = 120, **labels) -> dict | None:
    """The first alert of `rule` with `status` and `labels` the webhook got after `since`."""
    deadline = time.monotonic() + timeout
    while True:
        for notice in notices(ext):
            for found in notice["alerts"]:
                started = found["startsAt"] if status == "firing" else found["endsAt"]
                if (found["labels"]["alertname"] == rule and found["status"] == status
                        and all(found["labels"].get(k) == v for k, v in labels.items())
                        and time.mktime(time.strptime(started[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone >= since - 5):
                    return found
        if time.monotonic() >= deadline:
            return None
        time.sleep(2)


ACTIVE = ("python3 -c 'import json, urllib.request; print(json.dumps([a[\"labels\"] for a in json.load("
          f"urllib.request.urlopen(\"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/alerts\"))[\"data\"][\"alerts\"]]))'")


def quiet(mail, name: str, timeout: float = 90) -> None:
    """Wait until Prometheus has no active `name` alert (an earlier one would hide a new one)."""
    deadline = time.monotonic() + timeout
    while any(a["alertname"] == name for a in json.loads(mail.check_output(ACTIVE))):
        assert time.monotonic() < deadline, f"{name} still active"
        time.sleep(2)


@pytest.fixture(scope="module", autouse=True)
def lab_addresses(addr):
    global ADDR
    ADDR = addr


BROKEN = f"{TEXTFILES}/mailstack-test-broken.prom"
FILLED = "hana@sso.test"  # a mailbox nobody empties (hana's: only the token tests log in as her)


@pytest.fixture(scope="module", autouse=True)
def early(mail, inv):
    """Conditions whose alerts only wait for their `for:` time, set at the start of the module,
    so that those waits run beside the other tests (about 3 minutes less): fail2ban stopped
    (no other test here feels it), a metrics file node exporter cannot read, a mailbox over its
    message count. {rule: when its condition began}; all undone at the end of the module."""
    began = {}
    for rule in ("ServiceDown", "MetricsUnreadable", "MailboxManyMessages"):
        quiet(mail, rule)
    began["ServiceDown"] = time.time()
    mail.check_output("systemctl stop fail2ban")
    began["MetricsUnreadable"] = time.time()
    mail.check_output(f"printf 'mailstack_test{{user=\"a\"b\"}} 1\\n' > {BROKEN}")
    began["MailboxManyMessages"] = time.time()
    mail.check_output(f"for i in $(seq {inv.monitoring['mailbox_count_alert'] + 1}); do "
                      f"printf 'Subject: filler %s\\n\\nx\\n' $i | doveadm save -u {FILLED}; done")
    yield began
    mail.check_output("systemctl start fail2ban")
    mail.check_output(f"rm -f {BROKEN}")
    mail.check_output(f"doveadm expunge -u {FILLED} mailbox INBOX all")


@pytest.fixture
def fresh_account(mail, rspamd_ready):
    assert account("release", LIMITED).returncode == 0
    quiet(mail, "MailstackAccountOnHold")
    yield
    account("release", LIMITED, "--drop")


def test_an_account_put_on_hold_raises_an_alert_at_the_webhook(fresh_account, ext, addr, fqdn, ca_file, tag):
    since = time.time()
    three = [OUTSIDE, "alice@example.test", NEIGHBOUR]
    assert [c for c, _ in burst(addr, fqdn, ca_file, LIMITED, 3, three, tag)] == [250, 250, 250]
    fired = alert(ext, "MailstackAccountOnHold", "firing", since, login=LIMITED)
    assert fired is not None, "no hold alert at the webhook"
    print(f"hold -> webhook: {time.time() - since:.0f} s")
    assert "put on hold" in fired["annotations"]["summary"]
    assert account("release", LIMITED).returncode == 0
    assert alert(ext, "MailstackAccountOnHold", "resolved", since, login=LIMITED) is not None, "no all-clear"


def with_monitoring(setting: str, value: int) -> str:
    """The lab inventory with `monitoring.SETTING` at `value`."""
    lab = Path(INVENTORY.file).read_text()
    assert "\nmonitoring:" in lab and f"  {setting}:" not in lab
    start = lab.index("\nmonitoring:")
    line_end = lab.index("\n", start + 1)
    return lab[:line_end + 1] + f"  {setting}: {value}\n" + lab[line_end + 1:]


def disk_used_percent(host) -> float:
    size, avail = map(int, host.check_output("df -B1 --output=size,avail / | tail -n 1").split())
    return 100 * (1 - avail / size)


def test_a_queue_over_its_size_raises_an_alert(mail, ext, addr, fqdn, ca_file, tag, inv):
    count = inv.monitoring["queue_size"] + 1
    quiet(mail, "MailQueueLarge")
    quiet(mail, "DeferredMailOld")
    since = time.time()
    ext.check_output("systemctl stop postfix")  # the outside world is unreachable: mail waits in our queue
    try:
        replies = burst(addr, fqdn, ca_file, NEIGHBOUR, count, [OUTSIDE], tag)
        assert [c for c, _ in replies] == [250] * count
        assert alert(ext, "MailQueueLarge", "firing", since) is not None, "no queue alert at the webhook"
        # lab.yml: deferred_minutes 1
        assert alert(ext, "DeferredMailOld", "firing", since, timeout=180) is not None, "no alert on old mail"
    finally:
        ext.check_output("systemctl start postfix")
        mail.check_output("postqueue -f")
    assert arrived(ext, tag, count) == count  # nothing lost while it waited


def test_a_filter_that_only_answers_4xx_raises_an_alert(mail, ext, inv, tag):
    """clamd down: rspamd answers every message 4xx (mail waits at its senders) until it is back."""
    quiet(mail, "FilterTempFailing")
    since = time.time()
    mail.check_output("systemctl stop clamav-daemon.socket clamav-daemon.service")
    try:
        deadline = time.monotonic() + 60 * inv.monitoring["tempfail_minutes"] + 150
        while time.monotonic() < deadline:
            with smtp_from_test_machine(ADDR) as client:
                client.mail("carol@ext.test")
                client.rcpt("alice@example.test")
                code, _ = client.data(message("carol@ext.test", "alice@example.test", tag).as_bytes())
            assert 400 <= code < 500, code
            if alert(ext, "FilterTempFailing", "firing", since, timeout=0):
                break
            time.sleep(5)
        assert alert(ext, "FilterTempFailing", "firing", since, timeout=0), "no alert on a filter answering 4xx"
    finally:
        mail.check_output("systemctl start clamav-daemon.socket clamav-daemon.service")
        mail.check_output(WAIT_FOR_CLAMD)


def test_a_stopped_daemon_raises_an_alert(ext, early):
    assert alert(ext, "ServiceDown", "firing", early["ServiceDown"], timeout=180, name="fail2ban.service") is not None


def test_a_mailbox_over_its_message_count_raises_an_alert(ext, inv, early):
    """Lesson 2: a mailbox nobody empties (hana's, filled on the host) is reported by name."""
    limit = inv.monitoring["mailbox_count_alert"]
    fired = alert(ext, "MailboxManyMessages", "firing", early["MailboxManyMessages"], user=FILLED)
    assert fired is not None, "no alert on a mailbox over its message count"
    assert f"holds {limit + 1} messages" in fired["annotations"]["summary"]


QUERY = ("python3 -c 'import json, sys, urllib.parse, urllib.request; print(json.dumps(json.load(urllib.request.urlopen("
         f"\"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/query?query=\" + urllib.parse.quote(sys.argv[1])))"
         "[\"data\"][\"result\"]))'")


def scraped(mail, expression: str) -> float:
    """The value Prometheus has for `expression` (one series), or -1 without one."""
    result = json.loads(mail.check_output(f"{QUERY} '{expression}'"))
    return float(result[0]["value"][1]) if result else -1


def test_the_expiry_of_each_certificate_a_daemon_uses_reaches_prometheus(mail):
    """The host's certificate and the S/MIME gateway's tenant certificate: the expiry alert
    watches both, each with the date openssl reads on the host."""
    for path in ("/etc/mailstack/tls/cert.pem", "/etc/mailstack-smime/tenants/example.test.pem"):
        end = mail.check_output(f"openssl x509 -noout -enddate -in {path}").split("=", 1)[1]
        expected = ssl.cert_time_to_seconds(end)
        deadline = time.monotonic() + 90  # the metrics job runs at every scrape interval
        while scraped(mail, f'mailstack_certificate_expiry_timestamp_seconds{{path="{path}"}}') != expected:
            assert time.monotonic() < deadline, f"no expiry of {path} in Prometheus"
            time.sleep(5)


def test_dovecot_and_rspamd_own_counters_reach_prometheus(mail, addr, fqdn, ca_file, tag):
    logins = 'mailstack_dovecot_events_total{event="auth_success"}'
    scans = "rspamd_scanned_total"
    before = scraped(mail, logins), scraped(mail, scans)
    assert min(before) >= 0, f"not scraped: {before}"
    imap_find(addr["mail"], fqdn["mail"], ca_file, "bob@example.test", "no such subject", timeout=0)  # a login
    with smtp_from_test_machine(addr) as client:  # a scan, whatever its verdict
        client.mail("carol@ext.test")
        client.rcpt("bob@example.test")
        client.data(message("carol@ext.test", "bob@example.test", tag).as_bytes())
    deadline = time.monotonic() + 60
    while scraped(mail, logins) <= before[0] or scraped(mail, scans) <= before[1]:
        assert time.monotonic() < deadline, f"counters did not move: {before}"
        time.sleep(2)


@pytest.mark.parametrize("port", [NODE_PORT, POSTFIX_PORT, PROMETHEUS_PORT, ALERTMANAGER_PORT])
def test_metrics_are_closed_to_other_hosts(addr, port):
    with pytest.raises(OSError):
        socket.create_connection((addr["mail"], port), timeout=5).close()


def test_a_metrics_file_node_exporter_cannot_read_raises_an_alert(ext, early):
    """One unreadable line voids a whole textfile, and with it every alert on its metrics:
    that itself is an alert (the label escaping that prevents it: tests/unit)."""
    assert alert(ext, "MetricsUnreadable", "firing", early["MetricsUnreadable"]) is not None


def test_a_filling_disk_raises_an_alert(mail, ext, inv, tmp_path):
    """No disk is filled here: the threshold goes below what the lab's root filesystem already
    holds (a variant of the inventory), DiskFilling reaches the pager, and the lab's own
    threshold is deployed again after. Last in the module: a deploy starts the daemon that
    `early` stopped for the ServiceDown test."""
    used = disk_used_percent(mail)
    if used >= inv.monitoring["disk_percent"]:
        pytest.skip(f"this machine's disk is {used:.0f}% full, above the lab's threshold already")
    quiet(mail, "DiskFilling")
    variant = tmp_path / "lab.yml"
    variant.write_text(with_monitoring("disk_percent", max(1, int(used) - 1)))
    since = time.time()
    try:
        deploy(variant)
        fired = alert(ext, "DiskFilling", "firing", since, mountpoint="/")
        assert fired is not None, "no disk alert at the webhook"
        assert fired["labels"]["instance"].startswith(ADDR["mail"])
    finally:
        deploy()
