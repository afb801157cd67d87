"""`mailstack migrate` before any host: the inventory's mapping checked, the old password
kept off every command line, Dovecot's configuration safe from what a password holds, and
folder names read as the old server writes them (the lab test migrates for real)."""

import json
import subprocess

import pytest
from test_rendered import LAB, secrets_home  # noqa: F401 (secrets_home: a scratch home)

from mailstack import migrate
from mailstack.inventory import InventoryInvalid, check_text
from mailstack.migrate_host import quoted, utf7_decoded


def with_migration(users: str, source: str = "  source: {host: old.example.org}\n") -> str:
    return LAB + "\nmigration:\n" + source + "  users:\n" + users


def test_the_mapping_needs_platform_users_once_each_and_a_source():
    entry = "    - {address: mia@legacy.test, password_file: /x}\n"
    with pytest.raises(InventoryInvalid) as invalid:
        check_text(with_migration(entry + entry + "    - {address: nobody@legacy.test, password_file: /x}\n",
                                  source=""), "lab.yml")
    text = str(invalid.value)
    assert "migration: migration.users needs migration.source" in text
    assert "migration.users[1].address: address 'mia@legacy.test' is already used at migration.users[0]" in text
    assert "migration.users[2].address: 'nobody@legacy.test' is not a user under users" in text
    with pytest.raises(InventoryInvalid, match=r"migration\.users\[0\]\.login: .* is not a usable login"):
        check_text(with_migration('    - {address: mia@legacy.test, login: "a b", password_file: /x}\n'), "lab.yml")


def test_the_old_password_goes_on_standard_input_only(tmp_path, monkeypatch):
    secret = tmp_path / "old.secret"
    secret.write_text('Zq%9 "kiwi\\\n')
    inv = check_text(with_migration(f"    - {{address: mia@legacy.test, login: olga, password_file: {secret}}}\n"),
                     "lab.yml")
    calls = []

    def run(argv, **kwargs):
        calls.append((argv, kwargs))
        return subprocess.CompletedProcess(argv, 0, json.dumps({"user": "mia@legacy.test", "folders": {}}), "")

    monkeypatch.setattr(migrate.subprocess, "run", run)
    [result] = migrate.migrate(inv, "mia@legacy.test", None, "sync")
    [(argv, kwargs)] = calls
    assert kwargs["input"] == 'Zq%9 "kiwi\\\n' and not any("kiwi" in part for part in argv)
    assert argv[-1].endswith("old.example.org 993 olga mia@legacy.test sync") and result["problems"] == []


def test_a_missing_password_file_is_named_with_its_place_in_the_inventory(tmp_path):
    inv = check_text(with_migration(f"    - {{address: mia@legacy.test, password_file: {tmp_path}/none}}\n"), "lab.yml")
    with pytest.raises(migrate.MigrationError, match=r"lab\.yml migration\.users\[0\]\.password_file: cannot read"):
        migrate.migrate(inv, None, "legacy.test", "sync")


def test_a_password_cannot_change_dovecots_configuration():
    assert quoted('a"b\\c%u\n') == '"a\\"b\\\\c%%u\n"'  # a line break: the first line only is read as the password


def test_folder_names_are_read_in_modified_utf7():
    assert utf7_decoded("&AMQ-rger &- &ANY-lpreis") == "Ärger & Ölpreis"
    assert utf7_decoded("Gesch&AOQ-ftlich") == "Geschäftlich"
