"""DKIM key rotation (issue 27) in the lab. `mailstack dkim rotate` names a new selector in a
copy of the lab inventory, deploys to publish its key, waits until the lab's DNS serves it,
and deploys to sign with it, while alice keeps sending to ext: every message verifies there,
signed first with the old key, then with the new, never back. Safety (nobody's mail signed with
a key receivers cannot find): the deploy that publishes the new key keeps signing with the old
one. `retire` then takes the old key out of the DNS, and new mail still verifies."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import dkim
import dns.resolver
import pytest
from helpers import Sending, imap_find, lab_resolver
from labenv import INVENTORY, ROOT, run_deploy

from mailstack.dkim import resolver, served

DOMAIN, NEW = "example.test", "r1"


def mailstack(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mailstack.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)


@pytest.fixture
def rotated_copy(tmp_path):
    """A copy of the lab inventory for the rotation to edit, with the lab as its inventory
    says (the new key not published yet); the lab as it was afterwards."""
    if served(INVENTORY, INVENTORY.domain(DOMAIN), NEW, resolver(INVENTORY.lab_nameservers())):
        assert run_deploy().returncode == 0  # left over from a run that was stopped
    copy = tmp_path / "lab.yml"
    copy.write_text(Path(INVENTORY.file).read_text())
    yield copy
    done = run_deploy()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_a_rotation_keeps_every_message_verifiable_and_retires_the_old_key(rotated_copy, mail, addr, fqdn, ca_file,
                                                                          nameserver, tag, rspamd_ready):
    steps = {}  # each line the command printed: when
    command = [sys.executable, "-m", "mailstack.cli", "dkim", "-i", str(rotated_copy), "rotate", "--selector", NEW,
               "--wait", "120", DOMAIN]
    with Sending(addr, fqdn, ca_file, tag) as sending, \
            subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as rotation:
        for line in rotation.stdout:
            steps[line.strip()] = time.monotonic()
    printed = "\n".join(steps)
    assert rotation.returncode == 0, printed
    assert f"dkim: {DOMAIN} signs with '{NEW}'" in printed
    assert f'dkim: {{selector: "{NEW}", previous: "mail"}}' in rotated_copy.read_text()
    publishing = next(line for line in steps if "(publish " in line)
    switching = next(line for line in steps if "(sign with " in line)
    first_log = re.search(r"log: (\S+)\)", publishing)[1]
    assert f"DKIM: {DOMAIN} signs with 'mail' until the DNS serves {NEW}._domainkey.{DOMAIN}" in \
        Path(first_log).read_text()
    resolver = lab_resolver(nameserver)

    def txt(name: bytes, timeout: float = 5) -> bytes:
        return b"".join(resolver.resolve(name.decode().rstrip("."), "TXT")[0].strings)

    def verified_selector(subject: str) -> str:
        raw = imap_find(addr["ext"], fqdn["ext"], ca_file, "carol@ext.test", subject, timeout=20)
        if raw is None:  # a milter session rspamd's reload ended under it: the mail waits (451), sent on now
            mail.check_output("postqueue -f")
            raw = imap_find(addr["ext"], fqdn["ext"], ca_file, "carol@ext.test", subject)
        assert raw is not None, f"{subject} did not reach ext"
        assert dkim.verify(raw, dnsfunc=txt), f"{subject} does not verify at ext"
        return re.search(rb"\bs=([a-z0-9-]+);", raw.split(b"DKIM-Signature:", 1)[1])[1].decode()

    # every message arrives and verifies. None sent before the switching deploy began (2 s
    # before: the gateway's hop) was signed with the new key: the publishing deploy kept the old
    # one. After the switch, the new key signs.
    selectors = {subject: verified_selector(subject) for subject, _ in sending.sent}
    early = [selectors[subject] for subject, when in sending.sent if when < steps[switching] - 2]
    assert early and set(early) == {"mail"}, selectors
    deadline = time.monotonic() + 30  # rspamd's reload: its new workers take over within seconds
    while verified_selector(sending.send()) != NEW:
        assert time.monotonic() < deadline, "rspamd did not sign with the new key after the rotation"

    retired = mailstack("dkim", "-i", str(rotated_copy), "retire", DOMAIN)
    assert retired.returncode == 0, retired.stdout + retired.stderr
    assert f'dkim: {{selector: "{NEW}"}}' in rotated_copy.read_text()
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve(f"mail._domainkey.{DOMAIN}", "TXT")
    assert verified_selector(sending.send()) == NEW
