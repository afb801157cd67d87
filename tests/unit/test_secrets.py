"""Secrets are made once, whole, under the secrets directory's lock (issue 23): a deploy
beside another (or beside the tests) never makes one password twice with two values."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from unitdata import ROOT, VALID

from mailstack.inventory import check_text
from mailstack.secrets import password, secrets_dir

READER = """
import sys
import deploys  # hands the components in
from mailstack.inventory import check_text
from mailstack.secrets import password
print(password(check_text(open(sys.argv[1]).read(), "inv.yml"), "shared"))
"""


def inventory(tmp_path):
    text = VALID.replace("  postmaster: postmaster@one.example\n",
                         f"  postmaster: postmaster@one.example\n  secrets_dir: {tmp_path}/secrets\n")
    (tmp_path / "inv.yml").write_text(text)
    return check_text(text, "inv.yml")


HOLDER = """
import fcntl, sys, time
import deploys  # hands the components in
from mailstack.inventory import check_text
from mailstack.secrets import _making, password
inv = check_text(open(sys.argv[1]).read(), "inv.yml")
with _making(inv):  # another deploy, making secrets
    print("held", flush=True)
    time.sleep(2)
    print(password(inv, "shared"), flush=True)  # re-entrant within that run
"""


def run(script: str, tmp_path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "inv.yml")], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)


def test_a_secret_is_made_under_the_lock_and_read_whole(tmp_path):
    inv = inventory(tmp_path)
    made = secrets_dir(inv) / "passwords" / "shared"
    holder = run(HOLDER, tmp_path)
    assert holder.stdout.readline() == "held\n"
    reader = run(READER, tmp_path)
    time.sleep(1)
    assert reader.poll() is None and not made.exists(), "a second run made the secret while the first held the lock"
    value = holder.communicate(timeout=60)[0].strip()
    assert reader.communicate(timeout=60)[0].strip() == value == password(inv, "shared")
    assert made.stat().st_mode & 0o077 == 0
    assert not [p for p in made.parent.iterdir() if p.name.endswith(".partial")]


def test_many_runs_at_once_agree_on_one_value(tmp_path):
    inventory(tmp_path)
    runs = [run(READER, tmp_path) for _ in range(6)]
    values = {r.communicate(timeout=60)[0].strip() for r in runs}
    assert len(values) == 1 and "" not in values


def test_after_the_secrets_step_planning_and_rendering_only_read(tmp_path):
    """Pure planning: with no secrets step, a deploy that only reads secrets stops at the
    first one missing, naming it; after the step, planning and rendering every host of the
    lab inventory make nothing and change nothing in the secrets directory."""
    import deploys
    from mailstack.plan import plans
    from mailstack.secrets import SecretMissing, reading_only

    text = (ROOT / "inventories" / "lab.yml").read_text().replace(
        "  name: lab\n", f"  name: lab\n  secrets_dir: {tmp_path}/secrets\n", 1)
    inv = check_text(text, "lab.yml")

    def everything():
        for plan in plans(inv).values():
            for component in plan.components:
                deploys.configured(component, plan)

    reading_only()
    try:
        with pytest.raises(SecretMissing, match="would have to be made while the deploy only reads secrets"):
            everything()
        reading_only(False)
        deploys.make_secrets(inv)
        made = {p: p.read_bytes() for p in secrets_dir(inv).rglob("*") if p.is_file() and p.name != ".lock"}
        assert any("dkim" in str(p) for p in made) and any("passwords" in str(p) for p in made)
        reading_only()
        everything()
        assert made == {p: p.read_bytes() for p in secrets_dir(inv).rglob("*") if p.is_file() and p.name != ".lock"}
    finally:
        reading_only(False)
