"""The lab's own ACME CA (Pebble on its `acme_ca` host): the root the hosts and the tests trust.

Pebble makes a new root at each start and keeps none, so the lab fetches the current one from
its management port (HTTPS with the host's lab-CA certificate) and keeps the newest few
(`tls.LAB_ACME_ROOTS`: certificates issued before a restart still chain to theirs). On a fresh
lab the CA is deployed first, alone, so that the whole deploy after it already trusts it."""

from __future__ import annotations

import socket
import ssl
import time

from mailstack import tls
from mailstack.conventions import ACME_CA_MANAGEMENT_PORT as MANAGEMENT_PORT
from mailstack.conventions import ACME_CA_ROLE as ROLE
from mailstack.inventory import Inventory
from mailstack.lab.util import LabError, log
from mailstack.remote import deploy
from mailstack.secrets import lab_acme_roots, lab_ca


def current_root(inv: Inventory, wait: float = 0) -> str:
    """The CA's current root (PEM), waiting up to `wait` seconds for it to answer."""
    host = inv.hosts_with(ROLE)[0]
    context = ssl.create_default_context(cafile=str(lab_ca(inv)[0]))
    deadline = time.monotonic() + wait
    while True:
        try:
            with socket.create_connection((host.address, MANAGEMENT_PORT), timeout=10) as raw, \
                    context.wrap_socket(raw, server_hostname=host.fqdn) as conn:
                conn.sendall(f"GET /roots/0 HTTP/1.0\r\nHost: {host.fqdn}\r\n\r\n".encode())
                answer = b"".join(iter(lambda: conn.recv(65536), b""))
        except OSError as err:
            if time.monotonic() > deadline:
                raise LabError(f"the lab's ACME CA on {host.name} does not answer on port {MANAGEMENT_PORT} "
                               f"({err})") from None
            time.sleep(1)
            continue
        head, _, body = answer.partition(b"\r\n\r\n")
        roots = tls.pem_blocks(body.decode(errors="replace"))
        if not head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")) or len(roots) != 1:
            raise LabError(f"the lab's ACME CA on {host.name} answered without a root: {head[:80]!r}")
        return roots[0]


def trust_current_root(inv: Inventory, wait: float = 0) -> bool:
    """The lab keeps the CA's current root (and the newest before it): whether it was new,
    so that a deploy must put it into the hosts' trust stores."""
    path = lab_acme_roots(inv)
    known = tls.pem_blocks(path.read_text()) if path.is_file() else []
    root = current_root(inv, wait)
    if root in known:
        return False
    kept = [*known, root][-tls.LAB_ACME_ROOTS:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(block + "\n" for block in kept))
    return True


def ensure_ca(inv: Inventory) -> None:
    """`lab up`, `lab acme-roots`: the lab's ACME CA runs and its root is kept, deploying the CA's host alone
    first where it does not answer yet (a fresh lab). Nothing to do in a lab without one."""
    if not tls.lab_acme_ca(inv):
        return
    try:
        if trust_current_root(inv):
            log("the ACME CA has a new root (it restarted): the next deploy puts it into the trust stores")
        else:
            log("the ACME CA runs; its root is known")
        return
    except LabError:
        pass
    log(f"deploying the lab's ACME CA first ({', '.join(h.name for h in inv.hosts_with(ROLE))}): "
        "the hosts must trust its root before they ask it for certificates")
    done = deploy(inv.file, limit=ROLE)
    if done.returncode != 0:
        raise LabError(f"deploying the ACME CA failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    trust_current_root(inv, wait=60)
    log("the ACME CA runs; its root is kept for the hosts and the tests")
