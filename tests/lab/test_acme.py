"""Certificates by ACME (issue 25). ext plays the public CA with Debian's Pebble, which checks
each name over HTTP-01 through the lab's validating DNS, as a public CA does through the
Internet's: the lab's platform gets every certificate so (inventories/lab.yml). The module
deploys the lab again onto a host whose ACME account and certificate are gone, and the lab's
own inventory at the end.

Operator: every public name of `mail` comes from Pebble and every TLS port serves it; a second
deploy changes nothing; the renewal job renews with the same key (the TLSA records stay true)
and no open IMAP or SMTP session notices; with the CA down the job fails loudly (the alert
reaches the pager), the old certificate keeps serving, and it recovers once the CA is back.
Attacker: a host on the LAN asks the CA for one of the platform's names and gets nothing, the
challenge hook refuses names the host does not carry and tokens that are paths, and port 80
serves nothing but the tokens of the host's own orders."""

from __future__ import annotations

import hashlib
import imaplib
import re
import shlex
import smtplib
import socket
import ssl
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from helpers import PASSWORD, lab_resolver, message, named_context
from labenv import INVENTORY
from test_monitoring import alert
from test_platform import deploy

from deploys.acme import HOOK, WEB_ROOT
from deploys.acme_ca import API_PORT, UNIT
from deploys.web import ROOT as WEB_SITES
from mailstack.conventions import METRICS_DIR
from mailstack.inventory import load
from mailstack.lab.acme import trust_current_root as lab_trusts_current_root
from mailstack.plan import plans
from mailstack.secrets import lab_acme_roots, lab_ca
from mailstack.tls import CERT, CERTIFICATES, SNI_DIR, certificate_files, key_digest, trusted_file

ROOTS = lab_acme_roots(INVENTORY)  # the newest roots of Pebble, which makes a new one at each start
CA_HOST = INVENTORY.hosts_with("acme_ca")[0]
MAIL = "mail"
# every TLS port of mail that serves the host's certificate: (port, STARTTLS over SMTP)
PORTS = ((25, True), (587, True), (465, False), (993, False), (995, False), (443, False), (4593, False), (8333, False))


def with_quick_renewal(lab: str) -> str:
    """The lab inventory, renewing at 50 days left: Pebble's certificates last 45, so that
    each run of the renewal job renews."""
    assert "tls:  # as on the Internet" in lab, "the lab inventory changed: its tls section is not found"
    return lab.replace("  source: acme\n", "  source: acme\n  acme_renew_days: 50\n", 1)


def trust_current_root() -> bool:
    """The lab keeps Pebble's current root, and the tests' CA file has it: whether it was new
    (then a deploy must put it into the hosts' trust stores)."""
    new = lab_trusts_current_root(INVENTORY, wait=30)  # just started: it makes its keys first
    trusted_file(INVENTORY)
    return new


def served(address: str, port: int, starttls: bool, cafile: str | Path, name: str,
           timeout: float = 60) -> x509.Certificate:
    """The certificate `port` shows, verified for `name` against `cafile`; a daemon that restarted
    for a new certificate (the IdP, S3: the others reload and never stop listening) is waited for."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _served(address, port, starttls, cafile, name)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _served(address: str, port: int, starttls: bool, cafile: str | Path, name: str) -> x509.Certificate:
    context = ssl.create_default_context(cafile=str(cafile))
    if starttls:
        with smtplib.SMTP(address, port, timeout=30) as smtp:
            smtp.starttls(context=named_context(str(cafile), name))
            der = smtp.sock.getpeercert(binary_form=True)
    else:
        with socket.create_connection((address, port), timeout=30) as raw, \
                context.wrap_socket(raw, server_hostname=name) as tls:
            der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der)


def spki_digest(cert: x509.Certificate) -> str:
    der = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


@pytest.fixture(scope="module")
def acme_lab(tmp_path_factory, mail):
    """The lab deployed again onto a host whose ACME account and orders are gone, renewing at
    each run of the job; the lab's own inventory after."""
    inventory = tmp_path_factory.mktemp("acme") / "lab.yml"
    inventory.write_text(with_quick_renewal(Path(INVENTORY.file).read_text()))
    mail.check_output("rm -rf /var/lib/mailstack/acme /etc/mailstack/acme")  # no account, no certificate
    try:
        if trust_current_root():  # Pebble restarted since the lab came up
            deploy()
        deploy(inventory)
        yield inventory
    finally:
        deploy()


