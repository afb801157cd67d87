"""DNSSEC, DANE and outbound MTA-STS (issue 25). The zones ext serves are signed and checked here by two
validators: dnspython from this machine, against each zone's key from the inventory, and
every lab host's unbound, whose "validated" bit Postfix needs before it uses a TLSA record.
Each MX and submission name publishes its key as TLSA 3 1 1; Postfix then sends to a DANE
domain only over TLS with that key, both ways (mail to ext, ext to mail). Attacker tests,
with ext playing the remote domain and the man in the middle: a certificate with another
key, STARTTLS stripped, and a TLSA record changed without its signature: each defers the
mail, which is never sent in the clear or to the wrong server, and arrives once it is over.

MTA-STS for a domain without DANE: ext.test publishes an `enforce` policy (its zone re-signed
here with the `_mta-sts` record, the policy served over HTTPS by this machine with a lab-CA
certificate for mta-sts.ext.test, ext's TLSA record taken away). A server whose certificate
is trusted but not for the policy's MX name gets nothing; with the right one the mail
goes. With DANE and MTA-STS both published, DANE decides: the policy would accept a
certificate with another key for the right name, DANE does not."""

import contextlib
import hashlib
import http.server
import json
import shlex
import smtplib
import socket
import ssl
import tempfile
import threading
import time

import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rdatatype
import pytest
from checkdmarc.dnssec import check_dnssec
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from helpers import imap_find, message, submit
from labenv import INVENTORY, PLANS, ssh

from mailstack.dns import Record, zone_file, zones
from mailstack.dnssec import parents, signed, trust_anchor
from mailstack.secrets import issue, lab_ca
from mailstack.tls import key_digest

ZONES = sorted(zones(INVENTORY))
SENDER = "dave@tenant-b.test"  # a tenant without S/MIME: the message leaves as written
REMOTE = "carol@ext.test"


def signed_answer(nameserver: str, name: str, rdtype: str):
    """(rrset, its RRSIG) from the authoritative server, asked with DNSSEC OK."""
    query = dns.message.make_query(name, rdtype, want_dnssec=True)
    answer = dns.query.tcp(query, nameserver, timeout=5).answer
    rrset = next(r for r in answer if r.rdtype == dns.rdatatype.from_text(rdtype))
    return rrset, next(r for r in answer if r.rdtype == dns.rdatatype.RRSIG)


def zone_keys(nameserver: str, zone: str) -> dict:
    """The zone's DNSKEY set, self-signed with the zone's key from the secrets directory."""
    keys, signature = signed_answer(nameserver, zone + ".", "DNSKEY")
    anchor = dns.rdata.from_text("IN", "DNSKEY", trust_anchor(INVENTORY, zone).split(" DNSKEY ", 1)[1])
    assert anchor in keys, f"{zone}: the served key is not the zone's key"
    dns.dnssec.validate(keys, signature, {dns.name.from_text(zone): keys})
    return {dns.name.from_text(zone): keys}


@pytest.mark.parametrize("zone", ZONES)
def test_every_lab_zone_is_signed_and_its_parent_vouches_for_its_key(zone, nameserver):
    keys = zone_keys(nameserver, zone)
    soa, signature = signed_answer(nameserver, zone + ".", "SOA")
    dns.dnssec.validate(soa, signature, keys)
    parent = next((top for top, children in parents(ZONES).items() if zone in children), None)
    if parent is None:
        assert trust_anchor(INVENTORY, zone) in PLANS["mail"].resolver.anchors  # anchored on its own
        return
    ds, ds_signature = signed_answer(nameserver, zone + ".", "DS")
    dns.dnssec.validate(ds, ds_signature, zone_keys(nameserver, parent))
    key = next(iter(keys.values()))[0]
    assert dns.dnssec.make_ds(zone + ".", key, "SHA256") in ds


@pytest.mark.parametrize("domain", sorted(d.name for d in INVENTORY.domains))
def test_checkdmarc_finds_every_lab_domain_signed(domain, nameserver):
    """An independent checker (checkdmarc) walks DS to DNSKEY to the domain's records."""
    assert check_dnssec(domain, nameservers=[nameserver])


def tlsa_names() -> list[tuple[str, str, int]]:
    """(TLSA owner, host address, port) of every TLSA record the platform publishes."""
    found = []
    for records in zones(INVENTORY, tuple(r for h in INVENTORY.hosts for r in _added(h))).values():
        for record in records:
            if record.type == "TLSA":
                port, _, name = record.name.partition("._tcp.")
                found.append((record.name, name, int(port.lstrip("_"))))
    return sorted(set(found))


def _added(host):
    from deploys.postfix import tlsa_records
    return tlsa_records(INVENTORY, host) if {"mx", "submission"} & set(host.roles) else []


