"""The host plan, computed once from the inventory: what each host serves, the firewall
(public ports by role, internal ports only for the hosts that use them), who talks to
whom, and what only a lab does."""

import json

import pytest
from unitdata import LAB_CLAMAV, ROOT, VALID

from deploys import (
    COMPONENTS,
    backup_lock,
    dovecot,
    lmtp_link,
    loopback,
    postfix,
    storage,
)
from mailstack import s3 as store
from mailstack import tls
from mailstack.conventions import SUBMISSION_VIA_GATEWAY
from mailstack.dns import domain_records
from mailstack.inventory import check_text, load
from mailstack.lab.image import Recipe
from mailstack.plan import plans


def rules(inventory: str) -> dict[str, set[str]]:
    inv = load(ROOT / "inventories" / inventory)
    return {name: {o.rule().split(" accept")[0] for o in plan.openings} for name, plan in plans(inv).items()}


def test_a_gateway_on_its_own_host_is_reachable_from_the_mtas_only():
    found = rules("multi-host.example.yml")
    mtas = "ip saddr { 198.51.100.11, 198.51.100.12 }"
    assert found["smime"] == {"tcp dport 22", f"{mtas} tcp dport 10025", f"{mtas} tcp dport 10028"}
    for mta in ("mail1", "mail2"):
        assert {"ip saddr { 10.20.0.25 } tcp dport 10026", "ip saddr { 10.20.0.25 } tcp dport 10027"} <= found[mta]
        assert not any(p in r for r in found[mta] for p in ("6379", "11332", "11333", "11334", "10025"))


def test_pop3_on_110_opens_only_where_a_hosted_domain_offers_it():
    found = rules("multi-host.example.yml")
    assert "tcp dport 110" in found["mail2"]  # clinic.example: pop3_starttls
    assert "tcp dport 110" not in found["mail1"]


def test_single_host_lab_publishes_nothing_internal():
    found = rules("lab.yml")
    assert found["mail"] == {f"tcp dport {p}" for p in (22, 25, 80, 110, 143, 443, 465, 587, 993, 995, 4593)} | {
        "ip saddr { 10.77.0.1 } tcp dport 8333"}  # ACME's HTTP-01, IdP; S3 for the tests' machine only (s3.clients)
    assert {"tcp dport 53", "udp dport 53"} <= found["ext"]


def test_components_follow_the_roles_in_one_order():
    lab = plans(load(ROOT / "inventories" / "lab.yml"))
    assert [c.name for c in lab["mail"].components] == [
        "base", "tls", "acme", "idp", "storage", "backup_lock", "clamav", "peekaboo", "siem", "redis", "limits", "dmarc_reports",
        "smime_verify", "rspamd", "ldap",
        "dovecot", "reports", "smime", "srs", "outbound_tls", "postfix", "webmail", "web", "bruteforce", "backup", "exporters", "monitoring", "loopback"]
    assert [c.name for c in lab["ext"].components] == ["base", "tls", "dns", "acme_ca", "siem-receiver", "pager-receiver",
                                                       "directory", "dovecot", "postfix", "bruteforce", "exporters"]


def test_the_lab_image_is_derived_from_the_declarations():
    assert set(Recipe.of(COMPONENTS).packages) == {p for c in COMPONENTS for p in c.packages}
    assert {"postfix.service", "dovecot.service", "rspamd.service", "redis-server.service", "nsd.service",
            "unbound.service", "unbound-resolvconf.service"} <= set(Recipe.of(COMPONENTS).disabled_units)
    assert "clamav-freshclam.service" in Recipe.of(COMPONENTS).disabled_units  # never started before the deploy decides
    # answers a package asks before it installs (else apt stops, or picks what the deploy did not)
    assert {"postfix postfix/main_mailer_type select No configuration",
            "glewlwyd glewlwyd/database-type select sqlite3"} <= set(Recipe.of(COMPONENTS).preseed)


def test_lab_only_facts_are_in_the_plan_not_in_the_deploys():
    lab = plans(load(ROOT / "inventories" / "lab.yml"))["mail"]
    production = plans(load(ROOT / "inventories" / "multi-host.example.yml"))["mail1"]
    assert lab.resolver.isolated and "example.test" in lab.resolver.zones and lab.resolver.nameservers == ("10.77.0.20",)
    assert not production.resolver.isolated and production.resolver.zones == ()
    assert (lab.dnssec_probe, production.dnssec_probe) == ("", "ns:.")
    assert (lab.tune_kernel, production.tune_kernel) == (False, True)
    ext = plans(load(ROOT / "inventories" / "lab.yml"))["ext"]
    assert ext.milter is None and ext.gateway is None  # the outside world has no filter, no gateway


