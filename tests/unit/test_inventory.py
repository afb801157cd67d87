"""The loader: examples validate, defaults come from the schema, bad input is named exactly."""

import json

import pytest
from unitdata import LAB_CLAMAV, ROOT, VALID

from mailstack.inventory import InventoryInvalid, check_text, load, schema

EXAMPLES = sorted((ROOT / "inventories").glob("*.yml"))


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based line of the nth line containing `needle`."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    return hits[nth - 1]


def problems(text: str) -> list[str]:
    with pytest.raises(InventoryInvalid) as err:
        check_text(text, "inv.yml")
    return [str(p) for p in err.value.problems]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate(path):
    inv = load(path)  # as committed: nothing to make on this machine first
    assert inv.hosts and inv.domains
    assert path.read_text().startswith(
        "# yaml-language-server: $schema=../schemas/inventory.schema.json\n")


def test_three_example_inventories_exist():
    assert {p.name for p in EXAMPLES} >= {
        "lab.yml", "single-host.example.yml", "multi-host.example.yml"}


def test_defaults_come_from_the_schema():
    inv = check_text(VALID, "inv.yml")
    props = schema()["properties"]
    domain_props = props["domains"]["items"]["properties"]
    one = inv.domain("one.example")
    assert one.dkim["selector"] == domain_props["dkim"]["properties"]["selector"]["default"]
    assert one.quota == domain_props["quota"]["default"]
    assert one.pop3 is domain_props["pop3"]["default"]
    assert one.inbound["spam"] == "reject"
    assert inv.rspamd["milter_default_action"] == (
        props["rspamd"]["properties"]["milter_default_action"]["default"])
    assert inv.dovecot["autoexpunge_trash"] == "30d"
    assert inv.host("mx1").ssh["port"] == 22
    # derived values
    assert inv.host("mx1").fqdn == "mx1.t.example"
    assert one.tenant == "one.example" and inv.domain("two.example").tenant == "second"
    assert inv.users[0].quota == one.quota
    assert one.mailbox == ("mx1",)


def test_model_is_immutable():
    inv = check_text(VALID, "inv.yml")
    with pytest.raises(TypeError):
        inv.domains[0].dkim["selector"] = "x"
    with pytest.raises(AttributeError):
        inv.hosts[0].name = "x"


