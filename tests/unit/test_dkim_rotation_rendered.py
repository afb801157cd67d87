"""DKIM key rotation: the inventory names it (dkim.previous), both keys are published, and
signing moves to the new key only once the DNS serves it (the lab test rotates for real)."""

import pytest
from test_rendered import LAB, rendered, secrets_home  # noqa: F401 (secrets_home: a scratch home)

from mailstack import dkim
from mailstack.dns import zones
from mailstack.inventory import InventoryInvalid, check_text

SIGNING = "/etc/rspamd/local.d/dkim_signing.conf"


def rotating(text: str = LAB) -> str:
    return dkim.with_dkim(text, "lab.yml", "example.test", {"selector": "r2", "previous": "mail"})


def test_the_inventory_edit_touches_the_domains_dkim_only():
    text = rotating()
    changed = [line for line in text.splitlines() if line not in LAB.splitlines()]
    assert changed == ['    dkim: {selector: "r2", previous: "mail"}']
    assert check_text(text, "lab.yml").domain("example.test").dkim["previous"] == "mail"
    block = text.replace('    dkim: {selector: "r2", previous: "mail"}\n',
                         "    dkim:  # a block, with a comment\n      selector: r2\n      bits: 3072\n      previous: mail\n")
    retired = dkim.with_dkim(block, "lab.yml", "example.test", {}, dropped=("previous",))
    assert retired == text.replace('{selector: "r2", previous: "mail"}', '{selector: "r2", bits: 3072}')
    assert "previous" not in check_text(retired, "lab.yml").domain("example.test").dkim


def test_the_previous_selector_must_differ_from_the_signing_one():
    with pytest.raises(InventoryInvalid, match=r"domains\[0\]\.dkim\.previous: is the selector that signs"):
        dkim.with_dkim(LAB, "lab.yml", "example.test", {"selector": "mail", "previous": "mail"})


def test_both_keys_are_published_during_a_rotation():
    inv = check_text(rotating(), "lab.yml")
    names = {r.name for records in zones(inv).values() for r in records if "_domainkey" in r.name}
    assert {"r2._domainkey.example.test", "mail._domainkey.example.test"} <= names


@pytest.mark.parametrize("served,selector", [(False, "mail"), (True, "r2")])
def test_signing_moves_to_the_new_key_only_once_the_dns_serves_it(monkeypatch, served, selector):
    asked = []
    monkeypatch.setattr(dkim, "served", lambda inv, domain, name, asking: asked.append(name) or served)
    lines = rendered(rotating(), "mail")[SIGNING].lines
    at = lines.index("  example.test {")
    assert lines[at + 1:at + 3] == [f'    selector = "{selector}";',
                                    f'    path = "/var/lib/rspamd/dkim/example.test.{selector}.key";']
    assert asked == ["r2"]  # only the domain in a rotation is looked up


@pytest.mark.parametrize("served", [False, True])
def test_the_host_keeps_every_published_key_until_the_old_one_is_retired(monkeypatch, served):
    """A worker of rspamd's configuration before the switch may still sign with the old key:
    its file stays until `retire` takes the selector out (then the deploy removes it)."""
    monkeypatch.setattr(dkim, "served", lambda inv, domain, name, asking: served)
    keys = {p for p in rendered(rotating(), "mail") if p.startswith("/var/lib/rspamd/dkim/example.test.")}
    assert keys == {"/var/lib/rspamd/dkim/example.test.mail.key", "/var/lib/rspamd/dkim/example.test.r2.key"}
    retired = dkim.with_dkim(LAB, "lab.yml", "example.test", {"selector": "r2"})
    keys = {p for p in rendered(retired, "mail") if p.startswith("/var/lib/rspamd/dkim/example.test.")}
    assert keys == {"/var/lib/rspamd/dkim/example.test.r2.key"}