def test_the_gateway_hop_is_one_fact_for_both_sides():
    multi = plans(load(ROOT / "inventories" / "multi-host.example.yml"))
    for name in ("mail1", "mail2", "smime"):
        hop = multi[name].gateway
        assert hop.connect == "smime.mail.uni.example" and not hop.plaintext
        assert hop.mta_addresses == ("198.51.100.11", "198.51.100.12")
    loopback = VALID.replace("roles: [mx, submission, mailbox, filter]", "roles: [mx, submission, mailbox, filter, smime]")
    loopback = loopback.replace("roles: [smime]", "roles: [dns]") + "smime: {plaintext_loopback: true}\n"
    loopback = loopback.replace("  postmaster: postmaster@one.example\n", "  postmaster: postmaster@one.example\n  lab: true\n")
    loopback += LAB_CLAMAV
    hop = plans(check_text(loopback, "inv.yml"))["mx1"].gateway
    assert (hop.connect, hop.gateway_listen, hop.plaintext) == ("127.0.0.1", "127.0.0.1", True)


def test_a_split_platform_talks_across_hosts_only_over_tls_and_only_where_needed():
    multi = plans(load(ROOT / "inventories" / "lab-multi.yml"))
    found = rules("lab-multi.yml")
    mtas = "ip saddr { 10.77.0.11, 10.77.0.12 }"
    # the filter host: the milter only inside the tunnel, only for the Postfix hosts
    assert found["filter1"] == {"tcp dport 22", f"{mtas} tcp dport 11332"}
    assert multi["filter1"].filter_link.side == "server"
    assert [h.name for h in multi["filter1"].filter_link.mtas] == ["mx1", "mx2"]
    # each mailbox backend: LMTP only for the MX hosts, login ports for everyone
    for backend in ("mb1", "mb2"):
        assert f"{mtas} tcp dport 24" in found[backend]
        assert [h.name for h in multi[backend].lmtp_clients] == ["mx1", "mx2"]
        assert multi[backend].filter_link is None and multi[backend].milter is None
        # ...inside TLS that wants their certificates; Dovecot's LMTP on loopback, for stunnel alone
        (link,) = lmtp_link.configure(multi[backend])
        tunnel = link.file(lmtp_link.CONFIG).content.decode()
        address = multi[backend].host.address
        for line in (f"accept = {address}:24", "connect = 127.0.0.1:2424", "client = no", "verifyChain = yes",
                     "checkHost = mx1.lab.test", "checkHost = mx2.lab.test"):
            assert line in tunnel.splitlines(), line
        assert multi[backend].listeners >= {(address, 24), ("127.0.0.1", 2424)}
        assert loopback.rules(multi[backend]) == ['oif "lo" tcp dport 2424 meta skuid != { root, stunnel4 } reject with tcp reset']
    for mx in ("mx1", "mx2"):
        plan = multi[mx]
        assert plan.milter == "127.0.0.1" and plan.filter_link.side == "client"  # the tunnel's end
        assert ("127.0.0.1", 11332) in plan.listeners and not any(o.port in (24, 11332) for o in plan.openings)
        assert [c.name for c in plan.components if c.name in ("rspamd", "filter-link", "dovecot")] == [
            "filter-link", "dovecot"]  # Dovecot for SASL only
        transport = postfix.maps(plan)["transport"]
        assert transport.splitlines() == ["example.test lmtp-tls:inet:[mb1.lab.test]:24",
                                          "tenant-b.test lmtp-tls:inet:[mb2.lab.test]:24",
                                          "bob@example.test lmtp-tls:inet:[mb2.lab.test]:24"]  # his own backend
        (lmtp,) = [s for s in postfix.services(plan) if s["line"].startswith("lmtp-tls ")]
        assert {"lmtp_tls_security_level=secure", "lmtp_tls_wrappermode=yes",
                f"lmtp_tls_cert_file={tls.CERT}", f"lmtp_tls_key_file={tls.KEY}"} <= set(lmtp["options"])
        assert {d.name for d in plan.login_domains} == {"example.test", "tenant-b.test"}
    # one host with everything needs no tunnel and no LMTP port
    single = plans(load(ROOT / "inventories" / "lab.yml"))["mail"]
    assert single.filter_link is None and single.lmtp_clients == ()
    assert "filter-link" not in [c.name for c in single.components]


