"""The hosts as deployed: units, listening ports, lab DNS, idempotent redeploy."""

import hashlib
import imaplib
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import PASSWORD, lab_resolver, named_context
from labenv import INVENTORY, PLANS, ROOT, run_deploy
from labenv import host as machine

from deploys import COMPONENTS, configured
from mailstack.conventions import DOVECOT_BLOCKS

ANY = "*"
# what each host must run, must not run, and listen on (nothing else): from the component
# declarations through the host's plan, the same source the deploys and the firewall use
SERVICES = {name: {u for c in plan.components for u in c.units} for name, plan in PLANS.items()}
NOT_RUNNING = {name: {u for c in COMPONENTS for u in c.units} - SERVICES[name] for name in PLANS}
PORTS = {name: {(ANY if address is None else address, port) for address, port in plan.listeners}
         for name, plan in PLANS.items()}


def test_the_expectations_cover_the_whole_lab():
    """The derived tables say what a reader expects of the lab (a guard on the derivation)."""
    assert SERVICES["mail"] >= {"postfix", "dovecot", "rspamd", "redis-server", "unbound", "mailstack-smime"}
    assert SERVICES["ext"] >= {"postfix", "dovecot", "unbound", "nsd"} and "rspamd" in NOT_RUNNING["ext"]
    assert {(ANY, 25), (ANY, 110), ("127.0.0.1", 11332), ("10.77.0.10", 10025), ("10.77.0.10", 10026)} <= PORTS["mail"]
    assert (ANY, 110) not in PORTS["ext"] and ("10.77.0.20", 53) in PORTS["ext"]


@pytest.fixture(params=sorted(PLANS))
def lab_host(request):
    """Every host of the lab inventory in use (the main lab, or the multi-host one)."""
    return request.param, machine(request.param)


def test_services_enabled_and_running(lab_host):
    name, host = lab_host
    for service in SERVICES[name]:
        assert host.service(service).is_enabled, f"{service} not enabled on {name}"
        assert host.service(service).is_running, f"{service} not running on {name}"
    for service in NOT_RUNNING[name]:
        assert not host.service(service).is_running, f"{service} should not run on {name}"
    # a unit a timer starts may fail once when systemd in a container cannot attach it to its
    # cgroup (status 219/CGROUP); its next run clears that: a failure that stays is a failure
    deadline = time.monotonic() + 30
    while (failed := host.run("systemctl --failed --no-legend --plain").stdout.strip()) and time.monotonic() < deadline:
        time.sleep(2)
    assert failed == ""


DOCKER_RESOLVER = "127.0.0.11"  # in a Vagrant docker machine: docker's, asking the machine's own unbound


def listening(host) -> set[tuple[str, int]]:
    found = set()
    docker = host.file("/.dockerenv").exists
    for line in host.check_output("ss -Htln").splitlines():
        local = line.split()[3]
        address, port = local.rsplit(":", 1)
        address = address.strip("[]").split("%")[0]
        if docker and address == DOCKER_RESOLVER:
            continue
        found.add((ANY if address in ("0.0.0.0", "::", "*") else address, int(port)))
    return found


def test_exactly_the_expected_ports_listen(lab_host):
    """Exactly the planned ports; a daemon an earlier test restarted (SeaweedFS elects its
    master before S3 listens, some seconds) is given half a minute to be back."""
    name, host = lab_host
    deadline = time.monotonic() + 30
    while (found := listening(host)) != PORTS[name] and not found - PORTS[name] and time.monotonic() < deadline:
        time.sleep(1)
    assert found == PORTS[name]


def test_no_default_route_in_the_lab(lab_host):
    _, host = lab_host
    assert "default" not in host.check_output("ip route show")
    assert host.run("ip route get 192.0.2.1").rc != 0


def test_lab_dns_serves_the_generated_records(inv, nameserver, fqdn, addr):
    resolver = lab_resolver(nameserver)
    mx = resolver.resolve("example.test", "MX")
    assert [str(r.exchange).rstrip(".") for r in mx] == [fqdn["mail"]]
    assert [r.address for r in resolver.resolve(fqdn["mail"], "A")] == [addr["mail"]]
    spf = [b"".join(r.strings).decode() for r in resolver.resolve("example.test", "TXT")]
    assert spf == [f"v=spf1 ip4:{addr['mail']} -all"]
    dmarc = b"".join(resolver.resolve("_dmarc.example.test", "TXT")[0].strings).decode()
    assert dmarc.startswith("v=DMARC1; p=quarantine;")  # the stage lab.yml sets
    dkim = b"".join(resolver.resolve("mail._domainkey.example.test", "TXT")[0].strings).decode()
    assert dkim.startswith("v=DKIM1; k=rsa; p=")


