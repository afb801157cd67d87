"""Inventory values that would inject configuration: each gets a located error from
`mailstack check` (no traceback, nothing deployed); rendering refuses line breaks anyway."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from unitdata import LAB_CLAMAV, ROOT, VALID

from mailstack.component import UnsafeValue, guard
from mailstack.inventory import check_text
from mailstack.plan import plans
from mailstack.pyinfra_data import host_data

PASSWORD_LINE = '"{SHA512-CRYPT}$6$abcdefgh$0123456789abcdef"'

# (name, VALID -> hostile text, text on the offending line, expected "PATH: message" start)
ATTEMPTS = [
    ("newline in relay_host opens a relay",
     VALID + 'postfix:\n  relay_host: "smtp.example\\nmynetworks = 0.0.0.0/0"\n', "relay_host",
     "postfix.relay_host: 'smtp.example\\nmynetworks = 0.0.0.0/0' is not a relay host"),
    ("space in relay_host", VALID + "postfix:\n  relay_host: smtp.example permit\n", "relay_host",
     "postfix.relay_host: 'smtp.example permit' is not a relay host"),
    ("colon in a password hash splits passwd-file columns",
     VALID.replace(PASSWORD_LINE, '"{SHA512-CRYPT}$6$abcdefgh$0123456789:0:0::/root"'), "SHA512",
     "users[0].password: '{SHA512-CRYPT}$6$abcdefgh$0123456789:0:0::/root' is not a crypt hash"),
    ("newline in a password hash", VALID.replace(PASSWORD_LINE, '"{SHA512-CRYPT}$6$abcdefgh$01234567\\nx"'),
     "SHA512", "users[0].password: "),
    ("local part starting with # turns map lines into comments",
     VALID.replace("address: ann@one.example", "address: '#ann@one.example'"), "#ann",
     "users[0].address: '#ann@one.example' is not a valid e-mail address"),
    ("local part climbing into another mailbox",
     VALID.replace("address: ann@one.example", "address: ../two.example/ben@one.example"), "../two",
     "users[0].address: '../two.example/ben@one.example' is not a valid e-mail address"),
    ("double dot in a local part", VALID.replace("address: ann@one.example", "address: a..nn@one.example"),
     "a..nn", "users[0].address: 'a..nn@one.example' is not a valid e-mail address"),
    ("space in an address", VALID.replace("address: ann@one.example", "address: 'ann x@one.example'"),
     "ann x", "users[0].address: 'ann x@one.example' is not a valid e-mail address"),
    ("comma in an alias target", VALID.replace("to: [ann@one.example]", "to: ['ann@one.example,root@x.example']"),
     "to: [", "aliases[0].to[0]: 'ann@one.example,root@x.example' is not a valid e-mail address"),
    ("brackets in a deny list", VALID.replace("    dmarc:\n", "    deny: {senders: ['[x]@a.example']}\n    dmarc:\n"),
     "deny:", "domains[0].deny.senders[0]: '[x]@a.example' is not an address or @domain"),
    ("newline in a certificate path", VALID + 'tls:\n  files: [{host: mx1, certificate: "a\\nb", key: k}]\n',
     "certificate", "tls.files[0].certificate: 'a\\nb' is not a usable path"),
    ("Jinja syntax in a display name", VALID.replace("address: ann@one.example\n",
                                                     "address: ann@one.example\n    name: '{{ 7*7 }}\"<x>'\n"),
     "7*7", "users[0].name: '{{ 7*7 }}\"<x>' is not a valid display name"),
    ("newline in a tenant name", VALID.replace("tenant: second", 'tenant: "second\\nx"'), "tenant:",
     "domains[1].tenant: 'second\\nx' is not a valid tenant name"),
    ("upper-case domain", VALID.replace("name: two.example", "name: Two.Example"), "Two.Example",
     "domains[1].name: 'Two.Example' is not a valid domain name"),
    ("send_as another tenant's address",
     VALID.replace("address: ann@one.example\n", "address: ann@one.example\n    send_as: [ben@two.example]\n"),
     "send_as", "users[0].send_as[0]: 'ben@two.example' is not an address of tenant 'one.example'"),
    ("send_as a foreign brand",
     VALID.replace("address: ann@one.example\n", "address: ann@one.example\n    send_as: [security@paypal.com]\n"),
     "send_as", "users[0].send_as[0]: 'security@paypal.com' is not an address of tenant 'one.example'"),
    ("SSH user with shell syntax", VALID.replace("address: 192.0.2.2\n", "address: 192.0.2.2\n    ssh: {user: 'root; id'}\n"),
     "ssh:", "hosts[1].ssh.user: 'root; id' is not a valid user name"),
    ("host keys not verified outside a lab",
     VALID.replace("address: 192.0.2.2\n", "address: 192.0.2.2\n    ssh: {verify_host_key: false}\n"),
     "verify_host_key", "hosts[1].ssh.verify_host_key: host keys are always verified outside a lab"),
    ("a value that is not deployed yet", VALID + "tls:\n  source: acme\n  acme_challenge: dns-01\n", "acme_challenge:",
     "tls.acme_challenge: 'dns-01' is not implemented yet (planned: DNS-01 challenges)"),
]


@pytest.mark.parametrize("case", ATTEMPTS, ids=[c[0] for c in ATTEMPTS])
def test_injection_attempts_get_a_located_error_and_no_traceback(case, tmp_path):
    _, text, needle, expected = case
    path = tmp_path / "hostile.yml"
    path.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "mailstack.cli", "check", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    line = next(i for i, row in enumerate(text.splitlines(), 1) if needle in row)
    assert f"{path}:{line} {expected}" in proc.stderr, proc.stderr
    assert "nothing was deployed" in proc.stderr


def test_at_least_fifteen_injection_attempts_are_covered():
    assert len(ATTEMPTS) >= 15


def test_pyinfra_with_a_hostile_inventory_touches_no_host(tmp_path):
    path = tmp_path / "hostile.yml"
    path.write_text(ATTEMPTS[0][1])
    env = {**os.environ, "MAILSTACK_CONNECTOR": "fake", "MAILSTACK_INVENTORY": str(path), "HOME": str(tmp_path)}
    proc = subprocess.run([str(Path(sys.executable).with_name("pyinfra")), "-y", "inventory.py", "deploy.py"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "nothing was deployed" in proc.stderr
    assert "Connected" not in proc.stdout


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\0b", {"k": ["x", "y\nz"]}, ("ok", "bad\n")])
def test_rendering_refuses_line_breaks_whatever_the_schema_says(value):
    with pytest.raises(UnsafeValue, match="line break or NUL"):
        guard({"relay_host": value}, "/etc/postfix/main.cf")


def test_rendering_passes_ordinary_values():
    assert guard({"a": ["x", 1, None, {"b": "c"}]}) == {"a": ["x", 1, None, {"b": "c"}]}


def test_ssh_host_keys_are_verified_strictly_outside_the_lab(tmp_path):
    text = VALID.replace("address: 192.0.2.2\n", f"address: 192.0.2.2\n    ssh: {{known_hosts: {tmp_path}/kh}}\n")
    inv = check_text(text, "inv.yml")
    plan = plans(inv)
    plain, pinned = (host_data(inv, h, plan[h.name]) for h in inv.hosts)
    assert plain["ssh_strict_host_key_checking"] == "yes"  # not pyinfra's accept-new
    assert "ssh_known_hosts_file" not in plain  # the user's own ~/.ssh/known_hosts
    assert pinned["ssh_strict_host_key_checking"] == "yes"
    assert pinned["ssh_known_hosts_file"] == f"{tmp_path}/kh"


def test_only_a_lab_may_skip_host_key_checks():
    lab = check_text(VALID.replace("  postmaster: postmaster@one.example\n",
                                   "  postmaster: postmaster@one.example\n  lab: true\n")
                     .replace("address: 192.0.2.2\n", "address: 192.0.2.2\n    ssh: {verify_host_key: false}\n")
                     + LAB_CLAMAV, "inv.yml")
    data = host_data(lab, lab.host("other"), plans(lab)["other"])
    assert data["ssh_strict_host_key_checking"] == "off" and data["ssh_known_hosts_file"] == "/dev/null"
