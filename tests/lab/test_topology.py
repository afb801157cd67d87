"""The platform split across hosts (inventories/lab-multi.yml, `scripts/multi-lab`): two MX
hosts that are submission hosts too, a Dovecot proxy, two mailbox backends, one filter host.
Mail reaches the backend that holds the recipient's mailbox (by the inventory), over LMTP
with verified TLS, and is read through the proxy, which logs in on that backend over TLS
(the backends take mail logins from the proxy only); the S/MIME gateway on its own host
signs and encrypts what both submission hosts hand it; three storage hosts keep every object
on two of them and serve it while one is down; Postfix reaches
rspamd on the filter host through a TLS tunnel that admits only the platform's Postfix
hosts; logins on a submission host without mailboxes are checked there (no password
crosses the network again); MX 1 down, mail comes in through MX 2; the filter host down,
both MX answer 4xx and nothing is lost; one sending limit counts on both submission hosts."""

import imaplib
import json
import os
import smtplib
import socket
import subprocess
import sys
import time

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from helpers import PASSWORD, imap_find, message, named_context, pop3_find, submit
from labenv import INVENTORY, PLANS, ROOT, SSH_CONFIG, host

from deploys import storage
from mailstack import s3 as store
from mailstack.secrets import domain_certificate, host_certificate

pytestmark = pytest.mark.skipif(not any(p.lmtp_clients for p in PLANS.values()),
                                reason="needs the multi-host lab (scripts/multi-lab up): this lab's "
                                       "MX hosts deliver to mailboxes on their own host")

BACKEND = {"alice@example.test": "mb1", "bob@example.test": "mb2", "dave@tenant-b.test": "mb2"}  # lab-multi.yml
PROXY = "proxy1"
LIMITED = "gina@example.test"  # 4 messages a minute (lab-multi.yml)
OUTSIDE = "carol@ext.test"


@pytest.fixture(scope="module")
def filter_ready():
    """rspamd on the filter host scans (it compiles its rules for a while after a start)."""
    wait_until(lambda: host("filter1").run("rspamc -h 127.0.0.1:11334 stat").rc == 0, 120, "rspamd on filter1")


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(1)


def from_outside(addr, fqdn, ca_file, msg):
    """carol@ext.test sends through her own provider (ext), which follows our MX records."""
    submit(addr["ext"], fqdn["ext"], ca_file, OUTSIDE, msg)


def ssh(name: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["ssh", "-F", str(SSH_CONFIG), name, command], capture_output=True, text=True,
                          timeout=timeout)


def reachable(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=3).close()
        return True
    except OSError:
        return False


def test_mail_reaches_the_users_backend_over_verified_tls_and_is_read_through_the_proxy(addr, fqdn, ca_file, tag,
                                                                                        filter_ready):
    for user in BACKEND:
        from_outside(addr, fqdn, ca_file, message(OUTSIDE, user, f"{tag}-{user}"))
    for user, backend in BACKEND.items():
        raw = imap_find(addr[PROXY], fqdn[PROXY], ca_file, user, f"{tag}-{user}")
        assert raw is not None, f"{user}'s mail cannot be read through the proxy"
        assert f"by {fqdn[backend]} with LMTP".encode() in raw  # delivered on its backend (TLS: the log below)
        assert b"Authentication-Results: mx" in raw  # rspamd on filter1 checked it for the MX
        local, domain = user.split("@")
        other = next(b for b in ("mb1", "mb2") if b != backend)
        assert host(backend).run(f"test -d /var/vmail/{domain}/{local}").rc == 0
        assert host(other).run(f"test -e /var/vmail/{domain}/{local}").rc != 0, f"{user} has a mailbox on {other}"
    logs = "".join(host(mx).check_output("journalctl -t postfix/lmtp-tls/lmtp -o cat --no-pager")
                   for mx in ("mx1", "mx2"))
    assert "Verified TLS connection established to mb1.lab.test" in logs
    assert "Verified TLS connection established to mb2.lab.test" in logs
    # the backend saw the proxy's login over TLS, and the real client (this machine) through it
    login = host("mb2").check_output("journalctl -t dovecot -o cat --no-pager | grep 'user=<bob@example.test>' "
                                     "| grep imap-login | tail -1")
    assert "rip=10.77.0.1," in login and "TLS" in login, login
    assert "proxy(bob@example.test,10.77.0.32:993): Started proxying to <10.77.0.32> (<mb2.lab.test>)" in host(PROXY).check_output(
        "journalctl -t dovecot -o cat --no-pager")
    assert pop3_find(addr[PROXY], fqdn[PROXY], ca_file, "bob@example.test", f"{tag}-bob@example.test")