def test_hosts_resolve_lab_names_and_refuse_the_rest(mail):
    assert mail.run("getent hosts ext.lab.test").stdout.split()[0] == "10.77.0.20"
    assert mail.run("getent hosts 10.77.0.20").stdout.split()[1] == "ext.lab.test"  # PTR
    # names outside the lab get an immediate answer, never a hang
    result = mail.run("timeout 5 getent hosts example.com")
    assert result.rc == 2  # not found (REFUSED by unbound), not 124 (timeout)


def deploy(inventory: Path | None = None, limit: str | None = None) -> tuple[str, str, str, str]:
    """Run the lab deploy (see run_deploy); (operations, changed, errors, unchanged) from its summary."""
    proc = run_deploy(inventory, limit)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    total = re.search(r"Grand total\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)", output)
    assert total, output[-2000:]
    return total.groups()


def test_a_new_user_restarts_nothing_and_a_removed_users_sessions_end(mail, addr, fqdn, ca_file, tmp_path):
    """Adding a user must not end every other user's open IMAP and POP3 sessions (on an ISP's
    platform, thousands): Dovecot reads its user files again by itself. Removing one must end
    that user's sessions at once, not leave an open session reading mail after the login went."""
    lab = Path(INVENTORY.file).read_text()
    alice = re.search(r"  - address: alice@example.test\n(?:    .*\n)*?    password: (.*)\n", lab).group(1)
    grown = tmp_path / "lab.yml"
    grown.write_text(lab.replace("\nusers:\n", f"\nusers:\n  - address: newcomer@example.test\n    password: {alice}\n", 1))

    def imap(user: str) -> imaplib.IMAP4_SSL:
        session = imaplib.IMAP4_SSL(addr["mail"], 993, ssl_context=named_context(ca_file, fqdn["mail"]), timeout=30)
        session.login(user, PASSWORD)
        session.select("INBOX", readonly=True)
        return session

    deploy()  # the lab as its inventory says, whatever a test before left
    started = mail.check_output("systemctl show -p MainPID --value dovecot")
    with imap("alice@example.test") as neighbour:
        restored = False
        try:
            deploy(grown)
            newcomer = imap("newcomer@example.test")  # the newcomer logs in at once
            try:
                deploy()  # the inventory without the newcomer
                restored = True
                with pytest.raises(imaplib.IMAP4.abort):
                    newcomer.noop()
                    newcomer.select("INBOX", readonly=True)
            finally:
                newcomer.shutdown()
        finally:
            if not restored:
                deploy()
        assert neighbour.noop()[0] == "OK" and neighbour.select("INBOX", readonly=True)[0] == "OK"
    assert mail.check_output("systemctl show -p MainPID --value dovecot") == started, "Dovecot was restarted"
    with pytest.raises(imaplib.IMAP4.error):
        imap("newcomer@example.test")
    assert ("sessions ended, the user's login changed: newcomer@example.test"
            in mail.check_output("journalctl -t mailstack-logins -o cat"))


def test_quota_and_autoexpunge_follow_the_inventory(mail, inv):
    for user in ("alice@example.test", "dave@tenant-b.test"):
        quota = mail.check_output(f"doveadm -f flow quota get -u {user}")
        expected = inv.users[[u.address for u in inv.users].index(user)].quota
        kib = int(expected[:-1]) * {"K": 1, "M": 1024, "G": 1024 ** 2}[expected[-1]]
        assert re.search(rf"Type=STORAGE Value=\d+ Limit={kib} ", quota), quota
    assert mail.check_output("doveconf -h mail_location").startswith("maildir:")
    config = mail.check_output("doveconf -n")
    units = {"d": "days", "w": "weeks", "h": "hours"}
    for box, key in (("Trash", "autoexpunge_trash"), ("Junk", "autoexpunge_junk")):
        value = inv.dovecot[key]
        block = config.split(f"mailbox {box} {{")[1].split("}")[0]
        assert f"autoexpunge = {value[:-1]} {units[value[-1]]}" in block


