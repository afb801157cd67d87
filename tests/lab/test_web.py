"""What the platform says about itself over the web (issue 25), read like other mail servers
and mail clients read it: each domain's MTA-STS policy, checked by checkdmarc (an independent
RFC 8461 checker) through the lab's DNS and the lab CA; TLS-RPT records; Thunderbird's
autoconfig and Outlook's autodiscover, whose answers a client then logs in with. Attacker
tests: a name the platform does not serve, a domain without MTA-STS, and a request whose Host
names another site than the TLS handshake did, all get nothing."""

import http.client
import imaplib
import smtplib
import xml.etree.ElementTree as ET

import dns.resolver
import pytest
from checkdmarc.mta_sts import check_mta_sts
from checkdmarc.smtp_tls_reporting import check_smtp_tls_reporting
from helpers import PASSWORD, lab_resolver, tls_context
from labenv import INVENTORY

from deploys.web import mta_sts_policy, policy_id
from mailstack.plan import own_domains

pytestmark = pytest.mark.usefixtures("lab_names")  # clients resolve lab names through the lab's DNS
DOMAINS = {d.name: d for d in own_domains(INVENTORY)}
MTA_STS = [name for name, d in DOMAINS.items() if d.mta_sts != "none"]
AUTOCONFIG = "{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}"


def fetch(ca_file: str, server_name: str, path: str, host: str | None = None, method: str = "GET",
          body: bytes | None = None) -> tuple[int, str, str]:
    """(status, content type, text) of one HTTPS request to `server_name` (SNI and certificate),
    naming `host` (default: the same) in its Host header."""
    connection = http.client.HTTPSConnection(server_name, 443, timeout=15, context=tls_context(ca_file))
    try:
        connection.request(method, path, body=body, headers={"Host": host or server_name})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read().decode()
    finally:
        connection.close()


@pytest.mark.parametrize("domain", MTA_STS)
def test_each_mta_sts_policy_passes_checkdmarc_and_names_only_the_domains_mx(domain, nameserver, ca_file,
                                                                            monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_file)  # the lab CA stands in for a public one
    result = check_mta_sts(domain, nameservers=[nameserver], timeout=5)
    assert result["valid"] and result["warnings"] == [], result
    policy = result["policy"]
    assert policy["mode"] == DOMAINS[domain].mta_sts and policy["max_age"] == INVENTORY.web["mta_sts_max_age"]
    assert policy["mx"] == [INVENTORY.host(name).fqdn for name in DOMAINS[domain].mx]
    assert result["id"] == policy_id(mta_sts_policy(INVENTORY, DOMAINS[domain]))  # the id follows the policy


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_each_domain_asks_for_tls_reports_a_mailbox_takes(domain, nameserver):
    result = check_smtp_tls_reporting(domain, nameservers=[nameserver], timeout=5)
    assert result["valid"] and result["warnings"] == [], result
    assert result["tags"]["rua"]["value"] == [f"mailto:{INVENTORY.platform['postmaster']}"]


def test_a_domain_without_mta_sts_publishes_no_policy_and_serves_none(nameserver, ca_file, fqdn):
    [quiet] = [name for name, d in DOMAINS.items() if d.mta_sts == "none"][:1]
    resolver = lab_resolver(nameserver)
    for name, kind in ((f"_mta-sts.{quiet}", "TXT"), (f"mta-sts.{quiet}", "A")):
        with pytest.raises(dns.resolver.NXDOMAIN):
            resolver.resolve(name, kind)
    status, _, text = fetch(ca_file, fqdn["mail"], "/.well-known/mta-sts.txt", host=f"mta-sts.{quiet}")
    assert status == 421 and "STSv1" not in text


@pytest.mark.parametrize("host", ["mta-sts.evil.test", "mta-sts.ext.test", "10.77.0.10", ""])
def test_a_name_the_platform_does_not_serve_gets_nothing(ca_file, fqdn, host):
    """Someone points a name of theirs at the platform, or asks by address: no domain's answers."""
    for path in ("/.well-known/mta-sts.txt", "/mail/config-v1.1.xml", "/autodiscover/autodiscover.xml"):
        status, _, text = fetch(ca_file, fqdn["mail"], path, host=host)
        assert status in (400, 421) and "STSv1" not in text and "incomingServer" not in text, (host, path)


