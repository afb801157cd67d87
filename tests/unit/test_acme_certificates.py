"""ACME certificates as the deploy renders them (tls.source: acme), and what `mailstack check`
refuses. The lab test (tests/lab/test_acme.py) runs them against Pebble."""

import pytest
from test_rendered import LAB, rendered, secrets_home, services  # noqa: F401 (secrets_home: a scratch home)
from unitdata import VALID

from deploys.acme import HOOK, PROGRAM, SITE, state_dir
from mailstack.inventory import check_text
from mailstack.lab.recipes import closed
from mailstack.plan import plans
from mailstack.secrets import host_key, lab_acme_roots, lab_ca
from mailstack.tls import CERT, CERTIFICATES, KEY, certificate_files, lab_acme_ca, pem_blocks, trusted, trusted_file

ROOT_PEM = """-----BEGIN CERTIFICATE-----
MIIBhTCCASugAwIBAgIUVq3YrqPGZ5t1v2o0lF3oYXpRZ0UwCgYIKoZIzj0EAwIw
-----END CERTIFICATE-----
"""


@pytest.fixture
def roots(tmp_path):
    path = tmp_path / "roots.pem"
    path.write_text(ROOT_PEM)
    return path


def acme_lab(roots, extra: str = "") -> str:
    """The lab inventory (whose certificates come by ACME) naming the CA's roots too."""
    assert "  source: acme\n" in LAB
    return LAB.replace("  source: acme\n", f"  source: acme\n  acme_roots: {roots}\n{extra}", 1)


def test_an_acme_host_gets_its_key_and_the_means_to_fetch_its_certificate_never_a_certificate(roots):
    inv = check_text(acme_lab(roots), "lab.yml")
    plan = plans(inv)["mail"]
    files = rendered(acme_lab(roots), "mail")
    assert CERT not in files  # the host fetches it
    key = host_key(inv, "mail").read_bytes()
    state = state_dir(inv)
    assert files[KEY].content == key and files[KEY].secret and files[KEY].mode == "0600"
    # uacme signs the order with the very key the TLSA records pin, and may never make its own
    assert files[f"{state}/private/mail.lab.test/key.pem"].content == key
    assert "--never-create" in files[PROGRAM].content.decode()
    assert files[CERTIFICATES].lines == [f"{path} {' '.join(names)}" for path, names in certificate_files(plan)]
    assert files[f"{state}/directory"].lines == ["https://ext.lab.test:14000/dir"]
    # every daemon serving the certificate takes a renewed one
    readers = next(line.strip() for line in files[PROGRAM].lines if line.strip().startswith("for unit in"))[12:-4].split()
    assert {"postfix", "dovecot", "nginx", "glewlwyd", "mailstack-seaweedfs", "mailstack-smime"} <= set(readers)
    assert "    listen 80 default_server;" in files[SITE].lines
    assert any(line.strip().startswith("tcp dport 80 accept") for line in files["/etc/nftables.conf"].lines)
    # the CA's roots and (a lab) the lab CA are trusted
    anchors = sorted(p for p in files if p.startswith("/usr/local/share/ca-certificates/"))
    assert len(anchors) == 2 and files[anchors[1]].content.decode() == ROOT_PEM


def test_daemons_with_users_of_their_own_read_the_certificate_systemd_hands_them(roots):
    files = rendered(acme_lab(roots), "mail")
    for unit in ("glewlwyd", "mailstack-seaweedfs", "mailstack-smime"):
        dropin = files[f"/etc/systemd/system/{unit}.service.d/mailstack-certificate.conf"].lines
        assert f"LoadCredential=cert.pem:{CERT}" in dropin and f"LoadCredential=key.pem:{KEY}" in dropin
    assert 'secure_connection_pem_file="/run/credentials/glewlwyd.service/cert.pem"' in \
        files["/etc/glewlwyd/glewlwyd.conf"].lines
    assert not any(path.endswith("/tls/key.pem") and path != KEY for path in files)  # no copy to fall behind


def test_the_hosts_that_play_the_outside_world_keep_the_lab_ca(roots):
    files = rendered(acme_lab(roots), "ext")
    assert CERT in files and PROGRAM not in files and HOOK not in files