UNIT = "/etc/systemd/system/mailstack-seaweedfs.service"


def test_s3_opens_to_the_hosts_that_back_up_there_each_with_its_own_folder(tmp_path):
    """Backups on: the mailbox hosts reach S3 (and `s3.clients`, one rule per address
    family), nobody else; each backs up with a key of its own, for its own folder."""
    text = (ROOT / "inventories" / "lab-multi.yml").read_text().replace(
        "  clients: [10.77.0.1]", "  clients: [10.77.0.1, 'fd00:77::/64']") + "\nbackup: {enabled: true}\n"
    (tmp_path / "inventory.yml").write_text(text)
    inv = load(tmp_path / "inventory.yml")
    store = plans(inv)["store1"]
    s3 = {o.rule().split(" accept")[0] for o in store.openings if o.port == inv.s3["port"]}
    assert s3 == {"ip saddr { 10.77.0.31, 10.77.0.32, 10.77.0.1 } tcp dport 8333",
                  "ip6 saddr { fd00:77::/64 } tcp dport 8333"}
    identities = {i["name"]: i for i in json.loads(storage.identities(inv))["identities"]}
    for host in ("mb1", "mb2"):
        assert identities[f"backup-{host}"]["actions"] == [
            "Read:mailstack-backup", f"Write:mailstack-backup/{host}/*", f"List:mailstack-backup/{host}/*",
            f"Tagging:mailstack-backup/{host}/*"]
    keys = {i["credentials"][0]["accessKey"] for i in identities.values()}
    assert len(keys) == len(identities)  # no two hosts, and no host and the operator, share a key


def test_the_first_storage_host_alone_keeps_the_backups_locked(tmp_path):
    """Backups on (locked by default): the backup bucket is made with object lock, and only
    the store's first host gets the lock keeper, its key (Admin on that bucket only, and
    never on a mailbox host) and the daily renewal; with locked_days 0 none of it."""
    text = (ROOT / "inventories" / "lab-multi.yml").read_text() + "\nbackup: {enabled: true}\n"
    (tmp_path / "inventory.yml").write_text(text)
    inv = load(tmp_path / "inventory.yml")
    found = plans(inv)
    keepers = [name for name, plan in found.items() if backup_lock.COMPONENT in plan.components]
    assert keepers == ["store1"]
    tool = {f.path: f for s in backup_lock.configure(found["store1"]) for f in s.files}
    assert "DAYS = 30" in tool[backup_lock.TOOL].lines and "LONGEST = 60" in tool[backup_lock.TOOL].lines
    assert tool[backup_lock.KEYS].secret and tool[backup_lock.KEYS].mode == "0600"
    assert tool[backup_lock.KEYS].lines == list(store.lock_credentials(inv))
    identities = {i["name"]: i["actions"] for i in json.loads(storage.identities(inv))["identities"]}
    assert identities["backup-lock"] == ["Read:mailstack-backup", "List:mailstack-backup", "Admin:mailstack-backup"]
    assert not any("Admin" in a for name, actions in identities.items() if name != "backup-lock" for a in actions)
    buckets = next(f for s in storage.configure(found["store1"]) for f in s.files if f.path.endswith("/buckets"))
    assert buckets.lines == ["mailstack-backup locked", "mailstack-archive"]

    (tmp_path / "inventory.yml").write_text(text.replace("{enabled: true}", "{enabled: true, locked_days: 0}"))
    unlocked = load(tmp_path / "inventory.yml")
    assert not any(backup_lock.COMPONENT in plan.components for plan in plans(unlocked).values())
    assert "backup-lock" not in storage.identities(unlocked)
    buckets = next(f for s in storage.configure(plans(unlocked)["store1"]) for f in s.files
                   if f.path.endswith("/buckets"))
    assert buckets.lines == ["mailstack-backup", "mailstack-archive"]


