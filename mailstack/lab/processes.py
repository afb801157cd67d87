"""Processes of the lab: pid files, containers found by their marker, ports awaited."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path

from mailstack.lab.util import ENV_MARKER, LabError, run


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def pid_alive(pid_file: Path) -> bool:
    """The process exists and is not a zombie."""
    pid = read_pid(pid_file)
    if pid is None:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def stop_pid(pid_file: Path, timeout: float) -> None:
    pid = read_pid(pid_file)
    if pid is not None and pid_alive(pid_file):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(pid_file) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_alive(pid_file):
            os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)


def container_pids(name: str) -> list[int]:
    """Processes of a lab container, found by the marker its init carries in its
    environment: they outlive a killed nspawn, which must not leave a stale host."""
    marker = f"{ENV_MARKER}={name}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker in environ:
                pids.append(int(entry.name))
    return pids


def kill_container(name: str, timeout: float = 10) -> None:
    """SIGKILL what is left of a container: its init first, so its PID namespace goes."""
    deadline = time.monotonic() + timeout
    while (pids := container_pids(name)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    if container_pids(name):
        raise LabError(f"processes of lab host {name} survive SIGKILL: {container_pids(name)}")
    if Path(f"/sys/class/net/vb-{name}").exists():
        run(["ip", "link", "del", f"vb-{name}"])


def wait_for_port(address: str, port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise LabError(f"{what} did not answer on {address}:{port} within {timeout:.0f} s")


