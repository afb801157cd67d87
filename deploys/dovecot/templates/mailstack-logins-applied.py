#!/usr/bin/python3
"""Managed by mailstack: run by the deploy after it rewrote Dovecot's login files.

  mailstack-logins-applied ETC KEPT [--proxy]

Dovecot reads its passwd-files (ETC/passdb-*, ETC/tokens-*, ETC/userdb) again by itself when
they change, so adding a user restarts nothing and every open session stays. What Dovecot
does not do by itself is end the sessions of a user who may no longer log in: each user whose
line in a passdb-* or tokens-* file changed or went (removed, disabled, a new password, a
service taken away) has every session ended here (`doveadm kick`; on a proxy also the
sessions it passes on). KEPT holds copies of the files as last applied (root only), to compare
with: the deploy writes them after this ran. Each ended session is logged (syslog, tag
mailstack-logins)."""

import subprocess
import sys
import syslog
from pathlib import Path

COMPARED = ("passdb-*", "tokens-*")


def users(path: Path) -> dict[str, str]:
    """Each user's line in a passwd-file (none when the file is not there)."""
    if not path.is_file():
        return {}
    return {line.split(":", 1)[0]: line for line in path.read_text().splitlines() if ":" in line}


def changed(etc: Path, kept: Path) -> set[str]:
    """The users whose line in any compared file differs from the kept copy, or went."""
    names = {p.name for pattern in COMPARED for directory in (etc, kept) for p in directory.glob(pattern)}
    found = set()
    for name in names:
        now = users(etc / name)
        found |= {user for user, line in users(kept / name).items() if now.get(user) != line}
    return found


def end_sessions(user: str, proxy: bool) -> None:
    for command in (["doveadm", "kick", user], *([["doveadm", "proxy", "kick", user]] if proxy else [])):
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if done.stdout.strip():  # doveadm names the users whose connections it ended
            syslog.syslog(f"sessions ended, the user's login changed: {user} ({' '.join(command[1:-1])})")


def main() -> int:
    etc, kept, proxy = Path(sys.argv[1]), Path(sys.argv[2]), "--proxy" in sys.argv[3:]
    syslog.openlog("mailstack-logins")
    running = subprocess.run(["systemctl", "is-active", "--quiet", "dovecot"]).returncode == 0
    for user in sorted(changed(etc, kept)) if running else ():
        end_sessions(user, proxy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
