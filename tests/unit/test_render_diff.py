"""scripts/render-diff, the check that a refactor changes nothing a host gets (issue 23):
silent on the same tree, and it names the file a changed template changes."""

from __future__ import annotations

import os
import subprocess
import sys

from unitdata import ROOT


def test_render_diff_names_what_a_template_change_changes(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}  # whichever environment runs the tests
    same = subprocess.run(["scripts/render-diff", "HEAD"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "deploys", "mailstack"], cwd=ROOT,
                           capture_output=True, text=True).stdout
    if not dirty:  # a work tree with render changes in progress differs from HEAD, rightly
        assert same.returncode == 0 and same.stdout == "", same.stdout[-2000:]
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    template = clone / "deploys" / "redis" / "templates" / "redis-server.conf.j2"
    template.write_text(template.read_text().replace("protected-mode yes", "protected-mode no"))
    changed = subprocess.run(["scripts/render-diff", "HEAD"], cwd=clone, env=env, capture_output=True, text=True,
                             timeout=300)
    assert changed.returncode == 1
    assert "lab/mail/etc/redis/mailstack.conf" in changed.stdout and "< protected-mode yes" in changed.stdout
    assert "> protected-mode no" in changed.stdout
