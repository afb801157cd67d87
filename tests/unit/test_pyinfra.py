"""pyinfra loads inventory.py and builds every operation, without touching a host."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from unitdata import ROOT, VALID

PYINFRA = str(Path(sys.executable).with_name("pyinfra"))


def run_pyinfra(inventory: str, home: Path, *flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MAILSTACK_CONNECTOR": "fake", "MAILSTACK_INVENTORY": inventory,
           "HOME": str(home), "PYINFRA_FAKE_DELAY": "0", "PYINFRA_FAKE_DELAY_JITTER": "0"}
    return subprocess.run([PYINFRA, "-y", *flags, "inventory.py", "deploy.py"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_lab_inventory_builds_every_operation(tmp_path):
    proc = run_pyinfra("inventories/lab.yml", tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    for operation in ("Files of postfix", "Files of dovecot", "Files of rspamd", "Files of nsd",
                      "Check the postfix configuration", "Reload rspamd (configuration changed)",
                      "Restart dovecot (configuration changed)"):
        assert operation in out
    assert "[@fake/mail] Success" in out and "[@fake/ext]  Success" in out
    # Glewlwyd would answer with the package's admin password: it is installed without starting
    held, installed = out.index("idp: no daemon starts before it is configured"), out.index("idp packages")
    assert held < installed < out.index("idp: daemons may start again")
    # secrets were made under the (temporary) secrets dir, keys private
    keys = list((tmp_path / ".local/state/mailstack/lab").rglob("*.key"))
    assert keys and all(k.stat().st_mode & 0o077 == 0 for k in keys)


def test_the_package_list_refresh_cannot_hold_the_deploy(tmp_path):
    """A stalled mirror or proxy once held a deploy until CI's time ran out: every
    apt-get update the deploy runs has a time limit and is tried again."""
    proc = run_pyinfra("inventories/lab.yml", tmp_path, "-vv")  # -vv: the commands run
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    commands = [line.split(">>> ", 1)[1] for line in out.splitlines() if ">>> " in line and "apt-get update" in line]
    assert commands and all(re.search(r"timeout (-k \d+ )?\d+ apt-get update", c) for c in commands), commands


def test_configs_are_checked_before_the_restart(tmp_path):
    proc = run_pyinfra("inventories/lab.yml", tmp_path)
    out = proc.stdout + proc.stderr
    for service, action in (("postfix", "Reload"), ("rspamd", "Reload"), ("dovecot", "Restart"),
                            ("unbound", "Restart"), ("nsd", "Restart"), ("mailstack-smime", "Restart"),
                            ("clamav-daemon", "Restart"), ("mailstack-peekaboo", "Restart")):
        check = out.index(f"Check the {service} configuration")
        applied = out.index(f"{action} {service} (configuration changed)")
        assert check < applied, service


@pytest.mark.parametrize("example,hosts", [("multi-host.example.yml", ("mail1", "mail2", "smime")),
                                           ("single-host.example.yml", ("mx1",))])
def test_every_example_deploys_under_the_fake_connector(tmp_path, example, hosts):
    proc = run_pyinfra(f"inventories/{example}", tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    for host in hosts:
        assert re.search(rf"\[@fake/{host}\]\s+Success", out), host
    assert "has no deploy yet" not in out  # planned roles are refused by check, never skipped
    # production hosts: kernel settings through pyinfra's sysctl, persisted
    assert "sysctl net.core.somaxconn" in out and "Host name" in out


def test_the_lab_sets_no_kernel_parameters(tmp_path):
    proc = run_pyinfra("inventories/lab.yml", tmp_path)
    out = proc.stdout + proc.stderr
    assert "Host name" in out and "sysctl " not in out  # containers share the lab machine's kernel


def test_invalid_inventory_stops_pyinfra_before_any_connection(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(VALID.replace("policy: none", "policy: rejct"))
    proc = run_pyinfra(str(bad), tmp_path)
    assert proc.returncode != 0
    assert f"{bad}:16 domains[0].dmarc.policy: 'rejct' is not one of" in proc.stderr
    assert "Connected" not in proc.stdout



def test_the_manifests_fact_reads_each_components_units_and_files():
    """What retiring a component removes is read back from the host's manifests as written."""
    from deploys.ops import Manifests, manifest

    written = manifest("backup", ["mailstack-backup.timer"], ["/etc/mailstack/backup.env"])
    output = ["== backup", *written.lines, "== base", "file /etc/hosts"]
    assert Manifests().process(output) == {"backup": ["unit mailstack-backup.timer", "file /etc/mailstack/backup.env"],
                                           "base": ["file /etc/hosts"]}
