"""SRS (deploys/srs/) as rendered: postsrsd on MX hosts with the platform's domains excluded
and one secret for all, its tables in Postfix through the extension point, a domain that is
not the platform's refused with its line."""

import pytest
from unitdata import LAB_CLAMAV, ROOT, VALID

from deploys import COMPONENTS, configured, postfix
from mailstack.inventory import InventoryInvalid, check_text
from mailstack.plan import plans

MULTI = (ROOT / "inventories" / "lab-multi.yml").read_text()


def files(text: str, host: str) -> dict[str, list[str]]:
    plan = plans(check_text(text, "inv.yml"))[host]
    return {f.path: f.lines for c in plan.components for s in configured(c, plan) for f in s.files}


def test_mx_hosts_rewrite_foreign_senders_and_reverse_them_for_delivery_here():
    found = files(VALID, "mx1")
    default = found["/etc/default/postsrsd"]
    assert "SRS_DOMAIN=one.example" in default  # the first platform domain
    assert "SRS_EXCLUDE_DOMAINS=one.example,two.example" in default
    assert "SRS_LISTEN_ADDR=127.0.0.1" in default
    main = found[postfix.MAIN_CF]
    assert {"sender_canonical_maps = tcp:127.0.0.1:10001", "sender_canonical_classes = envelope_sender",
            "recipient_canonical_maps = tcp:127.0.0.1:10002", "recipient_canonical_classes = envelope_recipient",
            "lmtp_generic_maps = tcp:127.0.0.1:10002"} <= set(main)
    assert not any(line.startswith("smtp_generic_maps") for line in main)  # mail that leaves keeps the SRS sender


def test_every_mx_host_signs_with_the_same_secret_and_no_other_host_runs_postsrsd():
    inv = check_text(MULTI, "lab-multi.yml")
    found = plans(inv)
    srs = next(c for c in COMPONENTS if c.name == "srs")
    mx = [h.name for h in inv.hosts if "mx" in h.roles and not h.outside]
    assert len(mx) >= 2
    secrets = {bytes(f.content) for name in mx for s in configured(srs, found[name]) for f in s.files
               if f.path == "/etc/postsrsd.secret"}
    assert len(secrets) == 1 and all(f.secret for s in configured(srs, found[mx[0]]) for f in s.files
                                     if f.path == "/etc/postsrsd.secret")
    assert all(srs not in p.components for p in found.values() if p.name not in mx)


def test_switched_off_postfix_has_no_srs_tables():
    found = files(VALID + "srs: {enabled: false}\n", "mx1")
    assert "/etc/default/postsrsd" not in found
    assert not any("canonical" in line for line in found[postfix.MAIN_CF])


def test_an_srs_domain_that_is_not_the_platforms_is_refused_with_its_line():
    text = VALID + "srs:\n  domain: elsewhere.example\n"
    with pytest.raises(InventoryInvalid) as refused:
        check_text(text, "inv.yml")
    assert f"inv.yml:{text.count(chr(10))} srs.domain: elsewhere.example is not a domain of the platform" \
        in str(refused.value)
    assert "SRS_DOMAIN=two.example" in files(VALID + "srs: {domain: two.example}\n", "mx1")["/etc/default/postsrsd"]



def test_without_a_platform_domain_there_is_no_srs_to_run():
    """Every domain's MX is a lab host that plays the outside world: mx1 has no domain to make
    SRS addresses in, so it runs no postsrsd (rather than failing to plan)."""
    text = VALID.replace("  postmaster: postmaster@one.example\n", "  postmaster: postmaster@one.example\n  lab: true\n")
    text = text.replace("roles: [smime]", "roles: [mx]\n    outside: true").replace("mx: [mx1]", "mx: [other]")
    found = plans(check_text(text + LAB_CLAMAV, "inv.yml"))
    assert "mx" in found["mx1"].roles and not found["mx1"].runs("srs") and not found["other"].runs("srs")