def test_the_proxy_checks_the_password_and_the_backends_take_logins_from_it_only(addr, fqdn, ca_file, tag):
    with pytest.raises(imaplib.IMAP4.error), \
            imaplib.IMAP4_SSL(addr[PROXY], 993, ssl_context=named_context(ca_file, fqdn[PROXY])) as imap:
        imap.login("bob@example.test", f"wrong-{tag}")
    assert f"wrong-{tag}" not in host("mb2").check_output("journalctl -t dovecot -o cat --no-pager --since -2min")
    for backend in ("mb1", "mb2"):
        for port in (143, 993, 995):
            assert not reachable(addr[backend], port), f"{backend}:{port} is open to this machine"
        assert ssh(PROXY, f"timeout 5 bash -c '</dev/tcp/{addr[backend]}/993'").returncode == 0
        assert ssh("ext", f"timeout 5 bash -c '</dev/tcp/{addr[backend]}/993'").returncode != 0


def lmtp_attempt(backend: str, address: str, cert: str = "", key: str = "", user: str = "root") -> str:
    """What a TLS client on mx1 (as `user`, with this certificate; none: "") hears on a
    backend's LMTP port once connected: Dovecot's greeting, or nothing."""
    with_cert = f"-cert {cert} -key {key}" if cert else ""
    said = ssh("mx1", f"(sleep 2; echo QUIT) | runuser -u {user} -- timeout 10 openssl s_client -quiet "
                      f"-connect {address}:24 -verify_hostname {backend}.lab.test -verify_return_error {with_cert}")
    return said.stdout


def test_lmtp_takes_only_the_mx_hosts_certificates(addr, inv):
    """Dovecot's LMTP trusts whoever reaches it: only the MX hosts' addresses reach the
    tunnel in front of it, and only their certificates (root's key there) get through it;
    another process on an MX host, in clear or with TLS of its own, gets no greeting."""
    cert, key = host_certificate(inv, "filter1", PLANS["filter1"].certificate_names)  # valid, but no MX host's
    subprocess.run(["scp", "-q", "-F", str(SSH_CONFIG), str(cert), str(key), "mx1:/tmp/"], check=True)
    ssh("mx1", f"chmod 644 /tmp/{cert.name} /tmp/{key.name}")
    try:
        for backend in ("mb1", "mb2"):
            address = addr[backend]
            assert not reachable(address, 24), f"LMTP on {backend} is open to this machine"
            assert ssh("ext", f"timeout 5 bash -c '</dev/tcp/{address}/24'").returncode != 0
            plain = ssh("mx1", f"runuser -u nobody -- timeout 5 bash -c 'exec 3<>/dev/tcp/{address}/24; "
                               "echo LHLO x >&3; head -c 100 <&3'")
            assert "220" not in plain.stdout and "Dovecot" not in plain.stdout, plain.stdout
            for refused in (lmtp_attempt(backend, address, user="nobody"),
                            lmtp_attempt(backend, address, f"/tmp/{cert.name}", f"/tmp/{key.name}", user="nobody")):
                assert "220" not in refused and "Dovecot" not in refused, refused
            admitted = lmtp_attempt(backend, address, "/etc/mailstack/tls/cert.pem", "/etc/mailstack/tls/key.pem")
            assert admitted.startswith(f"220 {backend}.lab.test Dovecot") and "ready" in admitted, admitted
            # behind the tunnel, Dovecot's LMTP listens on loopback and takes stunnel alone
            inside = host(backend).run("runuser -u nobody -- timeout 5 bash -c '</dev/tcp/127.0.0.1/2424'")
            assert inside.rc != 0, f"any local user on {backend} reaches Dovecot's LMTP"
            listeners = {line.split()[3] for line in host(backend).check_output("ss -Htlnp").splitlines()
                         if '"dovecot"' in line and line.split()[3].endswith((":24", ":2424"))}
            assert listeners == {"127.0.0.1:2424"}, listeners
    finally:
        ssh("mx1", f"rm -f /tmp/{cert.name} /tmp/{key.name}")