def test_storage_hosts_form_one_cluster_that_only_they_reach():
    multi = plans(load(ROOT / "inventories" / "lab-multi.yml"))
    found = rules("lab-multi.yml")
    peers = {"store1": "10.77.0.52, 10.77.0.53", "store2": "10.77.0.51, 10.77.0.53", "store3": "10.77.0.51, 10.77.0.52"}
    for name, others in peers.items():
        assert found[name] == {"tcp dport 22", "ip saddr { 10.77.0.1 } tcp dport 8333",
                               *(f"ip saddr {{ {others} }} tcp dport {p}" for p in storage.INTERNAL)}
        weed = next(s for s in storage.configure(multi[name]) if s.unit)
        assert (f"-ip={name}.lab.test -ip.bind={multi[name].host.address} -master.peers=store1.lab.test:9333,"
                "store2.lab.test:9333,store3.lab.test:9333 -master.defaultReplication=001") in \
            weed.file(UNIT).content.decode()
        assert 'allowed_commonNames = "store1.lab.test,store2.lab.test,store3.lab.test"' in \
            weed.file("/etc/seaweedfs/security.toml").content.decode()
    makers = {name: [s.on_change for s in storage.configure(multi[name]) if s.on_change] for name in peers}
    assert makers == {"store1": ["/usr/local/sbin/mailstack-s3-buckets /etc/seaweedfs/buckets store1.lab.test:9333"],
                      "store2": [], "store3": []}  # the cluster's buckets are made once, not raced for
    single = next(s for s in storage.configure(plans(load(ROOT / "inventories" / "lab.yml"))["mail"]) if s.unit)
    assert "-ip=127.0.0.1 -ip.bind=127.0.0.1 -volume.preStopSeconds=0 " in single.file(UNIT).content.decode()  # one host: loopback, no peers, no pre-stop wait
    alone = single.file("/etc/seaweedfs/security.toml")  # one host: no peers, but no way around S3 either
    assert alone.secret and "[jwt.filer_signing.read]" in alone.lines and "[grpc]" not in alone.lines


def test_users_read_mail_through_the_proxy_and_each_backend_holds_only_its_own():
    multi = plans(load(ROOT / "inventories" / "lab-multi.yml"))
    found = rules("lab-multi.yml")
    assert {"tcp dport 143", "tcp dport 993", "tcp dport 995"} <= found["proxy1"]
    for backend in ("mb1", "mb2"):  # mail ports for the proxy only
        assert {f"ip saddr {{ 10.77.0.25 }} tcp dport {p}" for p in (143, 993, 995)} <= found[backend]
        assert not {"tcp dport 143", "tcp dport 993", "tcp dport 995"} & found[backend]
    assert {"tcp dport 143", "tcp dport 993", "tcp dport 995"} <= found["ext"]  # the outside world: no proxy
    proxy = dovecot.passdb(multi["proxy1"], "imap").splitlines()
    assert [line.split(":")[0] for line in proxy] == ["alice@example.test", "bob@example.test", "gina@example.test",
                                                       "ivan@example.test", "dave@tenant-b.test"]
    assert proxy[1].endswith("::::::proxy=y host=mb2.lab.test hostip=10.77.0.32 port=993 ssl=yes")
    assert dovecot.passdb(multi["proxy1"], "pop3").splitlines()[0].endswith(
        "proxy=y host=mb1.lab.test hostip=10.77.0.31 port=995 ssl=yes")
    mb1, mb2 = (dovecot.passdb(multi[b], "imap") for b in ("mb1", "mb2"))
    assert ("bob@" not in mb1 and "alice@" in mb1) and ("alice@" not in mb2 and "bob@" in mb2 and "dave@" in mb2)
    assert "proxy=" not in mb1 + mb2 and "proxy=" not in dovecot.passdb(multi["mx1"], "smtp")
    assert {line.split(":")[0] for line in dovecot.userdb(multi["mb2"]).splitlines()} == {"bob@example.test",
                                                                                          "dave@tenant-b.test"}
    dns = {(r.name, r.type, r.value) for r in domain_records(multi["mb1"].inv, multi["mb1"].inv.domain("example.test"))}
    assert ("imap.example.test", "A", "10.77.0.25") in dns  # clients find the proxy


WITHOUT_GATEWAY = VALID.replace("roles: [smime]", "roles: [mailbox]")


@pytest.mark.parametrize("text,daemon,content_filter", [
    (WITHOUT_GATEWAY, "ORIGINATING", None),
    (VALID, SUBMISSION_VIA_GATEWAY, "content_filter=smime:[other.t.example]:10028"),
])
def test_submission_always_passes_rspamd(text, daemon, content_filter):
    services = postfix.services(plans(check_text(text, "inv.yml"))["mx1"])
    (submission,) = [s for s in services if s["line"].startswith("submission ")]
    options = submission["options"]
    assert not any(o.startswith("smtpd_milters=") for o in options)  # main.cf's rspamd milter applies
    assert f"milter_macro_daemon_name={daemon}" in options
    assert [o for o in options if o.startswith("content_filter=")] == ([content_filter] if content_filter else [])
    sender_checks = next(o for o in options if o.startswith("smtpd_sender_restrictions="))
    assert "submission-null-sender" in sender_checks and "reject_authenticated_sender_login_mismatch" in sender_checks


