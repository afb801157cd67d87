"""DMARC as receivers read it (issue 26): every platform domain's record, fetched from the lab's
DNS, passes checkdmarc, an independent DMARCbis checker, with no error and no warning (no pct,
no unenforced p=none, reports asked for)."""

import pytest
from checkdmarc.dmarc import check_dmarc
from helpers import imap_find, message, submit
from labenv import INVENTORY

from mailstack.plan import own_domains


@pytest.mark.parametrize("domain", [d.name for d in own_domains(INVENTORY)])
def test_dmarc_record_passes_checkdmarc_without_a_warning(domain, nameserver):
    result = check_dmarc(domain, nameservers=[nameserver], timeout=5)
    assert result["valid"] and not result.get("error"), result
    assert result["warnings"] == [], result
    assert "pct" not in result["tags"] and result["tags"]["np"]["value"] == "reject"


def test_the_report_address_of_every_domain_takes_mail(addr, fqdn, ca_file, tag, rspamd_ready):
    """rua names postmaster@ each domain: RFC 5321 requires that address, and reports sent
    there must arrive (at the platform's postmaster, alice, where the inventory has no other)."""
    submit(addr["ext"], fqdn["ext"], ca_file, "carol@ext.test", message("carol@ext.test", "postmaster@tenant-b.test", tag))
    assert imap_find(addr["mail"], fqdn["mail"], ca_file, "alice@example.test", tag, timeout=60) is not None