def test_a_second_render_is_the_same(roots):
    first = [(f.path, f.content) for s in services(acme_lab(roots), "mail") for f in s.files]
    assert first == [(f.path, f.content) for s in services(acme_lab(roots), "mail") for f in s.files]


@pytest.mark.parametrize("change,error", [
    ("  acme_renew_days: 21\n", r"tls.acme_renew_days: renewal begins 21 days before expiry, but "
                                r"monitoring.certificate_days alerts at 21"),
    ("  acme_challenge: dns-01\n", r"tls.acme_challenge: 'dns-01' is not implemented yet"),
])
def test_check_refuses_what_acme_cannot_do(roots, change, error):
    with pytest.raises(Exception, match=error):
        check_text(acme_lab(roots, change), "lab.yml")


def test_check_refuses_a_plain_http_directory_and_roots_that_are_no_certificates(tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    text = VALID + f"tls:\n  source: acme\n  acme_directory: http://ca.example/dir\n  acme_roots: {junk}\n"
    with pytest.raises(Exception) as found:
        check_text(text, "inv.yml")
    assert "tls.acme_directory: an ACME directory is reached over HTTPS only" in str(found.value)
    assert f"tls.acme_roots: {junk} is not a PEM file of 1 to 8 certificates" in str(found.value)


def test_acme_settings_without_acme_are_refused(roots):
    with pytest.raises(Exception, match=r"tls.acme_email: has no effect unless tls.source is 'acme'"):
        check_text(VALID + "tls:\n  acme_email: ops@one.example\n", "inv.yml")


def test_nauthilus_under_acme_is_refused_until_it_takes_renewals(roots):
    text = VALID.replace("roles: [smime]", "roles: [smime, auth]") + (
        "tls:\n  source: acme\n"
        "nauthilus: {enabled: true, artifact: nauthilus}\n"
        "artifacts:\n  nauthilus: {version: 1.0.0, url: https://example.org/n.tar.gz, sha256: 'a"
        + "0" * 63 + "'}\n")
    with pytest.raises(Exception, match=r"Nauthilus with tls.source 'acme' is not implemented yet"):
        check_text(text, "inv.yml")


def other_root(n: int) -> str:
    return ROOT_PEM.replace("MIIB", f"MII{n}").strip()


def test_the_lab_trusts_the_roots_its_own_acme_ca_had_once_it_fetched_them(roots, monkeypatch):
    """The lab's Pebble makes a new root at each start: `lab up` keeps the newest few (older
    certificates still chain to theirs), and every host and the tests' CA file trust them."""
    from mailstack.lab import acme

    inv = check_text(LAB, "lab.yml")
    assert lab_acme_ca(inv) and lab_acme_roots(inv) not in trusted(inv)  # before the lab fetched any
    starts = iter(range(1, 7))
    monkeypatch.setattr(acme, "current_root", lambda inv, wait=0: other_root(next(starts)))
    for _ in range(6):
        assert acme.trust_current_root(inv)
    kept = pem_blocks(lab_acme_roots(inv).read_text())
    assert kept == [other_root(n) for n in range(3, 7)]  # the newest LAB_ACME_ROOTS, newest last
    monkeypatch.setattr(acme, "current_root", lambda inv, wait=0: other_root(6))
    assert not acme.trust_current_root(inv)  # known: no deploy needed
    anchors = sorted(p for p in rendered(LAB, "mail") if p.startswith("/usr/local/share/ca-certificates/mailstack-"))
    assert len(anchors) == 5  # the lab CA (ext keeps it) and the four roots
    assert pem_blocks(trusted_file(inv).read_text()) == [lab_ca(inv)[0].read_text().strip(), *kept]


def test_the_closed_lab_takes_every_certificate_from_the_lab_ca():
    inv = check_text(closed(LAB), "lab.yml")
    assert inv.tls["source"] == "lab-ca" and not lab_acme_ca(inv)
    assert closed(LAB).replace("tls: {source: lab-ca}  # every certificate from the lab CA\n", "") == \
        LAB[:LAB.index("\ntls:") + 1] + LAB[LAB.index("\nlimits:"):]
    assert CERT in rendered(closed(LAB), "mail")