@pytest.fixture(scope="module")
def certificates(acme_lab) -> tuple[tuple[str, ...], ...]:
    """mail's certificates, each a tuple of names: its own first (the lab splits them, as a
    provider's hosts with more than 100 names must)."""
    found = plans(load(acme_lab))[MAIL].certificates
    assert len(found) > 1, "the lab inventory no longer splits mail's names into several certificates"
    return found


@pytest.fixture(scope="module")
def names(certificates) -> list[str]:
    return [name for names in certificates for name in names]


def carried(cert: x509.Certificate) -> list[str]:
    return sorted(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName))


def test_a_fresh_deploy_gets_every_public_name_from_the_acme_ca(acme_lab, certificates, addr, fqdn):
    for port, starttls in PORTS:
        cert = served(addr[MAIL], port, starttls, ROOTS, fqdn[MAIL])
        issuer = cert.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
        assert issuer.startswith("Pebble Intermediate CA"), (port, issuer)
        assert carried(cert) == sorted(certificates[0]), port
    # each name verifies on its own, in the certificate of its group, as a client of that domain
    # asks (SNI); every certificate has the host's one key
    for names in certificates:
        for name in names:
            cert = served(addr[MAIL], 993, False, ROOTS, name)
            assert carried(cert) == sorted(names), name
            assert spki_digest(cert) == key_digest(INVENTORY, INVENTORY.host(MAIL))
    with pytest.raises(ssl.SSLCertVerificationError):  # the lab CA has nothing to do with it any more
        served(addr[MAIL], 993, False, lab_ca(INVENTORY)[0], fqdn[MAIL])


def test_a_second_deploy_changes_nothing(acme_lab):
    _, changed, errors, _ = deploy(acme_lab)
    assert (changed, errors) == ("-", "-")


def test_a_domain_that_leaves_the_platform_leaves_its_certificate(acme_lab, certificates, mail, addr, fqdn, tmp_path):
    """The operator takes a tenant's domain off: the next deploy gets certificates without its
    names (uacme alone keeps a valid certificate that carries every name asked, and more: the
    platform would go on telling every client whose domain it served)."""
    joined = tmp_path / "lab.yml"
    joined.write_text(acme_lab.read_text().replace(
        "\ndomains:\n", "\ndomains:\n  - {name: leaving.test, tenant: leaving, mx: [mail]}\n", 1))
    autoconfig = f"{WEB_SITES}/leaving.test/mail/config-v1.1.xml"  # what the web component wrote for it
    deploy(joined)
    try:
        assert "imap.leaving.test" in carried(served(addr[MAIL], 993, False, ROOTS, "imap.leaving.test"))
        assert mail.file(autoconfig).exists
    finally:
        deploy(acme_lab)
    assert not mail.file(autoconfig).exists  # nothing of it is left behind
    for names in certificates:
        assert carried(served(addr[MAIL], 993, False, ROOTS, names[-1])) == sorted(names)
    assert "imap.leaving.test" not in carried(served(addr[MAIL], 993, False, ROOTS, fqdn[MAIL]))


def test_a_platform_that_moves_to_acme_keeps_serving_every_certificate(acme_lab, certificates, mail, addr, fqdn,
                                                                      tmp_path):
    """An operator moves from certificates made elsewhere (here the lab CA's) to ACME: the
    files the `tls` component wrote are now the ones the host fetches, and the deploy must not
    take them away as left behind (every TLS daemon would then lose its certificate)."""
    before = tmp_path / "lab.yml"
    before.write_text(re.sub(r"\ntls:.*\n(  .*\n)*", "\ntls:\n  source: lab-ca\n  names_per_certificate: 10\n",
                             acme_lab.read_text(), count=1))
    deploy(before)
    lab_issued = served(addr[MAIL], 993, False, lab_ca(INVENTORY)[0], fqdn[MAIL])
    assert carried(lab_issued) == sorted(certificates[0])
    deploy(acme_lab)
    assert all(mail.file(path).exists for path, _ in certificate_files(plans(load(acme_lab))[MAIL]))
    mail.check_output("systemctl restart dovecot && systemctl reload postfix")  # what they read now
    for names in certificates:
        for port, starttls in ((25, True), (993, False)):
            cert = served(addr[MAIL], port, starttls, ROOTS, names[-1])
            assert carried(cert) == sorted(names) and cert.serial_number != lab_issued.serial_number, (port, names)
    _, changed, errors, _ = deploy(acme_lab)
    assert (changed, errors) == ("-", "-")


