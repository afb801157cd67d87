"""Webmail figures on the running lab (issue 28): the time from the login page to the inbox
rendered in a real browser (Debian's Chromium through Selenium, as tests/lab/test_webmail.py
drives it), and how many inbox views the webmail host serves per second, for the full inbox page
and for the message list request the page makes, with CONCURRENCY clients for SECONDS each.

    .venv/bin/python bench/webmail.py [RUNS] [SECONDS] [CONCURRENCY]
"""

import http.client
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "lab")]

from browser import SITES, WEBMAIL, Browser, trusting_home  # noqa: E402
from helpers import NamedContext, tls_context  # noqa: E402
from labenv import INVENTORY  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from mailstack.tls import trusted_file  # noqa: E402

DOMAIN, USER = "example.test", "alice@example.test"


def login_to_inbox(home: Path, run: int) -> float:
    """Seconds from asking for the login page to the inbox's rows on screen (a new browser)."""
    browser = Browser(home, f"bench-{run}")
    try:
        start = time.perf_counter()
        browser.login(DOMAIN, USER)
        WebDriverWait(browser.driver, 60).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#messagelist tbody tr") or "The list is empty" in d.page_source)
        return time.perf_counter() - start
    finally:
        browser.close()


def session(home: Path) -> tuple[str, str]:
    """(cookies, request token) of a logged-in browser session, for plain HTTP clients."""
    browser = Browser(home, "bench-session")
    try:
        browser.login(DOMAIN, USER)
        browser.wait("#mailboxlist")
        token = re.search(r'"request_token":"([^"]+)"', browser.driver.page_source).group(1)
        return browser.cookie_header(), token
    finally:
        browser.close()


def rate(ca_file: str, path: str, headers: dict, seconds: float, concurrency: int) -> tuple[float, int]:
    """(requests per second, failures) for `path`, each client on its own kept-alive connection."""
    counts, failures, stop = [0] * concurrency, [0], time.monotonic() + seconds

    def client(number: int) -> None:
        connection = http.client.HTTPSConnection(WEBMAIL.address, 443, timeout=30,
                                                 context=NamedContext(tls_context(ca_file), SITES[DOMAIN]))
        while time.monotonic() < stop:
            connection.request("GET", path, headers={"Host": SITES[DOMAIN], **headers})
            response = connection.getresponse()
            body = response.read()
            if response.status != 200 or b"rcmloginuser" in body:
                failures[0] += 1
            counts[number] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.monotonic() - started), failures[0]


def main() -> None:
    runs, seconds, concurrency = (int(a) for a in (sys.argv[1:] + ["5", "10", "4"][len(sys.argv) - 1:])[:3])
    ca_file = str(trusted_file(INVENTORY))
    home = trusting_home(Path(tempfile.mkdtemp(prefix="bench-webmail-")), ca_file)
    times = [login_to_inbox(home, run) for run in range(runs)]
    print(f"login page to inbox rendered (Chromium, {runs} runs): best {min(times):.2f} s, "
          f"median {statistics.median(times):.2f} s")
    cookies, token = session(home)
    for name, path, headers in (
            ("inbox page", "/?_task=mail&_mbox=INBOX", {"Cookie": cookies}),
            ("message list", "/?_task=mail&_action=list&_mbox=INBOX&_remote=1",
             {"Cookie": cookies, "X-Roundcube-Request": token, "X-Requested-With": "XMLHttpRequest"})):
        per_second, failed = rate(ca_file, path, headers, seconds, concurrency)
        print(f"{name}: {per_second:.1f} per second ({concurrency} clients, {seconds} s, {failed} failed)")


if __name__ == "__main__":
    main()
