"""Fixtures for tests against the running lab: hosts over SSH, addresses, the CAs to trust."""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from helpers import lab_resolver
from labenv import INVENTORY, SSH_CONFIG, host

from mailstack.tls import trusted_file


def pytest_collection_modifyitems(items):
    """Every test here needs the running lab: `pytest -m "not lab"` leaves them out."""
    here = str(Path(__file__).parent)
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="session")
def inv():
    return INVENTORY


@pytest.fixture(scope="session", autouse=True)
def lab_is_up():
    if not SSH_CONFIG.exists():
        pytest.fail("the lab is not up: run scripts/lab-up first", pytrace=False)
    for lab_host in INVENTORY.hosts:
        ok = subprocess.run(["ssh", "-F", str(SSH_CONFIG), lab_host.name, "true"],
                            capture_output=True, timeout=30).returncode == 0
        if not ok:
            pytest.fail(f"lab host {lab_host.name} does not answer over ssh: run scripts/lab-up",
                        pytrace=False)


@pytest.fixture(scope="session")
def mail():
    return host("mail")


@pytest.fixture(scope="session")
def ext():
    return host("ext")


@pytest.fixture(scope="session")
def addr():
    return {h.name: h.address for h in INVENTORY.hosts}


@pytest.fixture(scope="session")
def fqdn():
    return {h.name: h.fqdn for h in INVENTORY.hosts}


@pytest.fixture(scope="session")
def ca_file() -> str:
    """Every CA the platform's certificates come from (the lab CA, the lab's ACME CA's roots),
    in one file that stays at its path (test_acme rewrites it when Pebble has a new root)."""
    return str(trusted_file(INVENTORY))


@pytest.fixture(scope="session")
def nameserver() -> str:
    return INVENTORY.hosts_with("dns")[0].address


@pytest.fixture
def tag() -> str:
    """A unique marker to find one test's message among all others."""
    return f"mailstack-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def rspamd_ready(mail):
    """rspamd compiles its rules for a while after a (re)start: wait until it scans."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if mail.run("rspamc -h 127.0.0.1:11334 stat").rc == 0 and \
                mail.socket("tcp://127.0.0.1:11332").is_listening:
            return
        time.sleep(1)
    pytest.fail("rspamd did not become ready within 120 s")


@pytest.fixture(scope="module")
def lab_names(nameserver):
    """This machine resolves lab names through the lab's own DNS (for TLS checks by name)."""
    resolver, original = lab_resolver(nameserver), socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if isinstance(host, str) and host.endswith(".test"):
            host = resolver.resolve(host, "A")[0].address
        return original(host, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo
    yield
    socket.getaddrinfo = original