def test_the_acme_certificate_carries_the_key_its_tlsa_records_pin(acme_lab, addr, fqdn, nameserver):
    cert = served(addr[MAIL], 25, True, ROOTS, fqdn[MAIL])
    tlsa = lab_resolver(nameserver).resolve(f"_25._tcp.{fqdn[MAIL]}", "TLSA")
    assert [r.cert.hex() for r in tlsa] == [spki_digest(cert)] == [key_digest(INVENTORY, INVENTORY.host(MAIL))]


def test_the_renewal_job_renews_with_the_same_key_and_no_open_session_notices(acme_lab, mail, addr, fqdn, tag,
                                                                              certificates):
    before = served(addr[MAIL], 993, False, ROOTS, fqdn[MAIL])
    last = certificates[-1][0]  # a name of the last certificate, served by SNI
    before_sni = served(addr[MAIL], 587, True, ROOTS, last)
    pids = {unit: mail.check_output(f"systemctl show -p MainPID --value {unit}") for unit in ("dovecot", "postfix")}
    context = named_context(str(ROOTS), fqdn[MAIL])
    imap = imaplib.IMAP4_SSL(addr[MAIL], 993, ssl_context=context, timeout=30)
    smtp = smtplib.SMTP(addr[MAIL], 587, timeout=30)
    try:
        imap.login("alice@example.test", PASSWORD)
        imap.select("INBOX", readonly=True)
        smtp.starttls(context=context)
        smtp.login("alice@example.test", PASSWORD)
        job = mail.run("systemctl start mailstack-acme.service")
        assert job.rc == 0, job.stderr
        after = served(addr[MAIL], 993, False, ROOTS, fqdn[MAIL])
        assert after.serial_number != before.serial_number
        assert spki_digest(after) == spki_digest(before) == key_digest(INVENTORY, INVENTORY.host(MAIL))
        for port, starttls in PORTS:  # every daemon that serves it took the new one
            assert served(addr[MAIL], port, starttls, ROOTS, fqdn[MAIL]).serial_number == after.serial_number, port
        # and the certificates served by name were renewed too, with the same key
        for port, starttls in ((587, True), (465, False), (993, False), (995, False)):
            renewed = served(addr[MAIL], port, starttls, ROOTS, last)
            assert renewed.serial_number != before_sni.serial_number, port
            assert spki_digest(renewed) == spki_digest(before), port
        # the sessions opened before go on: Dovecot and Postfix reloaded, they did not restart
        assert imap.noop()[0] == "OK" and imap.select("INBOX", readonly=True)[0] == "OK"
        smtp.send_message(message("alice@example.test", "bob@example.test", tag))
    finally:
        smtp.close()
        imap.shutdown()
    assert {unit: mail.check_output(f"systemctl show -p MainPID --value {unit}") for unit in pids} == pids
    assert re.search(f"^installed serial=0*{after.serial_number:X} ", mail.check_output("journalctl -t mailstack-acme -o cat"),
                     re.M)


def test_a_certificate_the_ca_refuses_leaves_the_others_renewing(acme_lab, mail, addr, fqdn, certificates):
    """A tenant's name stops pointing at the platform (its DNS moved away): that certificate
    cannot be renewed, and keeps serving while it lasts, but the host's own and the other
    tenants' are renewed all the same, and the job fails so that the operator hears of it."""
    last = certificates[-1][0]
    before = {name: served(addr[MAIL], 993, False, ROOTS, name).serial_number for name in (fqdn[MAIL], last)}
    listed = mail.check_output(f"cat {CERTIFICATES}")
    moved = "nowhere.not-a-platform-name.test"  # a name no DNS answers for: the CA cannot check it
    mail.check_output(f"sed -i '$ s/$/ {moved}/' {CERTIFICATES}")
    # and a certificate that never was: the host's own stands in, so that the daemons naming it run
    never = f"{SNI_DIR}/imap.never.test.pem"
    mail.check_output(f"echo '{never} imap.never.test' >> {CERTIFICATES}")
    try:
        job = mail.run("systemctl start mailstack-acme.service")
        assert job.rc != 0
        assert served(addr[MAIL], 993, False, ROOTS, fqdn[MAIL]).serial_number != before[fqdn[MAIL]]
        assert served(addr[MAIL], 993, False, ROOTS, last).serial_number == before[last]
        assert f"renewal for {last} failed" in mail.check_output("journalctl -t mailstack-acme -o cat -n 40")
        assert mail.file(never).content == mail.file(CERT).content
    finally:
        mail.check_output(f"printf '%s\\n' {shlex.quote(listed)} > {CERTIFICATES}")
    assert mail.run("systemctl start mailstack-acme.service").rc == 0
    assert served(addr[MAIL], 993, False, ROOTS, last).serial_number != before[last]
    assert not mail.file(never).exists  # no longer listed: the daily job took it away


