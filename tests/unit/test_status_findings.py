"""`mailstack status` reading what a host prints (the lab test runs it against the lab)."""

import datetime

from test_rendered import LAB, secrets_home  # noqa: F401 (secrets_home: a scratch home)

from mailstack.inventory import check_text
from mailstack.plan import plans
from mailstack.status import (
    backup_findings,
    certificate_findings,
    disk_findings,
    expected_units,
    held_findings,
    port_findings,
    quota_findings,
    sections,
    unit_findings,
)
from mailstack.tls import CERT

NOW = datetime.datetime(2026, 12, 6, tzinfo=datetime.UTC)


def mail_plan():
    inv = check_text(LAB, "lab.yml")
    return inv, plans(inv)["mail"]


def printed(plan, down=(), failed_job=None, listening=None) -> dict:
    lines = ["== units"]
    for unit in expected_units(plan):
        result = "exit-code" if unit == failed_job else "success"
        lines.append(f"{unit} ActiveState={'inactive' if unit in down else 'active'} Result={result}")
    lines += ["== failed", "== listening"]
    lines += listening if listening is not None else [f"{a or '0.0.0.0'}:{p}" for a, p in plan.listeners]
    return sections("\n".join(lines))


def test_a_host_as_planned_is_ok():
    _, plan = mail_plan()
    assert "mailstack-acme.service" in expected_units(plan)  # a timer's job: its last result counts
    [units] = unit_findings("mail", plan, printed(plan))
    [ports] = port_findings("mail", plan, printed(plan))
    assert units.ok and ports.ok and ports.detail == f"{len(plan.listeners)} as planned"


def test_a_stopped_daemon_a_failed_job_and_a_stray_port_are_named():
    _, plan = mail_plan()
    found = printed(plan, down=("dovecot.service",), failed_job="mailstack-acme.service",
                    listening=[f"{a or '0.0.0.0'}:{p}" for a, p in plan.listeners if p != 993] + ["0.0.0.0:6666"])
    [units] = unit_findings("mail", plan, found)
    [ports] = port_findings("mail", plan, found)
    assert not units.ok and units.detail == ("not running: dovecot.service; "
                                             "last run failed: mailstack-acme.service")
    assert not ports.ok and ports.detail == "not listening: *:993; not planned: *:6666"


def test_a_certificate_is_held_against_the_alert_threshold():
    inv, _ = mail_plan()
    [soon] = certificate_findings("mail", inv, {"certificate": [f"{CERT} Dec 20 00:00:00 2026 GMT"]}, NOW)
    [later] = certificate_findings("mail", inv, {"certificate": [f"{CERT} Jan 20 00:00:00 2027 GMT"]}, NOW)
    [none] = certificate_findings("mail", inv, {"certificate": [f"{CERT} "]}, NOW)
    assert (soon.ok, later.ok, none.ok) == (False, True, False)
    assert soon.detail == "14 days left (fewer than monitoring.certificate_days, 21)" and later.detail == "45 days left"


def test_the_certificates_daemons_sign_with_are_held_to_it_too():
    inv, plan = mail_plan()
    tenants = [p for p in plan.contributed("monitoring.certificates")]
    assert "/etc/mailstack-smime/tenants/example.test.pem" in tenants  # the S/MIME gateway's tenants
    found = {"certificate": [f"{CERT} Jan 20 00:00:00 2027 GMT", f"{tenants[0]} Dec 10 00:00:00 2026 GMT",
                             "/etc/x/b.pem Dec 6 00:00:00 2028 GMT", "/etc/x/gone.pem "]}
    [own, others] = certificate_findings("mail", inv, found, NOW)
    assert own.ok and not others.ok
    assert others.detail == (f"/etc/x/gone.pem: none; {tenants[0]}: 4 days left; /etc/x/b.pem: 731 days left "
                             "(fewer than monitoring.certificate_days, 21)")


def test_accounts_on_hold_are_read_from_the_account_tools_metrics():
    metrics = ['# TYPE mailstack_account_on_hold gauge', 'mailstack_account_on_hold{login="gina@example.test"} 1',
               '# TYPE mailstack_accounts_on_hold gauge', 'mailstack_accounts_on_hold 1']
    [held] = held_findings("mail", {"held": metrics})
    assert (held.ok, held.detail) == (False, "on hold: gina@example.test")
    [none] = held_findings("mail", {"held": [metrics[0], metrics[2], "mailstack_accounts_on_hold 0"]})
    assert (none.ok, none.detail) == (True, "no account on hold")
    assert held_findings("ext", {"held": []}) == []  # no account tool there


def test_each_filesystem_is_held_to_the_disk_threshold():
    inv, _ = mail_plan()  # disk_percent: the default, 85
    found = {"disk": ["1000 100 /", "1000 500 /var/vmail", "0 0 /proc/x"]}
    [disk] = disk_findings("mail", inv, found)
    assert (disk.ok, disk.detail) == (False, "fuller than 85%: / 90%")
    [fine] = disk_findings("mail", inv, {"disk": ["1000 500 /"]})
    assert (fine.ok, fine.detail) == (True, "/ 50%")


def test_each_mailbox_is_held_to_its_quota():
    inv, _ = mail_plan()  # quota_percent: the default, 90
    header = "Username\tQuota name\tType\tValue\tLimit\t%"
    rows = ["hana@sso.test\tUser quota\tSTORAGE\t19000\t20480\t92",
            "hana@sso.test\tUser quota\tMESSAGE\t3\t-\t0",
            "bob@example.test\tUser quota\tSTORAGE\t10\t1048576\t0",
            "bob@example.test\tUser quota\tMESSAGE\t95\t100\t95"]
    [full] = quota_findings("mail", inv, sections("\n".join(["== quota", header, *rows])))
    assert (full.ok, full.detail) == (
        False, "fuller than 90% of the quota: bob@example.test 95% of its messages, hana@sso.test 92%")
    [fine] = quota_findings("mail", inv, sections("\n".join(["== quota", header, rows[1], rows[2]])))
    assert (fine.ok, fine.detail) == (True, "2 mailboxes, none fuller than 90% of the quota")
    [silent] = quota_findings("mail", inv, sections("== quota\n== disk"))
    assert (silent.ok, silent.detail) == (False, "Dovecot did not answer")
    assert quota_findings("ext", inv, {}) == []  # no mailboxes there


def test_the_last_good_backup_is_held_to_its_age():
    inv, _ = mail_plan()  # max_age_hours: the default, 26
    hour = 3600
    now = int(NOW.timestamp())

    def found(backup: str, check: str) -> dict:
        return sections(f"== backup\nlast-backup {backup}\nlast-check {check}")

    [fresh] = backup_findings("mail", inv, found(f"{now - 2 * hour} 1a2b3c4d", f"{now - 30 * hour} no errors"), NOW)
    assert (fresh.ok, fresh.detail) == (
        True, "last good backup 2 h ago (snapshot 1a2b3c4d); repository checked 30 h ago")
    [old] = backup_findings("mail", inv, found(f"{now - 27 * hour} 1a2b3c4d", "never"), NOW)
    assert (old.ok, old.detail) == (False, "last good backup 27 h ago (snapshot 1a2b3c4d), more than "
                                           "backup.max_age_hours (26); repository not checked yet")
    [none] = backup_findings("mail", inv, found("never", "never"), NOW)
    assert (none.ok, none.detail) == (False, "no good backup yet; repository not checked yet")
