"""A peer benchmark: DebOps (Ansible) deploying its postfix and dovecot service playbooks
onto a fresh lab host, then mailstack (pyinfra) deploying the whole stack onto fresh lab
hosts; each a first run and a no-op rerun, wall time and changed counts, and the ratios.

Both start from the same fresh lab (`mailstack lab down` + `up`): the lab image already
holds every Debian package, so neither downloads one. DebOps finds Postfix installed without
a main.cf (the image's "No configuration"); Debian's own main.cf is put there first, as a
fresh `apt install postfix` would. DebOps runs from `.venv-peer` (made here: debops 3.3.2,
the `ansible` 12 bundle for community.general and ansible.utils, netaddr, dnspython,
passlib), with `allow_broken_conditionals` (its dovecot role needs it under ansible-core
2.19). Ends with the lab up and deployed by mailstack, as `scripts/lab-up` leaves it.
Needs root, like the lab.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEER = ROOT / ".venv-peer"
PEER_PACKAGES = ("debops==3.3.2", "ansible>=12,<13", "netaddr", "dnspython", "passlib", "jmespath")
SSH_CONFIG = "/var/lib/mailstack/lab/ssh/config"
HOST, ADDRESS = "mail", "10.77.0.10"


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=kwargs.pop("cwd", ROOT), capture_output=True, text=True, **kwargs)


def timed(cmd: list[str], **kwargs) -> tuple[float, str]:
    start = time.perf_counter()
    proc = run(cmd, **kwargs)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[:3])} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return elapsed, proc.stdout + proc.stderr


def fresh_lab() -> None:
    for action in ("down", "up"):
        if run([".venv/bin/mailstack", "lab", action]).returncode:
            sys.exit(f"mailstack lab {action} failed")


def peer_venv() -> Path:
    if not (PEER / "bin" / "ansible-playbook").exists() or run(
            [str(PEER / "bin/pip"), "show", "debops"]).returncode:
        run([sys.executable, "-m", "venv", str(PEER)])
        if run([str(PEER / "bin/pip"), "install", "-q", *PEER_PACKAGES]).returncode:
            sys.exit("installing DebOps and Ansible into .venv-peer failed")
    data = run([str(PEER / "bin/python"), "-c", "import debops, os; print(os.path.dirname(debops.__file__))"])
    return Path(data.stdout.strip()) / "_data" / "ansible" / "collections"


def debops_runs(collections: Path) -> list[tuple[str, float, int]]:
    playbooks = collections / "ansible_collections" / "debops" / "debops" / "playbooks" / "service"
    with tempfile.TemporaryDirectory() as work:
        (Path(work) / "ansible.cfg").write_text(
            f"[defaults]\ncollections_path = {collections}\nhost_key_checking = False\ninventory = hosts\n"
            "allow_broken_conditionals = True\n[ssh_connection]\n"
            f"ssh_args = -F {SSH_CONFIG}\npipelining = True\n")
        (Path(work) / "hosts").write_text(
            f"[debops_service_postfix]\n{HOST} ansible_host={ADDRESS} ansible_user=root "
            f"ansible_python_interpreter=/usr/bin/python3\n[debops_service_dovecot]\n{HOST}\n")
        run(["ssh", "-F", SSH_CONFIG, HOST, "cp -n /usr/share/postfix/main.cf.debian /etc/postfix/main.cf"])
        results = []
        for label in ("first run", "no-op rerun"):
            elapsed, output = timed([str(PEER / "bin/ansible-playbook"), str(playbooks / "postfix.yml"),
                                     str(playbooks / "dovecot.yml")], cwd=work)
            changed = sum(int(n) for n in re.findall(r"changed=(\d+)", output.split("PLAY RECAP")[-1]))
            results.append((f"DebOps postfix+dovecot, {label}", elapsed, changed))
    return results


def mailstack_runs() -> list[tuple[str, float, int]]:
    results = []
    for label in ("first run", "no-op rerun"):
        elapsed, output = timed([".venv/bin/pyinfra", "-y", "inventory.py", "deploy.py"])
        total = re.search(r"Grand total\s+(\d+)\s+(\S+)", output)
        changed = 0 if total.group(2) == "-" else int(total.group(2))
        results.append((f"mailstack whole stack ({total.group(1)} ops), {label}", elapsed, changed))
    return results


def main() -> None:
    collections = peer_venv()
    fresh_lab()
    peer = debops_runs(collections)
    fresh_lab()
    ours = mailstack_runs()
    print(f"{'deploy':<52} {'wall':>8} {'changed':>8}")
    for label, elapsed, changed in peer + ours:
        print(f"{label:<52} {elapsed:7.1f}s {changed:8d}")
    print(f"first run: DebOps / mailstack = {peer[0][1] / ours[0][1]:.2f}; "
          f"no-op: DebOps / mailstack = {peer[1][1] / ours[1][1]:.2f}")
    print("(DebOps: two services on one host; mailstack: every component on both lab hosts)")


if __name__ == "__main__":
    main()