def served_key_digest(address: str, port: int, name: str) -> str:
    """SHA-256 of the public key the server shows (no trust decided here: DANE decides)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    if port == 465:
        with socket.create_connection((address, port), timeout=30) as sock, \
                context.wrap_socket(sock, server_hostname=name) as tls:
            der = tls.getpeercert(binary_form=True)
    else:
        with smtplib.SMTP(address, port, timeout=30) as client:
            client.starttls(context=context)
            der = client.sock.getpeercert(binary_form=True)
    public = x509.load_der_x509_certificate(der).public_key()
    return hashlib.sha256(public.public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()


@pytest.mark.parametrize("owner,name,port", tlsa_names())
def test_each_tlsa_record_is_signed_and_pins_the_key_the_server_shows(owner, name, port, nameserver):
    zone = max((z for z in ZONES if owner.endswith("." + z)), key=len)
    tlsa, signature = signed_answer(nameserver, owner + ".", "TLSA")
    dns.dnssec.validate(tlsa, signature, zone_keys(nameserver, zone))
    address = dns.query.tcp(dns.message.make_query(name, "A"), nameserver, timeout=5).answer[0][0].address
    served = served_key_digest(address, port, name)
    assert any((r.usage, r.selector, r.mtype, r.cert.hex()) == (3, 1, 1, served) for r in tlsa), \
        f"{owner}: no TLSA 3 1 1 for the key {name}:{port} shows"


def journal_since(host, unit: str, since: float) -> str:
    return host.check_output(f"journalctl -u {unit} --since @{int(since)} -o cat --no-pager")


def send_out(addr, fqdn, ca_file, tag) -> None:
    submit(addr["mail"], fqdn["mail"], ca_file, SENDER, message(SENDER, REMOTE, tag))


def deferral(host, tag: str, seconds: float = 90) -> str:
    """Why Postfix on `host` holds the message with `tag`, once it has tried to send it."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for entry in map(json.loads, host.check_output("postqueue -j").splitlines()):
            reasons = [r["delay_reason"] for r in entry["recipients"] if r.get("delay_reason")]
            if reasons and tag in host.run(f"postcat -hq {entry['queue_id']}").stdout:
                return reasons[0]
        time.sleep(1)
    raise AssertionError(f"no deferred message with {tag} on {host.backend.hostname}")


def test_mail_to_a_dane_domain_is_sent_only_after_the_tlsa_matched(mail, ext, addr, fqdn, ca_file, tag):
    since = time.time() - 1
    send_out(addr, fqdn, ca_file, tag)
    assert imap_find(addr["ext"], fqdn["ext"], ca_file, REMOTE, tag), "the mail did not reach ext"
    log = journal_since(mail, "postfix@-", since)
    assert f"Verified TLS connection established to {fqdn['ext']}" in log, log[-2000:]


def test_mail_from_a_dane_sender_is_verified_by_the_sender(mail, ext, addr, fqdn, ca_file, tag):
    since = time.time() - 1
    submit(addr["ext"], fqdn["ext"], ca_file, REMOTE, message(REMOTE, SENDER, tag))
    assert imap_find(addr["mail"], fqdn["mail"], ca_file, SENDER, tag), "the mail did not reach mail"
    log = journal_since(ext, "postfix@-", since)
    assert f"Verified TLS connection established to {fqdn['mail']}" in log, log[-2000:]


@contextlib.contextmanager
def ext_postfix_changed(ext, *settings: str):
    """ext's Postfix with `settings` (postconf -e), restarted so that no TLS session
    survives; as deployed again afterwards."""
    ext.check_output("cp -p /etc/postfix/main.cf /root/main.cf.dane-test")
    try:
        ext.check_output(" && ".join(f"postconf -e {shlex.quote(s)}" for s in settings)
                         + " && systemctl restart postfix")
        yield
    finally:
        ext.check_output("cp -p /root/main.cf.dane-test /etc/postfix/main.cf && systemctl restart postfix")


def lab_ca_certificate(name: str) -> bytes:
    """A new key and a certificate for `name` from the lab CA, which every lab host trusts (PEM)."""
    ca_cert_path, ca_key_path = lab_ca(INVENTORY)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue(x509.load_pem_x509_certificate(ca_cert_path.read_bytes()),
                 serialization.load_pem_private_key(ca_key_path.read_bytes(), None), key, [name], "server")
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()) + cert.public_bytes(serialization.Encoding.PEM)


def ext_shows_certificate(ext, name: str):
    """ext's SMTP server with a trusted certificate for `name` and a key of its own."""
    ssh("ext", "umask 077 && cat > /root/mitm.pem", lab_ca_certificate(name))
    return ext_postfix_changed(ext, "smtpd_tls_chain_files = /root/mitm.pem")