def test_with_the_ca_down_the_old_certificate_serves_and_the_failed_renewal_alerts(acme_lab, mail, ext, addr, fqdn):
    before = served(addr[MAIL], 993, False, ROOTS, fqdn[MAIL])
    since = time.time()
    ext.check_output(f"systemctl stop {UNIT}")
    try:
        assert mail.run("systemctl start mailstack-acme.service").rc != 0
        assert mail.run("systemctl is-failed mailstack-acme.service").stdout.strip() == "failed"
        assert served(addr[MAIL], 993, False, ROOTS, fqdn[MAIL]).serial_number == before.serial_number
        # the expiry the monitoring watches is the certificate's that still serves
        metrics = mail.check_output(f"cat {METRICS_DIR}/*.prom")
        expiry = next(line for line in metrics.splitlines() if line.startswith("mailstack_certificate_expiry"))
        assert float(expiry.split()[-1]) == before.not_valid_after_utc.timestamp()
        assert alert(ext, "ScheduledJobFailed", "firing", since, name="mailstack-acme.service"), \
            "no alert about the failed renewal reached the pager"
    finally:
        ext.check_output(f"systemctl start {UNIT}")
    # the CA is back, with a new root (Pebble keeps nothing): trusted by the next deploy, then renewed
    assert trust_current_root()
    deploy(acme_lab)
    assert mail.run("systemctl start mailstack-acme.service").rc == 0
    assert mail.run("systemctl is-failed mailstack-acme.service").stdout.strip() != "failed"
    assert served(addr[MAIL], 993, False, ROOTS, fqdn[MAIL]).serial_number != before.serial_number


def test_a_host_on_the_lan_gets_no_certificate_for_a_name_of_the_platform(acme_lab, ext, mail, names):
    """ext asks the CA for imap.example.test with an account of its own, taking HTTP-01 (its hook
    cannot put the token on mail): the CA asks mail's port 80 for it, which serves only the
    tokens of mail's own orders, and refuses."""
    name = next(n for n in names if n.startswith("imap."))
    attacker = ("d=$(mktemp -d) && printf '#!/bin/sh\\n[ \"$2\" = http-01 ]\\n' > $d/hook && chmod +x $d/hook && "
                f"uacme -c $d -a https://{CA_HOST.fqdn}:{API_PORT}/dir -y new >/dev/null && "
                f"uacme -c $d -a https://{CA_HOST.fqdn}:{API_PORT}/dir -h $d/hook issue {name}; "
                "status=$?; ls $d/*/cert.pem 2>/dev/null; rm -rf $d; exit $status")
    result = ext.run(attacker)
    assert result.rc == 2, result.stdout + result.stderr
    assert "cert.pem" not in result.stdout
    assert "unauthorized" in result.stderr or "invalid" in result.stderr, result.stderr
    log = mail.check_output("tail -n 20 /var/log/nginx/access.log")
    assert '/.well-known/acme-challenge/' in log and '" 404 ' in log  # the CA asked, mail had nothing


@pytest.mark.parametrize(("ident", "token"), [
    ("evil.test", "abcDEF_-123"),  # a name this host does not carry
    (None, "../../../../etc/mailstack/owned"),  # a token that is a path
    (None, "a b"),
])
def test_the_challenge_hook_refuses_foreign_names_and_path_tokens(acme_lab, mail, fqdn, ident, token):
    ident = ident or fqdn[MAIL]
    result = mail.run(f"{HOOK} begin http-01 {ident} '{token}' answer")
    assert result.rc != 0
    assert mail.run(f"ls {WEB_ROOT}/.well-known/acme-challenge/ 2>/dev/null").stdout.strip() == ""
    assert not mail.file("/etc/mailstack/owned").exists
    assert mail.file(CERTIFICATES).exists


def test_port_80_serves_nothing_but_challenge_tokens(acme_lab, addr):
    for path in ("/", "/.well-known/acme-challenge/", "/.well-known/acme-challenge/../../../etc/passwd",
                 "/.well-known/mta-sts.txt", "/mail/config-v1.1.xml"):
        with socket.create_connection((addr[MAIL], 80), timeout=10) as sock:
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: mta-sts.example.test\r\n\r\n".encode())
            status = sock.recv(200).split(b"\r\n")[0]
        assert status.split()[1] in (b"400", b"404"), (path, status)