def test_a_host_header_for_another_site_than_the_handshake_gets_nothing(ca_file):
    """TLS for one tenant's name, then the Host header of another's: refused (421), not served."""
    first, second = MTA_STS[:2]
    status, _, text = fetch(ca_file, f"mta-sts.{first}", "/.well-known/mta-sts.txt", host=f"mta-sts.{second}")
    assert status == 421 and "STSv1" not in text
    assert fetch(ca_file, f"mta-sts.{second}", "/.well-known/mta-sts.txt")[0] == 200


def servers(document: str) -> dict[str, tuple[str, int, str]]:
    """type -> (host name, port, socket type) from Thunderbird's autoconfig (SSL before STARTTLS)."""
    found = {}
    for kind, server in [(s.get("type"), s) for s in ET.fromstring(document).iter()
                         if s.tag in ("incomingServer", "outgoingServer")]:
        found.setdefault(kind, (server.findtext("hostname"), int(server.findtext("port")),
                                server.findtext("socketType")))
    return found


@pytest.mark.parametrize("domain,user", [("example.test", "alice@example.test"), ("tenant-b.test", "dave@tenant-b.test")])
def test_autoconfig_says_what_the_domain_offers_and_a_client_logs_in_with_it(domain, user, ca_file, nameserver):
    status, kind, document = fetch(ca_file, f"autoconfig.{domain}", f"/mail/config-v1.1.xml?emailaddress={user}")
    assert status == 200 and kind.startswith("application/xml")
    offered = servers(document)
    assert set(offered) == {"imap", "smtp", *(["pop3"] if DOMAINS[domain].pop3 else [])}, offered
    srv = {r: True for r in ("_imaps._tcp", "_pop3s._tcp", "_submissions._tcp")}
    for record in srv:  # the SRV records (RFC 6186/8314) say the same
        try:
            lab_resolver(nameserver).resolve(f"{record}.{domain}", "SRV")
        except dns.resolver.NXDOMAIN:
            srv[record] = False
    assert srv["_pop3s._tcp"] == ("pop3" in offered) and srv["_imaps._tcp"] and srv["_submissions._tcp"]
    host, port, socket_type = offered["imap"]
    assert (port, socket_type) == (993, "SSL")
    with imaplib.IMAP4_SSL(host, port, ssl_context=tls_context(ca_file), timeout=30) as client:
        assert client.login(user, PASSWORD)[0] == "OK"
    host, port, socket_type = offered["smtp"]
    assert (port, socket_type) == (465, "SSL")
    with smtplib.SMTP_SSL(host, port, context=tls_context(ca_file), timeout=30) as client:
        assert client.login(user, PASSWORD)[0] == 235


def test_a_tokens_only_domain_tells_clients_to_use_oauth2(ca_file):
    [domain] = [name for name, d in DOMAINS.items() if not d.password_login][:1]
    document = fetch(ca_file, f"autoconfig.{domain}", "/mail/config-v1.1.xml")[2]
    assert {a.text for a in ET.fromstring(document).iter("authentication")} == {"OAuth2"}


def test_autodiscover_answers_outlooks_post_with_the_domains_servers(ca_file):
    request = (b'<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/'
               b'autodiscover/outlook/requestschema/2006"><Request><EMailAddress>dave@tenant-b.test</EMailAddress>'
               b'<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/'
               b'2006a</AcceptableResponseSchema></Request></Autodiscover>')
    status, _, document = fetch(ca_file, "autodiscover.tenant-b.test", "/autodiscover/autodiscover.xml",
                                method="POST", body=request)
    assert status == 200, document
    protocols = {(p.findtext(f"{AUTOCONFIG}Type"), p.findtext(f"{AUTOCONFIG}Server"), p.findtext(f"{AUTOCONFIG}Port"))
                 for p in ET.fromstring(document).iter(f"{AUTOCONFIG}Protocol")}
    assert protocols == {("IMAP", "imap.tenant-b.test", "993"), ("SMTP", "smtp.tenant-b.test", "465"),
                         ("SMTP", "smtp.tenant-b.test", "587")}  # tenant-b has no POP3
