"""The command line: exit codes, summaries, generated docs kept in sync."""

import json
import subprocess
import sys

import pytest
from unitdata import ROOT, VALID

from deploys import COMPONENTS, served_roles
from mailstack import schemabuild
from mailstack.schemadoc import render


def mailstack(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "mailstack.cli", *args], cwd=cwd,
                          capture_output=True, text=True)


def test_check_valid_prints_summary():
    proc = mailstack("check", "inventories/lab.yml", "inventories/multi-host.example.yml")
    assert proc.returncode == 0, proc.stderr
    assert "inventories/lab.yml: ok — 2 hosts, 6 domains, 11 users, 3 aliases" in proc.stdout
    assert "inventories/multi-host.example.yml: ok — 3 hosts" in proc.stdout


def test_check_invalid_exits_2_and_names_the_line(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(VALID.replace("policy: none", "policy: rejct"))
    proc = mailstack("check", str(bad))
    assert proc.returncode == 2
    assert (f"{bad}:16 domains[0].dmarc.policy: 'rejct' is not one of "
            "['none', 'quarantine', 'reject']") in proc.stderr
    assert "nothing was deployed" in proc.stderr


def test_check_missing_file_is_a_problem_not_a_traceback(tmp_path):
    proc = mailstack("check", str(tmp_path / "nope.yml"))
    assert proc.returncode == 2 and "cannot read" in proc.stderr and "Traceback" not in proc.stderr


def test_committed_inventory_reference_is_current():
    committed = (ROOT / "docs" / "inventory.md").read_text()
    assert committed == render(), "docs/inventory.md is stale: run `mailstack schema-docs`"


def test_committed_component_reference_is_current():
    from mailstack.cli import COMPONENTS_DOC, components_doc

    text = components_doc()
    assert COMPONENTS_DOC.read_text() == text, "docs/components.md is stale: run `mailstack schema-docs`"
    assert all(f"## {c.name}\n" in text for c in COMPONENTS) and "- folder: `deploys/srs/`" in text


def test_the_published_schema_is_the_core_with_every_components_sections():
    """schemas/inventory.schema.json, which the model reads, is exactly what the core and the
    components' folders assemble to; the roles are those the components serve."""
    built = schemabuild.assembled(COMPONENTS)
    assert (ROOT / "schemas" / "inventory.schema.json").read_text() == schemabuild.text(built), \
        "schemas/inventory.schema.json is stale: run `mailstack schema-docs`"
    assert set(built["properties"]["hosts"]["items"]["properties"]["roles"]["items"]["enum"]) == served_roles()
    assert {"s3", "oidc", "backup", "postfix"} <= set(built["properties"]) and \
        "s3" not in json.loads(schemabuild.CORE.read_text())["properties"]


def test_two_components_cannot_both_declare_one_section():
    from mailstack.component import Component

    rival = Component(name="postsrsd", roles=frozenset({"mx"}), schema={"postfix": {"type": "object"}})
    with pytest.raises(ValueError, match="component 'postsrsd' declares the section 'postfix', which component "
                                         "'postfix' declares already"):
        schemabuild.assembled((*COMPONENTS, rival))


def test_help_lists_every_command():
    proc = mailstack("--help")
    for command in ("check", "dns", "schema-docs", "lab"):
        assert command in proc.stdout


def test_quarantine_needs_a_domain_with_a_quarantine_mailbox():
    proc = mailstack("quarantine", "-i", "inventories/lab.yml", "list", "example.test")
    assert proc.returncode == 1
    assert "example.test has no quarantine mailbox in inventories/lab.yml (domains[].inbound.quarantine)" \
        in proc.stderr


def test_remote_commands_use_the_inventorys_ssh_settings():
    from mailstack.inventory import load
    from mailstack.remote import ssh_argv

    inv = load("inventories/lab.yml")
    lab = ssh_argv(inv.host("mail"), ["mailstack-quarantine", "list", "quarantine@legacy.test"])
    assert lab[-2:] == ["root@10.77.0.10", "mailstack-quarantine list quarantine@legacy.test"]
    assert "UserKnownHostsFile=/dev/null" in lab and "StrictHostKeyChecking=no" in lab  # a lab: new keys each boot
    production = ssh_argv(load("inventories/multi-host.example.yml").hosts[0], ["true"])
    assert "StrictHostKeyChecking=yes" in production and "UserKnownHostsFile=/dev/null" not in production



def test_schema_docs_redirected_into_its_own_file_stays_whole(tmp_path):
    """`mailstack schema-docs -o F > F` (as the docs once said): the note goes to stderr."""
    target = tmp_path / "inventory.md"
    with target.open("w") as out:
        proc = subprocess.run([sys.executable, "-m", "mailstack.cli", "schema-docs", "-o", str(target)], cwd=ROOT,
                              stdout=out, stderr=subprocess.PIPE, text=True)
    assert proc.returncode == 0 and f"wrote {target}" in proc.stderr
    assert target.read_text() == render()


def test_the_lab_marker_leaves_the_lab_out():
    """`pytest -m "not lab"` collects no test that needs the running lab, `-m lab` only those."""
    def collected(marker: str) -> list[str]:
        proc = subprocess.run([sys.executable, "-m", "pytest", "tests", "-m", marker, "--collect-only", "-q",
                               "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True, timeout=300)
        return [line for line in proc.stdout.splitlines() if "::" in line]
    without, only = collected("not lab"), collected("lab")
    assert without and not any(t.startswith("tests/lab/") for t in without)
    assert only and all(t.startswith("tests/lab/") for t in only)