def forget_lab_answers(mail) -> None:
    """mail's resolver asks again (what ext serves changed)."""
    for zone in ZONES:
        mail.check_output(f"unbound-control flush_zone {zone}")
    mail.check_output("unbound-control flush_bogus && unbound-control flush_negative")


def serves(nameserver: str, owner: str, tlsa: str, seconds: float = 20) -> None:
    """Wait until the server answers `tlsa` over UDP and TCP (nsd reloads in the background)."""
    query, end = dns.message.make_query(owner, "TLSA"), time.monotonic() + seconds
    while {r.to_text() for ask in (dns.query.udp, dns.query.tcp)
           for r in ask(query, nameserver, timeout=5).answer[0]} != {tlsa}:
        assert time.monotonic() < end, f"{nameserver} does not serve {owner} TLSA {tlsa}"
        time.sleep(0.2)


def held_until_sent_again(mail, ext, addr, fqdn, ca_file, tag, reason: str) -> None:
    """The message is held on mail for `reason` and never reached ext."""
    held = deferral(mail, tag)
    assert reason in held, held
    assert imap_find(addr["ext"], fqdn["ext"], ca_file, REMOTE, tag, timeout=3) is None


def arrives_after_flush(mail, addr, fqdn, ca_file, tag) -> None:
    """Nothing lost: once the attack is over the held message is delivered."""
    mail.check_output("postqueue -f")
    assert imap_find(addr["ext"], fqdn["ext"], ca_file, REMOTE, tag, timeout=90), "the held mail never arrived"


def test_a_server_with_a_trusted_certificate_but_another_key_gets_no_mail(mail, ext, addr, fqdn, ca_file, tag):
    """The man in the middle holds a certificate for ext's name from a CA the platform trusts
    (the lab CA): the CA check alone would pass it, the TLSA record does not."""
    with ext_shows_certificate(ext, fqdn["ext"]):
        assert served_key_digest(addr["ext"], 25, fqdn["ext"]) != key_digest(INVENTORY, INVENTORY.host("ext"))
        send_out(addr, fqdn, ca_file, tag)
        held_until_sent_again(mail, ext, addr, fqdn, ca_file, tag, "Server certificate not verified")
    arrives_after_flush(mail, addr, fqdn, ca_file, tag)


def test_stripped_starttls_gets_no_mail(mail, ext, addr, fqdn, ca_file, tag):
    with ext_postfix_changed(ext, "smtpd_discard_ehlo_keywords = starttls"):
        send_out(addr, fqdn, ca_file, tag)
        held_until_sent_again(mail, ext, addr, fqdn, ca_file, tag, "TLS is required, but was not offered")
    arrives_after_flush(mail, addr, fqdn, ca_file, tag)


def test_a_tlsa_record_changed_without_its_signature_gets_no_mail(mail, ext, addr, fqdn, ca_file, tag):
    """The attacker answers for ext's TLSA with his own key's digest; he cannot sign it."""
    zone_file = f"/etc/nsd/zones/{INVENTORY.platform['domain']}.zone"
    owner = f"_25._tcp.{fqdn['ext']}."
    forged = "3 1 1 " + hashlib.sha256(b"the attacker's key").hexdigest()
    ext.check_output(f"cp -p {zone_file} /root/zone.dane-test")
    try:
        ext.check_output(f"sed -i -E 's/^({owner} [0-9]+ IN TLSA) .*/\\1 {forged}/' {zone_file} "
                         "&& systemctl reload nsd")
        serves(addr["ext"], owner, forged)  # under the old signature
        forget_lab_answers(mail)
        send_out(addr, fqdn, ca_file, tag)
        # the DANE-first map cannot validate the TLSA answer and says "try again" (Postfix:
        # "client TLS configuration problem"); without that map, Postfix's own lookup fails
        reason = "client TLS configuration problem" if PLANS["mail"].runs("outbound_tls") else "TLSA lookup error"
        held_until_sent_again(mail, ext, addr, fqdn, ca_file, tag, reason)
    finally:
        ext.check_output(f"cp -p /root/zone.dane-test {zone_file} && systemctl reload nsd")
        serves(addr["ext"], owner, f"3 1 1 {key_digest(INVENTORY, INVENTORY.host('ext'))}")
        forget_lab_answers(mail)
    arrives_after_flush(mail, addr, fqdn, ca_file, tag)


TEST_MACHINE = "10.77.0.1"  # the lab's bridge: the machine that runs these tests
STS_DOMAIN = "ext.test"