def test_loopback_ports_take_only_their_own_clients():
    """Each loopback daemon's clients, from the components on the host: Postfix at the milter
    (or the tunnel's server end on a filter host elsewhere), rspamd and Dovecot at Redis."""
    single = loopback.rules(plans(load(ROOT / "inventories" / "lab.yml"))["mail"])
    assert 'oif "lo" tcp dport 11332 meta skuid != { root, postfix } reject with tcp reset' in single
    assert 'oif "lo" tcp dport 6379 meta skuid != { root, _rspamd, dovecot } reject with tcp reset' in single
    assert 'oif "lo" tcp dport 11333 meta skuid != { root } reject with tcp reset' in single
    assert 'oif "lo" tcp dport 10030 meta skuid != { root, _rspamd } reject with tcp reset' in single  # S/MIME checks
    multi = plans(load(ROOT / "inventories" / "lab-multi.yml"))
    assert 'oif "lo" tcp dport 11332 meta skuid != { root, stunnel4 } reject with tcp reset' in loopback.rules(multi["filter1"])
    assert loopback.rules(multi["mx1"]) == [f'oif "lo" tcp dport {port} meta skuid != {{ root, postfix }} reject with tcp '
                                            'reset' for port in (8461, 8462, 10001, 10002, 11332)]
    # the TLS policy maps (MTA-STS, DANE first), postsrsd's tables, the milter


def provider(count: int, limit: str = "", source: str = "lab-ca") -> str:
    """VALID with `count` more domains on mx1 (each gives it two names: imap., smtp.)."""
    extra = "".join(f"  - {{name: d{i}.example, tenant: t{i}, mx: [mx1]}}\n" for i in range(count))
    return VALID.replace("domains:\n", f"domains:\n{extra}", 1) + f"tls: {{source: {source}{limit}}}\n"


def test_a_host_with_many_names_gets_certificates_of_a_hundred_names_each_domain_in_one():
    plan = plans(check_text(provider(150), "i.yml"))["mx1"]
    certificates = plan.certificates
    assert certificates[0][0] == "mx1.t.example"  # the host's own first, its FQDN first
    assert [len(c) for c in certificates] == [99, 100, 100, 6]  # 305 names; a domain never spans two
    assert all(len(c) <= 100 for c in certificates)
    owners = [{".".join(n.split(".")[1:]) for n in c[1:] if n.count(".") == 2} for c in certificates]
    assert not set.intersection(*owners[:2]) and not set.intersection(*owners[1:3])
    # every name once, in the order the host had them
    names = [n for c in certificates for n in c]
    assert len(names) == len(set(names)) == len(plan.certificate_names)
    assert [path for path, _ in tls.certificate_files(plan)] == [
        tls.CERT, *(f"{tls.SNI_DIR}/{c[0]}.pem" for c in certificates[1:])]


def test_a_domain_added_last_leaves_the_other_certificates_as_they_were():
    before = plans(check_text(provider(60, ", names_per_certificate: 10"), "i.yml"))["mx1"].certificates
    text = provider(60, ", names_per_certificate: 10").replace(
        "users:\n", "  - {name: late.example, tenant: late, mx: [mx1]}\nusers:\n", 1)
    after = plans(check_text(text, "i.yml"))["mx1"].certificates
    assert after[:len(before) - 1] == before[:-1]  # every full certificate as it was
    assert after[len(before) - 1][:len(before[-1])] == before[-1]  # the last one keeps its names
    assert "imap.late.example" in after[-1] and len(after) > 10


def test_the_operators_files_are_one_certificate_a_host(tmp_path):
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("x")
    text = provider(150, f", files: [{{host: mx1, certificate: {cert}, key: {key}}}, "
                         f"{{host: other, certificate: {cert}, key: {key}}}]", source="files")
    inv = check_text(text, "i.yml")
    names = [f"imap.d{i}.example" for i in range(150)]
    assert tls.grouped(inv, inv.host("mx1"), ["mx1.t.example", *names]) == (("mx1.t.example", *names),)


@pytest.mark.parametrize("value", [9, 101])
def test_names_per_certificate_stays_within_what_public_cas_issue(value):
    with pytest.raises(Exception, match="names_per_certificate"):
        check_text(provider(1, f", names_per_certificate: {value}"), "i.yml")
