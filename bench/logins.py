"""IMAP logins per second and the latency of one login, by user source.

From this machine to the lab's mailbox host (993, TLS, a new connection per login), 4
parallel clients, 400 logins each way: a password from the inventory (AUTH PLAIN against
Dovecot's passwd-file), a directory user (found over LDAPS, then a bind as the user, on
every login: nothing is cached) and an OAuth2 token (XOAUTH2, checked at the lab IdP's
introspection endpoint on every login). Prints logins/s, the median and 95th percentile of
one login (connect + TLS + AUTHENTICATE), and what each source adds. Against a lab inventory
with nauthilus.enabled the password logins go through Nauthilus (and the directory, which
Nauthilus does not front yet, is left out); the main lab has no Nauthilus artifact. Needs
the running lab (scripts/lab-up).
"""

import imaplib
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "lab"))
from helpers import PASSWORD, named_context  # noqa: E402
from labenv import INVENTORY  # noqa: E402
from test_directory import DOMAIN, add_entry, delete_entry  # noqa: E402
from test_oidc import token, xoauth2  # noqa: E402

from mailstack.tls import trusted_file  # noqa: E402

LOGINS, CLIENTS, USER = 400, 4, "bob@example.test"


def login_once(method) -> float:
    host = INVENTORY.hosts_with("mailbox")[0]
    start = time.perf_counter()
    with imaplib.IMAP4_SSL(host.address, 993, ssl_context=named_context(CA, host.fqdn), timeout=30) as imap:
        method(imap)
    return time.perf_counter() - start


def measure(label: str, method) -> float:
    login_once(method)  # warm up
    start = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        times = list(pool.map(lambda _: login_once(method), range(LOGINS)))
    wall = time.perf_counter() - start
    median = statistics.median(times)
    p95 = statistics.quantiles(times, n=20)[-1]
    print(f"{label:<28} {LOGINS / wall:7.1f} logins/s   median {median * 1000:6.1f} ms   p95 {p95 * 1000:6.1f} ms")
    return median


CA = str(trusted_file(INVENTORY))


def main() -> None:
    access_token = token(CA, USER)
    print(f"{LOGINS} IMAP logins, {CLIENTS} clients, new TLS connection each")
    gate = INVENTORY.nauthilus["enabled"]
    password = measure(f"password (inventory{', Nauthilus' if gate else ''})", lambda imap: imap.login(USER, PASSWORD))
    if any(d.user_source == "ldap" for d in INVENTORY.domains):
        add_entry("benchuser", f"benchuser@{DOMAIN}", "bench directory pw")
        try:
            directory = measure("password (LDAP directory)",
                                lambda imap: imap.login(f"benchuser@{DOMAIN}", "bench directory pw"))
        finally:
            delete_entry("benchuser")
        print(f"the directory adds {(directory - password) * 1000:.1f} ms per login (median)")
    oauth = measure("token (XOAUTH2, introspect)", lambda imap: imap.authenticate(
        "XOAUTH2", lambda _: xoauth2(USER, access_token).encode()))
    print(f"introspection adds {(oauth - password) * 1000:.1f} ms per login (median)")


if __name__ == "__main__":
    main()