def test_dovecot_reads_the_blocks_components_add(mail):
    """The extension point for Dovecot configuration blocks is real: a block in DOVECOT_BLOCKS
    is read by Dovecot itself (and gone with its file)."""
    block = f"{DOVECOT_BLOCKS}/lab-probe.conf"
    before = mail.check_output("doveconf -h mail_max_userip_connections")
    try:
        mail.check_output(f"echo 'mail_max_userip_connections = 77' > {block}")
        assert mail.check_output("doveconf -h mail_max_userip_connections") == "77" != before
    finally:
        mail.run(f"rm -f {block}")
    assert mail.check_output("doveconf -h mail_max_userip_connections") == before


def test_lab_up_twice_is_a_no_op(mail):
    boot = mail.check_output("cat /proc/sys/kernel/random/boot_id; systemctl show -p ExecMainPID postfix@-")
    proc = subprocess.run([str(Path(sys.executable).with_name("mailstack")), "lab", "up"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "already up" in proc.stderr
    assert mail.check_output("cat /proc/sys/kernel/random/boot_id; systemctl show -p ExecMainPID postfix@-") == boot


def test_a_component_switched_off_leaves_nothing_behind_and_comes_back(mail):
    """Backups off in the inventory: the next deploy stops and disables their timers and
    removes exactly the files they had put on `mail` (the lock keeper's too), nothing of
    another component; on again, everything is back, and one more deploy changes nothing."""
    backup = ["/usr/local/sbin/mailstack-backup", "/etc/mailstack/backup.env",
              "/etc/systemd/system/mailstack-backup.timer", "/etc/systemd/system/mailstack-backup-check.service",
              "/usr/local/sbin/mailstack-backup-lock", "/etc/mailstack/backup-lock.keys",
              "/etc/systemd/system/mailstack-backup-lock.timer"]
    manifests = "/var/lib/mailstack/components"
    others = ("/etc/postfix/main.cf", "/etc/dovecot/dovecot.conf")  # what the lab's inventory renders for them
    kept = {f.path: hashlib.sha256(f.content).hexdigest() for c in PLANS["mail"].components
            for s in configured(c, PLANS["mail"]) for f in s.files if f.path in others}
    assert set(kept) == set(others)
    identities = mail.file("/etc/seaweedfs/s3.json").sha256sum
    assert all(mail.file(path).exists for path in backup)
    off = Path(INVENTORY.file).with_name(".lab-without-backups.yml")
    text = Path(INVENTORY.file).read_text()
    assert "backup:  # restic" in text and "\n  enabled: true\n\nldap:" in text
    off.write_text(text.replace("\n  enabled: true\n\nldap:", "\n  enabled: false\n\nldap:"))
    try:
        deploy(off, limit="mail")  # backups are mail's alone: ext has nothing to change
        assert [path for path in backup if mail.file(path).exists] == []
        for timer in ("mailstack-backup.timer", "mailstack-backup-check.timer", "mailstack-backup-lock.timer"):
            assert mail.run(f"systemctl is-enabled {timer}").rc != 0, timer  # gone, or at least disabled
            assert mail.run(f"systemctl is-active {timer}").rc != 0, timer
        assert not mail.file(f"{manifests}/backup").exists and mail.file(f"{manifests}/postfix").exists
        # the S3 identities lose the backup keys; Postfix and Dovecot stay as the inventory has them
        assert mail.file("/etc/seaweedfs/s3.json").sha256sum != identities
        assert {path: mail.file(path).sha256sum for path in kept} == kept
        assert mail.service("postfix").is_running and mail.service("dovecot").is_running
    finally:
        off.unlink()
        deploy(limit="mail")
    assert all(mail.file(path).exists for path in backup)
    assert mail.service("mailstack-backup.timer").is_enabled and mail.service("mailstack-backup-lock.timer").is_running
    operations, changed, errors, unchanged = deploy(limit="mail")
    assert (changed, errors) == ("-", "-") and unchanged == operations


def test_second_deploy_changes_nothing():
    deploy()  # converge, whatever state the lab was left in
    operations, changed, errors, unchanged = deploy()
    assert (changed, errors) == ("-", "-")
    assert unchanged == operations and int(operations) > 100