# (mutation of VALID, text on the offending line, nth hit, expected "PATH: message")
BAD = [
    ("enum typo", ("policy: none", "policy: rejct"), "policy: rejct", 1,
     "domains[0].dmarc.policy: 'rejct' is not one of ['none', 'quarantine', 'reject']"),
    ("unknown key", ("    tenant: second", "    tennant: second"), "tennant", 1,
     "domains[1].tennant: unknown key 'tennant'; did you mean 'tenant'?"),
    ("unknown top-level key", ("aliases:", "aliasses:"), "aliasses:", 1,
     "aliasses: unknown key 'aliasses'; did you mean 'aliases'?"),
    ("wrong type", ("roles: [smime]", "roles: smime"), "roles: smime", 1,
     "hosts[1].roles: 'smime' is a string, expected array"),
    ("missing required key", ("  - name: two.example\n    tenant: second\n    mx: [mx1]\n",
                              "  - name: two.example\n    tenant: second\n"),
     "- name: two.example", 1, "domains[1]: missing required key 'mx'"),
    ("duplicate host name", ("  - name: other", "  - name: mx1"), "- name: mx1", 2,
     "hosts[1].name: host name 'mx1' is already used at hosts[0].name (line 6)"),
    ("duplicate address", ("address: 192.0.2.2", "address: 192.0.2.1"), "address: 192.0.2.1", 2,
     "hosts[1].address: address '192.0.2.1' is already used at hosts[0].address (line 7)"),
    ("MX host missing", ("    mx: [mx1]\n    dmarc", "    mx: [mx9]\n    dmarc"), "mx: [mx9]", 1,
     "domains[0].mx[0]: MX host 'mx9' is not defined under hosts"),
    ("MX host without mx role", ("    tenant: second\n    mx: [mx1]", "    tenant: second\n    mx: [other]"),
     "mx: [other]", 1, "domains[1].mx[0]: MX host 'other' does not have the 'mx' role (its roles: smime)"),
    ("user in unknown domain", ("address: ben@two.example", "address: ben@three.example"),
     "ben@three.example", 1,
     "users[1].address: domain 'three.example' of this user is not listed under domains"),
    ("dangling alias", ("to: [ann@one.example]", "to: [nobody@one.example]"), "nobody@", 1,
     "aliases[0].to[0]: 'nobody@one.example' is in a local domain but is neither a user nor an alias"),
    ("clear-text password", ('"{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$abc$def"', "hunter2hunter2"),
     "hunter2", 1, "users[1].password: 'hunter2hunter2' is not a crypt hash mailstack accepts"),
    ("unknown password scheme", ('"{SHA512-CRYPT}$6$abcdefgh$0123456789abcdef"', '"{PLAIN}secret123"'),
     "{PLAIN}", 1, "users[0].password: '{PLAIN}secret123' is not a crypt hash mailstack accepts ({SCHEME} "
     "and then only letters, digits and . / $ = , + -); store a hash such as {ARGON2ID}… or {SHA512-CRYPT}… "
     "(make one with `doveadm pw -s ARGON2ID`), never a clear-text password"),
    ("invalid domain name", ("name: two.example", "name: Two_Example"), "Two_Example", 1,
     "domains[1].name: 'Two_Example' is not a valid domain name (lower-case labels of letters, "
     "digits and hyphens, separated by dots, e.g. example.org)"),
    ("invalid IP address", ("address: 192.0.2.2", "address: 192.0.2.300"), "192.0.2.300", 1,
     "hosts[1].address: '192.0.2.300' is not a valid IPv4 or IPv6 address"),
    ("invalid e-mail address", ("address: ann@one.example", "address: ann.one.example"),
     "ann.one.example", 1,
     "users[0].address: 'ann.one.example' is not a valid e-mail address (local part of letters, digits and "
     ". _ + = -, not starting with '.' and without '..'; domain in lower case)"),
    ("two tenants claim one domain", ("name: two.example", "name: one.example"), "name: one.example", 2,
     "domains[1].name: domain 'one.example' is already claimed by tenant 'one.example' at "
     "domains[0].name (line 13)"),
    ("duplicate YAML key", ("    tenant: second\n", "    tenant: second\n    tenant: third\n"),
     "tenant: third", 1, "domains[1].tenant: duplicate key 'tenant' (first on line 18)"),
    ("submission without mailboxes", ("roles: [mx, submission, mailbox, filter]", "roles: [submission, filter]"),
     "roles: [submission", 1,
     "hosts[0].roles: role 'submission' needs mailboxes whose users log in (a 'mailbox' host), "
     "but no host has it"),
    ("discard without confirmation", ("    dmarc:\n", "    inbound: {spam: discard}\n    dmarc:\n"),
     "spam: discard", 1, "domains[0].inbound.spam: 'discard' drops spam without telling the sender; "
     "set domains[].inbound.confirm_discard: true for one.example to choose it on purpose"),
    ("a user's discard without its domain's confirmation",
     ('0123456789abcdef"\n', '0123456789abcdef"\n    inbound: {malware: discard}\n'), "malware: discard", 1,
     "users[0].inbound.malware: 'discard' drops malware without telling the sender; set "
     "domains[].inbound.confirm_discard: true for one.example to choose it on purpose"),
    ("quarantine without a mailbox", ("    dmarc:\n", "    inbound: {malware: quarantine}\n    dmarc:\n"),
     "malware: quarantine", 1, "domains[0].inbound.malware: 'quarantine' needs a quarantine mailbox: set "
     "domains[].inbound.quarantine for one.example to one of its users"),
    ("quarantine mailbox of another tenant",
     ("    dmarc:\n", "    inbound: {spam: quarantine, quarantine: ben@two.example}\n    dmarc:\n"),
     "quarantine: ben", 1, "domains[0].inbound.quarantine: ben@two.example is not a user of one.example "
     "(the quarantine is a mailbox its admin reads)"),
    ("quota not a size", ("    tenant: second\n", "    tenant: second\n    quota: lots\n"), "quota: lots", 1,
     "domains[1].quota: 'lots' is not a size (a number with an optional K, M, G or T suffix, e.g. 2G)"),
    ("alias and user share an address", ("address: postmaster@one.example", "address: ann@one.example"),
     "address: ann@one.example", 2, "aliases[0].address: 'ann@one.example' is both a user and an alias"),
    ("unknown role", ("roles: [smime]", "roles: [dsn]"), "roles: [dsn]", 1,
     "hosts[1].roles[0]: 'dsn' is not one of ['dns', 'acme_ca', 'siem', 'pager', 'directory', 'idp', 'storage', 'filter', "
     "'sandbox', 'auth', 'submission', 'mx', 'mailbox', 'proxy', 'smime', 'webmail', 'web', 'monitoring']"),
    ("SIEM over plain HTTP", ("    to: [ann@one.example]\n", "    to: [ann@one.example]\nsiem:\n  http:\n"
                                  "    - http://siem.example/records\n"), "http://siem", 1,
     "siem.http[0]: 'http://siem.example/records' is not an https URL (records carry mail metadata: plain http is "
     "refused)"),
    ("pager role outside a lab", ("roles: [smime]", "roles: [smime, pager]"), "roles: [smime, pager]", 1,
     "hosts[1].roles: the 'pager' role plays an alert receiver in a lab; name your webhooks under "
     "monitoring.webhooks (or set platform.lab: true)"),
    ("SIEM role outside a lab", ("roles: [smime]", "roles: [smime, siem]"), "roles: [smime, siem]", 1,
     "hosts[1].roles: the 'siem' role plays a SIEM in a lab; name your SIEM's receivers under siem.syslog "
     "(or set platform.lab: true)"),
    ("idp role without OIDC", ("roles: [smime]", "roles: [smime, idp]"), "roles: [smime, idp]", 1,
     "hosts[1].roles: role 'idp' runs the platform's own identity provider: set oidc.enabled and oidc.provider "
     "'glewlwyd', or drop the role"),
    ("tokens-only domain without OIDC", ("    tenant: second\n", "    tenant: second\n    password_login: false\n"),
     "password_login: false", 1,
     "domains[1].password_login: without password logins this domain's users need oidc.enabled to log in at all"),
    ("OIDC without an IdP host", ("    to: [ann@one.example]\n", "    to: [ann@one.example]\noidc: {enabled: true}\n"),
     "oidc: {enabled: true}", 1, "oidc.provider: provider 'glewlwyd' runs on the host with role 'idp'"),
    ("external IdP over plain HTTP", ("    to: [ann@one.example]\n", "    to: [ann@one.example]\noidc: {enabled: true, "
                                      "provider: external, introspection_url: 'http://idp.example/introspect', "
                                      "client_secret_file: /etc/hostname}\n"), "oidc:", 1,
     "oidc.introspection_url: tokens cross the network: use https://"),
    ("backups without a store", ("    to: [ann@one.example]\n", "    to: [ann@one.example]\nbackup: {enabled: true}\n"),
     "backup: {enabled: true}", 1, "backup.enabled: backups go to the S3 store on the host with role 'storage'"),
    ("external S3 over plain HTTP", ("    to: [ann@one.example]\n", "    to: [ann@one.example]\ns3: {provider: external, "
                                     "endpoint: 'http://s3.example.org'}\n"), "s3:", 1,
     "s3.endpoint: mail crosses the network: use https://"),
    ("directory role outside a lab", ("roles: [smime]", "roles: [smime, directory]"), "roles: [smime, directory]", 1,
     "hosts[1].roles: the 'directory' role plays an organisation's LDAP directory in a lab; name yours under "
     "ldap.uris (or set platform.lab: true)"),
    ("directory users listed in the inventory", ("    tenant: second\n", "    tenant: second\n    user_source: ldap\n"),
     "ben@two.example", 1, "users[1].address: this domain takes its users from the directory (user_source: ldap): "
     "add the user there, not here"),
    ("users from LDAP without a directory", ("    tenant: second\n", "    tenant: second\n    user_source: ldap\n"),
     "user_source: ldap", 1, "domains[1].user_source: users from LDAP need ldap.uris"),
    ("directory users without passwords", ("    tenant: second\n", "    tenant: second\n    user_source: ldap\n"
                                           "    password_login: false\n"), "password_login: false", 1,
     "domains[1].password_login: directory users log in with their directory password; token logins are for "
     "inventory users only"),
    ("a directory no domain uses", ("    to: [ann@one.example]\n", "    to: [ann@one.example]\nldap: {uris: "
                                    "['ldaps://dir.example'], base_dn: 'dc=example', bind_dn: 'cn=mail,dc=example', "
                                    "bind_password_file: /etc/hostname}\n"), "ldap:", 1,
     "ldap: ldap has no effect: no domain has user_source 'ldap'"),
    ("a directory in clear", ("    to: [ann@one.example]\n", "    to: [ann@one.example]\nldap: {uris: "
                              "['ldap://dir.example']}\n"), "ldap:", 1,
     "ldap.uris[0]: 'ldap://dir.example' is not an ldaps:// URI"),
    ("an operator directory without its bind password", ("    tenant: second\n", "    tenant: second\n    "
                                                          "user_source: ldap\n"), "user_source: ldap", 1,
     "domains[1].user_source: ldap.bind_password_file is needed"),
    ("a role no component serves", ("roles: [smime]", "roles: [smime, backup]"), "roles: [smime, backup]", 1,
     "hosts[1].roles[1]: 'backup' is not one of ['dns', "),
    ("an auth host without Nauthilus", ("roles: [smime]", "roles: [smime, auth]"), "roles: [smime, auth]", 1,
     "hosts[1].roles: role 'auth' runs Nauthilus: set nauthilus.enabled"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_inventory_is_named_exactly(case):
    _, (old, new), needle, nth, expected = case
    assert old in VALID, "mutation does not apply"
    text = VALID.replace(old, new, 1)
    found = problems(text)
    line = line_of(text, needle, nth)
    assert any(p.startswith(f"inv.yml:{line} {expected}") for p in found), found


def test_broken_yaml_names_line_and_reason():
    text = VALID.replace("    roles: [smime]", "    roles: [smime", 1)
    (found,) = problems(text)
    assert found.startswith("inv.yml:12 (top level): YAML syntax error: ")
    assert "',' or ']'" in found and found.endswith("flow sequence that starts on line 11)")


def test_tab_indentation_is_a_syntax_error_with_line():
    text = VALID.replace("  - name: other", "\t- name: other", 1)
    (found,) = problems(text)
    assert found.startswith("inv.yml:9 (top level): YAML syntax error")


def test_smime_partner_cannot_be_an_own_domain():
    text = VALID + "smime:\n  partners:\n    - {domain: two.example}\n"
    assert problems(text) == [f"inv.yml:{line_of(text, '{domain: two.example}')} smime.partners[0].domain: "
                              "'two.example' is one of the platform's own domains; set its policy under "
                              "domains[].smime instead"]


def test_plaintext_to_the_gateway_only_on_one_host():
    text = VALID + "smime:\n  plaintext_loopback: true\n"
    (found,) = problems(text)
    assert f"inv.yml:{line_of(text, 'plaintext_loopback')} smime.plaintext_loopback: plaintext needs" in found
    same_host = VALID.replace("roles: [mx, submission, mailbox, filter]", "roles: [mx, submission, mailbox, filter, smime]")
    same_host = same_host.replace("roles: [smime]", "roles: [mailbox]")
    check_text(same_host + "smime:\n  plaintext_loopback: true\n", "inv.yml")


def test_every_problem_is_reported_at_once():
    text = (VALID.replace("policy: none", "policy: rejct")
                 .replace("address: 192.0.2.2", "address: 192.0.2.300")
                 .replace("    tenant: second", "    tennant: second"))
    assert len(problems(text)) == 3


def test_empty_inventory():
    assert problems("") == ["inv.yml:1 (top level): the inventory is empty"]


def test_schema_documents_every_property():
    def walk(node, path):
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                assert node.get("additionalProperties") is False, path
                for key, sub in node["properties"].items():
                    assert "description" in sub, f"{path}.{key} has no description"
            for key, sub in node.items():
                walk(sub, f"{path}.{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                walk(sub, f"{path}[{i}]")
    walk(schema(), "")
    json.dumps(schema())


def test_lab_only_settings_are_refused_in_production():
    text = (VALID.replace("roles: [smime]", "roles: [dns]")
            .replace("address: 192.0.2.2\n", "address: 192.0.2.2\n    outside: true\n"))
    found = problems(text)
    assert any("hosts[1].outside: only a lab (platform.lab: true) may have hosts" in p for p in found), found
    assert any("hosts[1].roles: the 'dns' role serves a lab's zones" in p for p in found), found
    lab = text.replace("  postmaster: postmaster@one.example\n", "  postmaster: postmaster@one.example\n  lab: true\n")
    check_text(lab + LAB_CLAMAV, "inv.yml")


MULTI = (ROOT / "inventories" / "lab-multi.yml").read_text()


@pytest.mark.parametrize("mutation,path,expected", [
    (("    mailbox: mb2\n", "    mailbox: mx1\n"), "users[1].mailbox",
     "'mx1' is not one of the mailbox hosts of its domain (mb1, mb2)"),
    (("  - {name: proxy1, address: 10.77.0.25, roles: [proxy],", "  - {name: proxy1, address: 10.77.0.25, roles: [dns],"),
     "domains[0].mailbox", "a domain on several mailbox hosts needs a 'proxy' host, where its users log in"),
    (("bruteforce:", "oidc: {enabled: true, provider: external, introspection_url: 'https://idp.example/i', "
                     "client_secret_file: /etc/hostname}\nbruteforce:"),
     "hosts[2].roles", "token logins (oidc.enabled) through a Dovecot proxy are not implemented yet"),
    (("    mailbox: [mb2]\n", "    mailbox: [mb2]\n    user_source: ldap\n"), "domains[1].user_source",
     "directory users behind a Dovecot proxy are not implemented yet"),
])
def test_backends_and_the_proxy_are_checked(mutation, path, expected):
    assert mutation[0] in MULTI
    found = problems(MULTI.replace(*mutation))
    assert any(f"{path}: {expected}" in p for p in found), found


def test_a_locked_password_needs_every_login_host_to_hold_the_counters():
    found = problems(MULTI + "limits: {lock_password: true}\n")
    complaint = "limits.lock_password with logins on {}, which is no filter host, is not implemented yet"
    for i, name in enumerate(("mx1", "mx2", "proxy1", "mb1", "mb2")):
        assert any(f"hosts[{i}].roles: {complaint.format(name)}" in p for p in found), found
    assert len(found) == 5, "filter1, gw, the storage hosts and the outside ext take no logins"
    check_text(MULTI + "limits: {lock_password: true, enabled: false}\n", "inv.yml")
    check_text(VALID + "limits: {lock_password: true}\n", "inv.yml")  # mx1 is its own filter host


def test_operator_tls_files_must_exist_here():
    text = VALID + ("tls:\n  source: files\n  files:\n"
                    "    - {host: mx1, certificate: /etc/mailstack/ops/mx1.crt, key: /etc/mailstack/ops/mx1.key}\n"
                    "    - {host: other, certificate: /etc/mailstack/ops/o.crt, key: /etc/mailstack/ops/o.key}\n")
    found = problems(text)
    line = line_of(text, "certificate: /etc/mailstack/ops/mx1.crt")
    assert f"inv.yml:{line} tls.files[0].certificate: /etc/mailstack/ops/mx1.crt is not a file on this machine" in found[0]


def test_one_gateway_host_only_and_never_an_outside_one():
    text = VALID.replace("roles: [mx, submission, mailbox, filter]", "roles: [mx, submission, mailbox, filter, smime]")
    (found,) = problems(text)
    assert f"inv.yml:{line_of(text, 'roles: [smime]')} hosts[1].roles: only one S/MIME gateway host" in found


@pytest.mark.parametrize("lab,freshclam,complaint", [
    (True, "true", "a lab has no Internet: set clamav.freshclam: false"),
    (False, "false", "without freshclam clamd has no signatures"),
])
def test_signatures_come_from_freshclam_outside_a_lab_only(lab, freshclam, complaint):
    text = VALID + f"clamav:\n  freshclam: {freshclam}\n"
    if lab:
        text = text.replace("  postmaster: postmaster@one.example\n", "  postmaster: postmaster@one.example\n  lab: true\n")
    (found,) = problems(text)
    assert f"inv.yml:{line_of(text, 'freshclam:')} clamav.freshclam: {complaint}" in found


def test_a_sandbox_sits_with_its_filter():
    text = VALID.replace("roles: [smime]", "roles: [smime, sandbox]")
    filter_alone, sandbox_alone = problems(text)  # the filter host would not ask it either
    assert f"inv.yml:{line_of(text, 'roles: [smime, sandbox]')} hosts[1].roles: 'sandbox' and 'filter' go together" \
        in sandbox_alone
    assert filter_alone.startswith(f"inv.yml:{line_of(text, 'roles: [mx, submission')} hosts[0].roles: 'sandbox'")
    check_text(VALID.replace("roles: [mx, submission, mailbox, filter]", "roles: [mx, submission, mailbox, filter, sandbox]"),
               "inv.yml")


def test_sandbox_backends_are_planned_not_pretended():
    text = VALID + "peekaboo: {sandbox: cuckoo}\n"
    (found,) = problems(text)
    assert "peekaboo.sandbox: 'cuckoo' is not implemented yet" in found


@pytest.mark.parametrize("lists,complaint", [
    ("deny: {senders: ['X@a.example', 'x@a.example']}", "domains[0].deny.senders[1]: 'x@a.example' is listed twice"),
    ("deny: {senders: ['x@a.example']}\n    allow: {senders: ['x@a.example']}",
     "domains[0].deny.senders[0]: 'x@a.example' is both allowed and refused"),
    ("deny: {ips: [192.0.2.0/24, 192.0.2.8/29]}", "domains[0].deny.ips[1]: 192.0.2.8/29 is already covered by 192.0.2.0/24"),
    ("allow: {ips: [192.0.2.0/24]}\n    deny: {ips: [192.0.2.0/24]}",
     "domains[0].deny.ips[0]: 192.0.2.0/24 is both allowed and refused"),
    ("deny: {attachments: [exe, zip, exe]}", "domains[0].deny.attachments[2]: 'exe' is listed twice"),
    ("deny: {attachments: ['.exe']}", "domains[0].deny.attachments[0]: '.exe' is not a file name extension"),
])
def test_lists_are_checked_for_repeats_and_contradictions(lists, complaint):
    text = VALID.replace("    dmarc:\n      policy: none\n", f"    dmarc:\n      policy: none\n    {lists}\n")
    found = problems(text)
    assert any(complaint in p for p in found), found


@pytest.mark.parametrize("setting,role", [("peekaboo: {pending_timeout: 1h}\n", "sandbox"),
                                          ("clamav: {office_macros: accept}\n", "filter")])
def test_settings_no_host_would_use_are_refused(setting, role):
    text = VALID.replace("roles: [mx, submission, mailbox, filter]", "roles: [mx, submission, mailbox]") + setting
    section = setting.split(":")[0]
    found = problems(text)
    assert any(p.startswith(f"inv.yml:{line_of(text, section + ':')} {section}: has no effect: no host has the role {role}") for p in found), found
    check_text(VALID + setting if role == "filter" else VALID, "inv.yml")  # with the role: fine


def test_an_attachment_wait_without_peekaboo_is_refused():
    text = VALID.replace("    tenant: second\n", "    tenant: second\n    inbound: {attachment_wait: 0}\n")
    (found,) = problems(text)
    assert f"inv.yml:{line_of(text, 'attachment_wait')} domains[1].inbound.attachment_wait: has no effect" in found


def test_an_external_s3_is_not_said_to_lock_the_backups(tmp_path):
    """mailstack locks only the store it deploys: an external one with the default lock is refused."""
    keys = tmp_path / "backup.keys"
    keys.write_text("AKEXTERNAL\nexternal-secret\n")
    text = VALID + ("backup: {enabled: true}\n"
                    f"s3: {{provider: external, endpoint: 'https://s3.example.org', key_files: {{backup: '{keys}'}}}}\n")
    assert any("backup.locked_days: mailstack locks the backups on the store it deploys only" in p
               for p in problems(text))
    check_text(text.replace("{enabled: true}", "{enabled: true, locked_days: 0}"), "inv.yml")  # said: no lock


def test_storage_hosts_are_an_odd_number_or_none_with_an_external_s3():
    two = VALID.replace("roles: [mx, submission, mailbox, filter]", "roles: [mx, submission, mailbox, filter, storage]")
    two = two.replace("roles: [smime]", "roles: [smime, storage]")
    assert any("hosts[1].roles: 2 storage hosts: a SeaweedFS cluster needs an odd number" in p for p in problems(two))
    external = VALID.replace("roles: [smime]", "roles: [smime, storage]") + \
        "s3: {provider: external, endpoint: 'https://s3.example.org'}\n"
    assert any("role 'storage' deploys SeaweedFS, but s3.provider is 'external'" in p for p in problems(external))


def test_a_component_whose_section_the_schema_lacks_is_named_not_a_traceback(monkeypatch):
    from mailstack import registry
    from mailstack.component import Component

    stray = Component(name="calendar", roles=frozenset({"mailbox"}), section="calendar")
    monkeypatch.setattr(registry, "_components", (*registry.components(), stray))
    with pytest.raises(InventoryInvalid) as refused:
        check_text(VALID, "inventory.yml")
    assert "component 'calendar' declares the section 'calendar', which schemas/inventory.schema.json does not " \
           "define" in str(refused.value)