def tunnel_attempt(cert: str, key: str) -> str:
    """What the filter host's end of the tunnel says to a TLS client on mx1 with this
    certificate (none: ""), which sends a line as soon as it is connected."""
    since = int(time.time())
    with_cert = f"-cert {cert} -key {key}" if cert else ""
    ssh("mx1", f"(echo hello; sleep 2) | timeout 10 openssl s_client -connect 10.77.0.41:11332 -quiet {with_cert}")
    time.sleep(1)
    return ssh("filter1", f"journalctl -u mailstack-milter-tls -o cat --no-pager --since @{since}").stdout


def test_the_milter_tunnel_admits_only_the_platforms_postfix_hosts(addr, inv):
    filter_address = addr["filter1"]
    assert not reachable(filter_address, 11332)  # this machine: the firewall drops it
    for name in ("ext", "mb1"):
        assert ssh(name, f"timeout 5 bash -c '</dev/tcp/{filter_address}/11332'").returncode != 0, name
    # from an MX host, which the firewall lets through: only its own certificate opens the tunnel
    bare = tunnel_attempt("", "")
    assert "peer did not return a certificate" in bare and "0 byte(s) sent to socket" in bare, bare
    cert, key = host_certificate(inv, "mb1", PLANS["mb1"].certificate_names)  # valid, but no Postfix host's
    subprocess.run(["scp", "-q", "-F", str(SSH_CONFIG), str(cert), str(key), "mx1:/tmp/"], check=True)
    try:
        refused = tunnel_attempt(f"/tmp/{cert.name}", f"/tmp/{key.name}")
    finally:
        ssh("mx1", f"rm -f /tmp/{cert.name} /tmp/{key.name}")
    assert "Rejected by CERT at depth=0: CN=mb1.lab.test" in refused and "0 byte(s) sent to socket" in refused
    admitted = tunnel_attempt("/etc/mailstack/tls/cert.pem", "/etc/mailstack/tls/key.pem")
    assert "Certificate accepted at depth=0: CN=mx1.lab.test" in admitted, admitted
    assert "6 byte(s) sent to socket" in admitted, admitted  # "hello\n" reached rspamd's milter
    # the plain milter (rspamd) listens on loopback; the host's address has the TLS end only
    listeners = {line.split()[3] for line in host("filter1").check_output("ss -Htlnp sport = :11332").splitlines()
                 if "stunnel" not in line}
    assert listeners == {"127.0.0.1:11332"}


@pytest.mark.parametrize("mx", ["mx1", "mx2"])
def test_logins_on_a_submission_host_without_mailboxes(addr, fqdn, ca_file, tag, mx, filter_ready):
    with pytest.raises(smtplib.SMTPAuthenticationError):
        submit(addr[mx], fqdn[mx], ca_file, "alice@example.test", message("alice@example.test", OUTSIDE, tag),
               password=f"wrong-{tag}")
    submit(addr[mx], fqdn[mx], ca_file, "dave@tenant-b.test", message("dave@tenant-b.test", OUTSIDE, tag))
    assert wait_for_outside(tag), f"dave's mail through {mx} did not arrive at ext"
    assert host(mx).run("test -e /var/vmail/example.test").rc != 0  # no mailbox here, only the logins


