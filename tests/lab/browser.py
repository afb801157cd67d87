"""A real browser for the webmail tests and bench/webmail.py: Debian's Chromium, headless,
driven by Selenium through Debian's chromedriver. It trusts the lab's CAs through its own NSS
database (no certificate error is ignored), finds the lab's names at the lab's addresses, and
keeps a screenshot of each step in test-artifacts/webmail/."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from helpers import PASSWORD
from labenv import INVENTORY
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait

from mailstack.dns import webmail_name

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "webmail"
WEBMAIL = INVENTORY.hosts_with("webmail")[0]
IDP = INVENTORY.hosts_with("idp")[0]
SITES = {d.name: webmail_name(d) for d in INVENTORY.domains if d.webmail}
# what Chromium needs to run here: no sandbox (root), and nothing that calls out to the Internet
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1280,900")


def url(domain: str, path: str = "/") -> str:
    return f"https://{SITES[domain]}{path}"


def trusting_home(home: Path, ca_file: str) -> Path:
    """`home` with an NSS database (Chromium's trust store) holding every CA in `ca_file`."""
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True, exist_ok=True)
    subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-N", "--empty-password"], check=True)
    pems = re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", Path(ca_file).read_text(), re.S)
    for number, pem in enumerate(pems):
        cert = home / f"ca{number}.pem"
        cert.write_text(pem + "\n")
        subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-A", "-t", "C,,", "-n", f"lab-{number}", "-i", str(cert)],
                       check=True)
    return home


class Browser:
    """One headless Chromium with a profile of its own (its own cookies)."""

    def __init__(self, home: Path, name: str):
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        rules = ", ".join([*(f"MAP {site} {WEBMAIL.address}" for site in SITES.values()),
                           f"MAP {IDP.fqdn} {IDP.address}", "EXCLUDE localhost"])
        for flag in (*FLAGS, f"--user-data-dir={home / ('profile-' + name)}", f"--host-resolver-rules={rules}"):
            options.add_argument(flag)
        service = Service("/usr/bin/chromedriver", env={"HOME": str(home), "PATH": "/usr/bin:/bin"})
        self.driver = webdriver.Chrome(options=options, service=service)
        self.home, self.name, self.steps = home, name, 0
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def another(self, name: str) -> Browser:
        """A second browser (another person), trusting the same CAs."""
        return Browser(self.home, name)

    def shot(self, step: str) -> None:
        self.steps += 1
        self.driver.save_screenshot(str(ARTIFACTS / f"{self.name}-{self.steps:02d}-{step}.png"))

    def wait(self, css: str, timeout: float = 30):
        try:
            return WebDriverWait(self.driver, timeout).until(ready.visibility_of_element_located((By.CSS_SELECTOR, css)))
        except TimeoutException:
            self.shot(f"waited-for-{re.sub(r'[^a-z]+', '-', css)}")
            raise

    def click(self, css: str) -> None:
        """Click the first visible element `css` matches."""
        next(e for e in self.driver.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()).click()

    def login(self, domain: str, user: str, secret: str = PASSWORD) -> None:
        self.driver.get(url(domain))
        self.wait("#rcmloginuser").send_keys(user)
        self.driver.find_element(By.CSS_SELECTOR, "#rcmloginpwd").send_keys(secret)
        self.shot("login-form")
        self.driver.find_element(By.CSS_SELECTOR, "#rcmloginsubmit").click()

    def inbox_row(self, subject: str, timeout: float = 60):
        """The message list's row of `subject` (the page reloaded until it shows), or None."""
        deadline = time.monotonic() + timeout
        while True:
            self.wait("#layout-list")
            try:
                return WebDriverWait(self.driver, 5).until(lambda driver: next(
                    (r for r in driver.find_elements(By.CSS_SELECTOR, "#messagelist tbody tr") if subject in r.text), None))
            except TimeoutException:
                if time.monotonic() > deadline:
                    return None
            self.driver.refresh()

    def compose(self, domain: str, query: str = "") -> None:
        """Open the compose page (a reply with `query`); Roundcube now and then answers a compose
        opened right after the login with "compose session not found": it is opened again."""
        for _ in range(3):
            self.driver.get(url(domain, f"/?_task=mail&_action=compose{query}"))
            try:
                WebDriverWait(self.driver, 30).until(lambda driver: any(
                    e.is_displayed() for e in driver.find_elements(By.CSS_SELECTOR, "#compose-subject, .boxerror")))
            except TimeoutException:
                continue
            if self.driver.find_elements(By.CSS_SELECTOR, "#compose-subject"):
                return
        self.shot("compose-refused")
        raise AssertionError("Roundcube did not open the compose page")

    def cookie_header(self) -> str:
        return "; ".join(f"{c['name']}={c['value']}" for c in self.driver.get_cookies())

    def close(self) -> None:
        self.driver.quit()
