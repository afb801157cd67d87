"""`mailstack migrate`: move mailboxes in from an old IMAP server (the inventory's `migration`),
each on its user's mailbox host with Dovecot's dsync (mailstack/migrate_host.py), and prove it:
per folder, every message of the old account (Message-ID and size) must be in the new mailbox.
Repeatable up to the cutover and after it: each run moves only what changed, deletes nothing
on either side, and mail that arrived on the platform meanwhile is counted, not a difference."""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mailstack.inventory import Inventory
from mailstack.inventory.source import format_path
from mailstack.remote import ssh_argv

HOST_SCRIPT = Path(__file__).with_name("migrate_host.py")
PARALLEL = 4  # accounts moved at once (each on its own mailbox host's Dovecot)


class MigrationError(Exception):
    """A migration that cannot start: the message says why and where in the inventory."""


def selected(inv: Inventory, user: str | None, domain: str | None) -> list[tuple[int, dict]]:
    """The inventory's migration entries (with their index) for `user`, `domain`, or all."""
    entries = [(i, e) for i, e in enumerate(inv.migration["users"])
               if (user is None or e["address"].lower() == user) and
               (domain is None or e["address"].lower().endswith("@" + domain))]
    if not entries:
        raise MigrationError(f"{inv.file}: no migration.users entry for {user or domain or 'any user'}")
    return entries


def account(inv: Inventory, index: int, entry: dict, action: str) -> dict:
    """Move (action "sync") or only compare ("verify") one account; the host's JSON answer."""
    where = f"{inv.file} {format_path(('migration', 'users', index, 'password_file'))}"
    try:
        password = Path(os.path.expanduser(entry["password_file"])).read_text().splitlines()[0]
    except (OSError, IndexError) as err:
        raise MigrationError(f"{where}: cannot read the old password ({err})") from None
    user = next(u for u in inv.users if u.address == entry["address"].lower())
    host = inv.host(user.mailbox)
    if host.outside:
        raise MigrationError(f"{inv.file}: {user.address} is not a user of the platform's own mailboxes")
    source = inv.migration["source"]
    command = ["python3", "-c", HOST_SCRIPT.read_text(), source["host"], str(source["port"]),
               entry.get("login", user.address), user.address, action]
    done = subprocess.run(ssh_argv(host, command), input=password + "\n", capture_output=True, text=True)
    if done.returncode != 0 or not done.stdout.strip():
        return {"user": user.address, "host": host.name,
                "error": f"the mailbox host {host.name} failed ({done.returncode}): {done.stderr.strip()[-500:]}"}
    return {**json.loads(done.stdout), "host": host.name}


def problems(result: dict) -> list[str]:
    """What keeps an account's migration from being proven complete."""
    found = [result["error"]] if "error" in result else []
    if result.get("sync", {}).get("code", 0) != 0:
        found.append(f"dsync failed ({result['sync']['code']}): {result['sync']['error']}")
    if "verify_error" in result:
        found.append(f"could not compare: {result['verify_error']}")
    for name, folder in result.get("folders", {}).items():
        if folder["missing"]:
            found.append(f"{name}: {len(folder['missing'])} of {folder['source']} messages missing: "
                         + ", ".join(folder["missing"][:5]) + (" ..." if len(folder["missing"]) > 5 else ""))
    return found


def migrate(inv: Inventory, user: str | None, domain: str | None, action: str) -> list[dict]:
    """Every selected account, at most PARALLEL at once; each result with its `problems`."""
    entries = selected(inv, user, domain)
    with ThreadPoolExecutor(PARALLEL) as pool:
        results = list(pool.map(lambda item: account(inv, *item, action), entries))
    return [{**r, "problems": problems(r)} for r in results]


def text(results: list[dict]) -> str:
    lines = []
    for r in results:
        folders = r.get("folders", {})
        moved = sum(f["source"] for f in folders.values())
        extra = sum(f["extra"] for f in folders.values())
        took = f" in {r['sync']['seconds']} s" if "sync" in r else ""
        state = "FAIL" if r["problems"] else "ok"
        lines.append(f"{r['user']:<32} {state:<5} {len(folders)} folders, {moved} messages of the old account "
                     f"all here{took}" + (f"; {extra} more arrived here" if extra else "") if not r["problems"] else
                     f"{r['user']:<32} {state:<5} " + "; ".join(r["problems"]))
    return "\n".join(lines)