def wait_for_outside(tag: str, count: int = 1, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = ssh("ext", f"doveadm search -u {OUTSIDE} mailbox INBOX subject {tag}").stdout.splitlines()
        if len(found) >= count:
            return True
        time.sleep(1)
    return False


def test_mx1_down_mail_comes_in_through_mx2(addr, fqdn, ca_file, tag, filter_ready):
    mx1 = host("mx1")
    mx1.run("systemctl stop postfix")
    try:
        wait_until(lambda: not reachable(addr["mx1"], 25), 30, "Postfix on mx1 stopped")
        from_outside(addr, fqdn, ca_file, message(OUTSIDE, "alice@example.test", tag))
        raw = imap_find(addr[PROXY], fqdn[PROXY], ca_file, "alice@example.test", tag, timeout=120)
        assert raw is not None, "mail did not come in through the second MX"
        assert f"by {fqdn['mx2']} (Postfix)".encode() in raw
    finally:
        mx1.run("systemctl start postfix")


def smtp_reply(address: str, recipient: str) -> tuple[int, bytes]:
    """What an MX says to a message for `recipient` from this machine (port 25)."""
    try:
        with smtplib.SMTP(address, 25, timeout=60, local_hostname="client.lab.test") as client:
            client.sendmail(OUTSIDE, [recipient], message(OUTSIDE, recipient, "probe").as_bytes())
            return 250, b""
    except smtplib.SMTPRecipientsRefused as err:
        return next(iter(err.recipients.values()))
    except smtplib.SMTPResponseException as err:
        return err.smtp_code, err.smtp_error


def test_filter_host_down_both_mx_defer_and_nothing_is_lost(addr, fqdn, ca_file, tag, filter_ready):
    filter_host = host("filter1")
    filter_host.run("systemctl stop rspamd")
    try:
        for mx in ("mx1", "mx2"):
            code, text = smtp_reply(addr[mx], "alice@example.test")
            assert 400 <= code < 500, (mx, code, text)
        from_outside(addr, fqdn, ca_file, message(OUTSIDE, "dave@tenant-b.test", tag))
        time.sleep(5)
        assert imap_find(addr[PROXY], fqdn[PROXY], ca_file, "dave@tenant-b.test", tag, timeout=5) is None
        assert tag in ssh("ext", "postqueue -p").stdout or ssh("ext", "mailq").stdout  # waiting at ext
    finally:
        filter_host.run("systemctl start rspamd")
    wait_until(lambda: filter_host.run("rspamc -h 127.0.0.1:11334 stat").rc == 0, 120, "rspamd back on filter1")
    ssh("ext", "postqueue -f")
    raw = imap_find(addr[PROXY], fqdn[PROXY], ca_file, "dave@tenant-b.test", tag, timeout=120)
    assert raw is not None, "the deferred mail was lost"


def sent_through(addr, fqdn, ca_file, mx: str, count: int, tag: str) -> list[int]:
    codes = []
    context = named_context(ca_file, fqdn[mx])
    with smtplib.SMTP(addr[mx], 587, timeout=60) as client:
        client.starttls(context=context)
        client.login(LIMITED, PASSWORD)
        for i in range(count):
            try:
                client.sendmail(LIMITED, [OUTSIDE], message(LIMITED, OUTSIDE, f"{tag}-{mx}-{i}").as_bytes())
                codes.append(250)
            except smtplib.SMTPResponseException as err:
                codes.append(err.smtp_code)
            except smtplib.SMTPRecipientsRefused as err:
                codes.append(next(iter(err.recipients.values()))[0])
    return codes


def test_one_limit_counts_on_both_submission_hosts(addr, fqdn, ca_file, tag, filter_ready):
    if time.time() % 60 > 45:  # one fixed minute window for the whole burst
        time.sleep(61 - time.time() % 60)
    forget = ("REDISCLI_AUTH=$(sed -n 's/^requirepass //p' /etc/redis/mailstack.conf) redis-cli --scan "
              f"--pattern 'mailstack:limits:{LIMITED}:*' | REDISCLI_AUTH=$(sed -n 's/^requirepass //p' "
              "/etc/redis/mailstack.conf) xargs -r redis-cli DEL")
    assert ssh("filter1", forget).returncode == 0
    codes = sent_through(addr, fqdn, ca_file, "mx1", 3, tag) + sent_through(addr, fqdn, ca_file, "mx2", 3, tag)
    assert codes == [250] * 4 + [451] * 2, codes  # 4 a minute, wherever she submits
    assert wait_for_outside(tag, 4)


def account(*args: str) -> subprocess.CompletedProcess:
    """`mailstack account` against the lab under test."""
    return subprocess.run([sys.executable, "-m", "mailstack.cli", "account", "--inventory", str(INVENTORY.file),
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def held_on(name: str, tag: str) -> list[str]:
    queue = [json.loads(line) for line in host(name).check_output("postqueue -j").splitlines()]
    return [e["queue_id"] for e in queue if e["queue_name"] == "hold"
            and tag in host(name).check_output(f"postcat -h -q {e['queue_id']}")]


def test_an_account_held_on_one_submission_host_is_released_from_the_filter_host(addr, fqdn, ca_file, tag,
                                                                                 filter_ready):
    user, recipients = "ivan@example.test", [OUTSIDE, "alice@example.test"]  # hold_after 3 (lab-multi.yml)
    assert account("release", user).returncode == 0
    codes = []
    with smtplib.SMTP(addr["mx2"], 587, timeout=60) as client:
        client.starttls(context=named_context(ca_file, fqdn["mx2"]))
        client.login(user, PASSWORD)
        for i in range(3):
            try:
                client.sendmail(user, recipients, message(user, OUTSIDE, f"{tag}-{i}").as_bytes())
                codes.append(250)
            except smtplib.SMTPResponseException as err:
                codes.append(err.smtp_code)
    assert codes == [250, 250, 451], codes  # the 2nd crosses 3 recipients: kept; then no more
    [queue_id] = held_on("mx2", tag)
    assert held_on("mx1", tag) == []
    status = account("status", user)
    assert "on hold              yes" in status.stdout and queue_id in status.stdout, status
    assert not wait_for_outside(f"{tag}-1", timeout=5), "the held message must not leave"
    done = account("release", user)
    assert done.returncode == 0 and "1 held message(s) released" in done.stdout, done  # on mx2
    assert wait_for_outside(f"{tag}-1"), "the released message did not arrive"
    assert "on hold              no" in account("status", user).stdout


def test_the_gateway_on_its_own_host_signs_and_encrypts_for_both_submission_hosts(addr, fqdn, ca_file, tag,
                                                                                 filter_ready, tmp_path):
    for mx in ("mx1", "mx2"):
        submit(addr[mx], fqdn[mx], ca_file, "alice@example.test",
               message("alice@example.test", OUTSIDE, f"{tag}-{mx}", body=f"Confidential {tag}\n"))
    for mx in ("mx1", "mx2"):
        raw = imap_find(addr["ext"], fqdn["ext"], ca_file, OUTSIDE, f"{tag}-{mx}")
        assert raw is not None, f"alice's mail through {mx} did not reach ext"
        assert f"Confidential {tag}".encode() not in raw and b"enveloped-data" in raw  # encrypted for ext.test
        partner_cert, partner_key = domain_certificate(INVENTORY, "ext.test")
        opened = subprocess.run(["openssl", "cms", "-decrypt", "-recip", str(partner_cert), "-inkey", str(partner_key)],
                                input=raw, capture_output=True, timeout=60)
        assert opened.returncode == 0, opened.stderr
        signer = tmp_path / f"signer-{mx}.pem"
        verified = subprocess.run(["openssl", "cms", "-verify", "-CAfile", ca_file, "-signer", str(signer)],
                                  input=opened.stdout, capture_output=True, timeout=60)
        assert verified.returncode == 0 and f"Confidential {tag}".encode() in verified.stdout, verified.stderr
        assert signer.read_bytes().strip() in domain_certificate(INVENTORY, "example.test")[0].read_bytes()
    for port in (10025, 10028):  # the gateway takes mail from the platform's Postfix hosts only
        assert not reachable(addr["gw"], port)
        assert ssh("ext", f"timeout 5 bash -c '</dev/tcp/{addr['gw']}/{port}'").returncode != 0


STORES = ("store1", "store2", "store3")


def s3_at(name: str, fqdn, ca_file: str):
    """The backup key's S3 client at one storage host's gateway."""
    key_id, key = store.credentials(INVENTORY, "backup")
    return boto3.client("s3", endpoint_url=f"https://{fqdn[name]}:{INVENTORY.s3['port']}", aws_access_key_id=key_id,
                        aws_secret_access_key=key, region_name="us-east-1", verify=ca_file,
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                                      connect_timeout=5, read_timeout=30))


def read_back(name: str, fqdn, ca_file: str, key: str, timeout: float = 90) -> bytes | None:
    """The object as one host's gateway serves it, once it does (a filer follows the others
    within moments; after a host went down the masters first elect a leader)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return s3_at(name, fqdn, ca_file).get_object(Bucket=INVENTORY.s3["buckets"]["backup"],
                                                         Key=key)["Body"].read()
        except (ClientError, BotoCoreError):
            if time.monotonic() > deadline:
                return None
            time.sleep(2)


def volumes(name: str) -> set[str]:
    """The SeaweedFS volume files on one storage host."""
    listing = host(name).check_output(f"find {INVENTORY.s3['data_dir']} -name '*.dat' -printf '%f\\n'")
    return set(listing.split())


def test_the_storage_cluster_keeps_each_object_on_two_hosts_and_serves_it_while_one_is_down(fqdn, ca_file, tag,
                                                                                           lab_names):
    key, body = f"test/{tag}", os.urandom(300_000)
    # once in CI, a fresh cluster's gateway refused the valid key (AccessDenied) for a while:
    # SeaweedFS's gateways follow the identities in the filer too; wait for it, boundedly
    deadline = time.monotonic() + 60
    while True:
        try:
            s3_at("store1", fqdn, ca_file).put_object(Bucket=INVENTORY.s3["buckets"]["backup"], Key=key, Body=body)
            break
        except ClientError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)
    for name in STORES:  # any gateway serves it
        assert read_back(name, fqdn, ca_file, key) == body, name
    held = [volumes(name) for name in STORES]
    every = set().union(*held)
    assert every and all(sum(v in h for h in held) == 2 for v in every), held  # each volume on two hosts
    host("store1").run("systemctl stop mailstack-seaweedfs")
    try:
        for name in STORES[1:]:
            assert read_back(name, fqdn, ca_file, key) == body, f"{name} lost the object while store1 was down"
    finally:
        host("store1").run("systemctl start mailstack-seaweedfs")
    assert read_back("store1", fqdn, ca_file, key) == body  # back, and in the cluster again


def test_the_storage_hosts_talk_only_to_each_other_and_only_over_mutual_tls(addr):
    for port in storage.INTERNAL:
        assert not reachable(addr["store1"], port), f"store1:{port} is open to this machine"
        assert ssh("mx1", f"timeout 5 bash -c '</dev/tcp/{addr['store1']}/{port}'").returncode != 0, port
    # another storage host reaches the master, but not without TLS and a certificate
    plain = ssh("store2", "python3 -c \"import http.client; c = http.client.HTTPConnection('store1.lab.test', 9333, "
                          "timeout=5); c.request('GET', '/cluster/status'); print(c.getresponse().status)\"")
    assert plain.returncode != 0 or plain.stdout.strip() != "200", plain
    bare = ssh("store2", "python3 -c \"import http.client, ssl; c = http.client.HTTPSConnection('store1.lab.test', "
                         "9333, timeout=5, context=ssl.create_default_context()); c.request('GET', '/cluster/status'); "
                         "print(c.getresponse().status)\"")
    assert bare.returncode != 0, bare.stdout  # no client certificate: refused
    with_cert = ssh("store2", "python3 -c \"import http.client, ssl; x = ssl.create_default_context(); "
                              "x.load_cert_chain('/etc/seaweedfs/tls/cert.pem', '/etc/seaweedfs/tls/key.pem'); "
                              "c = http.client.HTTPSConnection('store1.lab.test', 9333, timeout=5, context=x); "
                              "c.request('GET', '/cluster/status'); print(c.getresponse().status)\"")
    assert with_cert.stdout.strip() == "200", with_cert.stderr
