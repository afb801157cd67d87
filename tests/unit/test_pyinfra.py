"""pyinfra loads inventory.py and builds every operation, without touching a host."""

import os
import subprocess
import sys
from pathlib import Path

from unitdata import ROOT, VALID

PYINFRA = str(Path(sys.executable).with_name("pyinfra"))


def run_pyinfra(inventory: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MAILSTACK_CONNECTOR": "fake", "MAILSTACK_INVENTORY": inventory,
           "HOME": str(home), "PYINFRA_FAKE_DELAY": "0", "PYINFRA_FAKE_DELAY_JITTER": "0"}
    return subprocess.run([PYINFRA, "-y", "inventory.py", "deploy.py"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_lab_inventory_builds_every_operation(tmp_path):
    proc = run_pyinfra("inventories/lab.yml", tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    for operation in ("Render /etc/postfix/main.cf", "Render /etc/dovecot/dovecot.conf",
                      "Render /etc/rspamd/local.d/dkim_signing.conf", "Render /etc/nsd/nsd.conf",
                      "Check the postfix configuration", "Restart rspamd (configuration changed)"):
        assert operation in out
    assert "[@fake/mail] Success" in out and "[@fake/ext]  Success" in out
    # secrets were made under the (temporary) secrets dir, keys private
    keys = list((tmp_path / ".local/state/mailstack/lab").rglob("*.key"))
    assert keys and all(k.stat().st_mode & 0o077 == 0 for k in keys)


def test_configs_are_checked_before_the_restart(tmp_path):
    proc = run_pyinfra("inventories/lab.yml", tmp_path)
    out = proc.stdout + proc.stderr
    for service in ("postfix", "dovecot", "rspamd", "unbound", "nsd", "mailstack-smime"):
        check = out.index(f"Check the {service} configuration")
        restart = out.index(f"Restart {service} (configuration changed)")
        assert check < restart, service


def test_multi_host_example_builds_every_operation(tmp_path):
    proc = run_pyinfra("inventories/multi-host.example.yml", tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    for host in ("mail1", "mail2", "smime"):
        assert f"[@fake/{host}]" in out and "Success" in out
    assert "has no deploy yet" not in out  # planned roles are refused by check, never skipped


def test_invalid_inventory_stops_pyinfra_before_any_connection(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(VALID.replace("policy: none", "policy: rejct"))
    proc = run_pyinfra(str(bad), tmp_path)
    assert proc.returncode != 0
    assert f"{bad}:16 domains[0].dmarc.policy: 'rejct' is not one of" in proc.stderr
    assert "Connected" not in proc.stdout

