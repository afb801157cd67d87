"""`mailstack status` (issue 27) against the running lab: what runs is held against the
inventory, read-only. Operator: the healthy lab's units, ports, certificate, queue and DNS are
found as planned, in a table and as JSON. Then one thing breaks at a time and status names it
and exits 1: a daemon stopped (its unit and its port), a scheduled job that failed, an account
on hold, a mailbox nearly at its quota, a backup too old, DNS that does not serve what the
inventory says (a domain added to the inventory, never deployed)."""

from __future__ import annotations

import datetime
import json
import re
import subprocess
import time
from pathlib import Path

import pytest
from labenv import INVENTORY, ROOT
from test_monitoring import disk_used_percent, with_monitoring

from deploys.backup import TOOL as BACKUP_TOOL
from deploys.exporters import NODE_PORT
from mailstack.conventions import BACKUP_RECORDS
from mailstack.lab.recipes import closed

NODE_EXPORTER = "prometheus-node-exporter"


def status(*args: str, inventory: str | Path | None = None) -> tuple[int, dict]:
    done = subprocess.run([str(ROOT / ".venv/bin/mailstack"), "status", "--json", "-i", str(inventory or INVENTORY.file),
                           *args], capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return done.returncode, json.loads(done.stdout)


def finding(report: dict, host: str, check: str) -> dict:
    return next(f for f in report["findings"] if (f["host"], f["check"]) == (host, check))


def test_the_healthy_lab_is_found_as_the_inventory_says():
    _, report = status()
    assert {f["host"] for f in report["findings"]} == {"mail", "dns"}  # ext plays the outside world
    for check in ("units", "ports", "certificate"):
        assert finding(report, "mail", check)["ok"], finding(report, "mail", check)
    # mail deferred by earlier tests may wait in the queue: its size is shown either way
    assert re.fullmatch(r"\d+ messages( \(more than \d+\))?", finding(report, "mail", "queue")["detail"])
    assert finding(report, "dns", "records")["ok"], finding(report, "dns", "records")
    alerts = finding(report, "mail", "alerts")  # earlier tests may have left one firing: shown either way
    assert alerts["detail"] == "none firing" or alerts["detail"].startswith("firing: ")
    table = subprocess.run([str(ROOT / ".venv/bin/mailstack"), "status", "-i", str(INVENTORY.file)],
                           capture_output=True, text=True, timeout=300).stdout
    assert table.splitlines()[0].split() == ["HOST", "CHECK", "STATE", "DETAIL"]
    assert any(line.split()[:3] == ["mail", "certificate", "ok"] for line in table.splitlines())


def test_a_stopped_daemon_is_named_with_its_port(mail):
    mail.check_output(f"systemctl stop {NODE_EXPORTER}")
    try:
        code, report = status()
    finally:
        mail.check_output(f"systemctl start {NODE_EXPORTER}")
    assert code == 1 and not report["ok"]
    assert finding(report, "mail", "units") == {
        "host": "mail", "check": "units", "ok": False, "detail": f"not running: {NODE_EXPORTER}.service"}
    assert finding(report, "mail", "ports")["detail"] == f"not listening: *:{NODE_PORT}"
    assert finding(status()[1], "mail", "units")["ok"]  # back once it runs


def test_a_scheduled_job_whose_last_run_failed_is_named(mail):
    """A timer's job is not a daemon: status reads its last result. A failed run of the
    certificate job (a bad setting in its unit, put back at once) is named."""
    dropin = "/run/systemd/system/mailstack-acme.service.d"
    mail.check_output(f"mkdir -p {dropin} && printf '[Service]\\nExecStart=\\nExecStart=/bin/false\\n' > {dropin}/t.conf"
                      " && systemctl daemon-reload")
    try:
        mail.run("systemctl start mailstack-acme.service")
        code, report = status()
    finally:
        mail.check_output(f"rm -rf {dropin} && systemctl daemon-reload && systemctl reset-failed mailstack-acme.service")
    assert code == 1
    assert "last run failed: mailstack-acme.service" in finding(report, "mail", "units")["detail"]


def test_an_account_on_hold_is_named():
    login = "gina@example.test"  # the limits tests' account (lab.yml gives it low limits)
    mailstack = str(ROOT / ".venv/bin/mailstack")
    account = [mailstack, "account", "-i", str(INVENTORY.file)]
    subprocess.run([*account, "hold", login], check=True, capture_output=True, timeout=60)
    try:
        code, report = status()
    finally:
        subprocess.run([*account, "release", login], check=True, capture_output=True, timeout=60)
    assert code == 1 and finding(report, "mail", "held") == {
        "host": "mail", "check": "held", "ok": False, "detail": f"on hold: {login}"}
    assert finding(status()[1], "mail", "held")["detail"] == "no account on hold"


@pytest.fixture
def grown(tmp_path) -> Path:
    """The lab inventory with one more domain, never deployed."""
    lab = Path(INVENTORY.file).read_text()
    assert "\ndomains:\n" in lab
    inventory = tmp_path / "lab.yml"
    inventory.write_text(lab.replace("\ndomains:\n", "\ndomains:\n  - name: newcomer.test\n    tenant: newcomer\n"
                                     "    mx: [mail]\n    dmarc: {policy: none, rua: [postmaster@example.test]}\n", 1))
    return inventory


def test_a_filesystem_fuller_than_the_threshold_is_named(mail, tmp_path):
    strict = tmp_path / "lab.yml"  # the same platform, with a threshold below what / holds
    strict.write_text(with_monitoring("disk_percent", 1))
    code, report = status(inventory=strict)
    disk = finding(report, "mail", "disk")
    assert code == 1 and not disk["ok"]
    shown = re.fullmatch(r"fuller than 1%: / (\d+)%", disk["detail"])
    assert shown and abs(int(shown.group(1)) - disk_used_percent(mail)) < 1.5, disk


def test_dns_that_does_not_serve_what_the_inventory_says_is_named(grown):
    code, report = status(inventory=grown)
    assert code == 1
    records = finding(report, "dns", "records")
    assert not records["ok"] and "newcomer.test MX: missing" in records["detail"]
    assert "example.test MX" not in records["detail"]  # what is published stays found


def test_a_mailbox_nearly_at_its_quota_is_named(mail, inv, tag):
    """hana's 20 MB (lab.yml) filled to 95% by one message saved on the host."""
    user = "hana@sso.test"
    limit_kib = int(re.search(r"Type=STORAGE Value=\d+ Limit=(\d+) ",
                              mail.check_output(f"doveadm -f flow quota get -u {user}"))[1])
    filler = "python3 -c 'import sys; n = int(sys.argv[1]); sys.stdout.write(sys.argv[2] + (\"x\" * 75 + \"\\n\") * n)'"
    mail.check_output(f"{filler} {int(limit_kib * 1024 * 0.95) // 76} 'Subject: {tag}\n\n' | doveadm save -u {user}")
    try:
        code, report = status()
    finally:
        mail.check_output(f"doveadm expunge -u {user} mailbox INBOX header Subject {tag}")
    quota = finding(report, "mail", "quota")
    shown = re.fullmatch(rf"fuller than {inv.monitoring['quota_percent']}% of the quota: {re.escape(user)} (\d+)%",
                         quota["detail"])
    assert code == 1 and not quota["ok"] and shown and 90 < int(shown[1]) <= 100, quota
    fine = finding(status()[1], "mail", "quota")
    assert fine["ok"] and re.fullmatch(r"\d+ mailboxes, none fuller than \d+% of the quota", fine["detail"])


def test_the_last_good_backup_is_named_and_one_too_old_fails(mail, inv):
    snapshot = re.search(r"backup done: snapshot (\w+)", mail.check_output(f"{BACKUP_TOOL} run"))[1]
    backup = finding(status()[1], "mail", "backup")
    assert backup["ok"] and backup["detail"].startswith(f"last good backup 0 h ago (snapshot {snapshot})"), backup
    hours = inv.backup["max_age_hours"] + 1  # as if every run since then had failed
    record = f"{BACKUP_RECORDS}/last-backup"
    mail.check_output(f"touch -d @{int(time.time()) - hours * 3600} {record}")
    try:
        code, report = status()
    finally:
        mail.check_output(f"touch {record}")
    backup = finding(report, "mail", "backup")
    assert code == 1 and not backup["ok"], backup
    assert backup["detail"].startswith(f"last good backup {hours} h ago (snapshot {snapshot}), more than "
                                       f"backup.max_age_hours ({inv.backup['max_age_hours']})"), backup


def test_a_certificate_a_daemon_signs_with_is_held_to_the_threshold_too(mail, tmp_path):
    """The S/MIME gateway's tenant certificate, beside the host's own: a threshold beyond
    both names both, with the days each has left (as openssl reads them on the host). The
    threshold is past ACME's renewal window, which `check` refuses: the lab-CA variant."""
    tenant = "/etc/mailstack-smime/tenants/example.test.pem"
    end = mail.check_output(f"openssl x509 -noout -enddate -in {tenant}").split("=", 1)[1]
    days = (datetime.datetime.strptime(end, "%b %d %H:%M:%S %Y %Z") - datetime.datetime.utcnow()).days
    strict = tmp_path / "lab.yml"
    strict.write_text(closed(with_monitoring("certificate_days", days + 10)))
    code, report = status(inventory=strict)
    certificates = finding(report, "mail", "certificates")
    assert code == 1 and not certificates["ok"] and not finding(report, "mail", "certificate")["ok"]
    assert f"{tenant}: {days} days left" in certificates["detail"], certificates
    assert finding(status()[1], "mail", "certificates")["ok"]  # the lab's own threshold: far off