@contextlib.contextmanager
def zones_changed(mail, ext, add: tuple[Record, ...] = (), drop=lambda record: False):
    """The lab's zones as deployed, with `add` and without what `drop` picks, signed with the
    zones' own keys and served by ext; as deployed again afterwards."""
    server = INVENTORY.hosts_with("dns")[0]
    deployed = zones(INVENTORY, PLANS[server.name].contributed("dns.records"))
    changed = {zone: records for zone, records in zones(INVENTORY, (*PLANS[server.name].contributed("dns.records"),
                                                                       *add)).items()
               if records != deployed[zone] or any(drop(r) for r in records)}
    try:
        for zone, records in changed.items():
            kept = [r for r in records if not drop(r)]
            ssh(ext.backend.hostname, f"cat > /etc/nsd/zones/{zone}.zone",
                signed(INVENTORY, zone, zone_file(INVENTORY, zone, kept, server)).encode())
        ext.check_output("systemctl reload nsd")
        time.sleep(1)
        forget_lab_answers(mail)
        yield
    finally:
        for zone in changed:
            ssh(ext.backend.hostname, f"cat > /etc/nsd/zones/{zone}.zone",
                signed(INVENTORY, zone, zone_file(INVENTORY, zone, deployed[zone], server)).encode())
        ext.check_output("systemctl reload nsd")
        time.sleep(1)
        forget_lab_answers(mail)


@contextlib.contextmanager
def policy_served(policy: str):
    """https://mta-sts.ext.test/.well-known/mta-sts.txt, from this machine, with a lab-CA certificate."""
    class Policy(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            found = self.path == "/.well-known/mta-sts.txt"
            body = policy.encode() if found else b"not here\n"
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    with tempfile.NamedTemporaryFile() as pem:
        pem.write(lab_ca_certificate(f"mta-sts.{STS_DOMAIN}"))
        pem.flush()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pem.name)
    server = http.server.ThreadingHTTPServer((TEST_MACHINE, 443), Policy)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def sts_published(mail, ext, tag):
    """ext.test publishes an `enforce` policy naming its MX; mail forgets what it learnt after."""
    policy = f"version: STSv1\nmode: enforce\nmx: {INVENTORY.host('ext').fqdn}\nmax_age: 86400\n"
    records = (Record(f"_mta-sts.{STS_DOMAIN}", "TXT", f"v=STSv1; id={tag.replace('-', '')[-20:]}"),
               Record(f"mta-sts.{STS_DOMAIN}", "A", TEST_MACHINE))
    try:
        with policy_served(policy):
            yield records
    finally:
        mail.check_output("systemctl stop postfix-mta-sts-resolver && rm -f /var/lib/mta-sts/cache.db "
                          "&& systemctl start postfix-mta-sts-resolver")


def policy_of(mail, domain: str, table: str) -> str:
    """What a map of Postfix's smtp_tls_policy_maps answers for `domain` (empty: not found)."""
    maps = dict(m.rsplit(":", 1)[::-1] for m in
                mail.check_output("postconf -h smtp_tls_policy_maps").replace(",", " ").split())
    return mail.run(f"postmap -q {domain} {maps[table]}:{table}").stdout.strip()


def without_ext_tlsa(record: Record) -> bool:
    return record.type == "TLSA" and record.name == f"_25._tcp.{INVENTORY.host('ext').fqdn}"


def test_an_enforced_mta_sts_policy_keeps_mail_from_a_server_without_its_name(
        mail, ext, addr, fqdn, ca_file, tag, sts_published):
    """ext.test without DANE: its policy decides. A trusted certificate for another name (the
    man in the middle's own) gets nothing; the right one gets the mail."""
    with zones_changed(mail, ext, add=sts_published, drop=without_ext_tlsa):
        assert policy_of(mail, STS_DOMAIN, "dane") == ""  # no validated TLSA now
        assert policy_of(mail, STS_DOMAIN, "postfix") == f"secure match={fqdn['ext']} servername=hostname"
        with ext_shows_certificate(ext, f"mitm.{STS_DOMAIN}"):
            send_out(addr, fqdn, ca_file, tag)
            held_until_sent_again(mail, ext, addr, fqdn, ca_file, tag, "Server certificate not verified")
        arrives_after_flush(mail, addr, fqdn, ca_file, tag)
    log = mail.check_output("journalctl -u postfix@- --since -3min -o cat --no-pager")
    assert f"Verified TLS connection established to {fqdn['ext']}" in log


def test_dane_decides_where_a_domain_publishes_both(mail, ext, addr, fqdn, ca_file, tag, sts_published):
    """The MTA-STS policy alone would take a trusted certificate for ext's name with another
    key; DANE, asked first, does not."""
    with zones_changed(mail, ext, add=sts_published):
        assert policy_of(mail, STS_DOMAIN, "dane") == "dane"
        assert policy_of(mail, STS_DOMAIN, "postfix").startswith("secure match=")  # the policy is there
        with ext_shows_certificate(ext, fqdn["ext"]):
            send_out(addr, fqdn, ca_file, tag)
            held_until_sent_again(mail, ext, addr, fqdn, ca_file, tag, "Server certificate not verified")
        arrives_after_flush(mail, addr, fqdn, ca_file, tag)
