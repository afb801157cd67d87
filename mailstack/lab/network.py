"""The lab's network: a host bridge without a route anywhere, and an apt proxy on it."""

from __future__ import annotations

from pathlib import Path

from mailstack.lab.processes import pid_alive, stop_pid, wait_for_port
from mailstack.lab.util import CACHE_DIR, STATE_DIR, run

APT_PROXY_PORT = 3142


def bridge_up(bridge: str, address: str) -> None:
    if Path(f"/sys/class/net/{bridge}").exists():
        return
    run(["ip", "link", "add", bridge, "type", "bridge"])
    run(["sysctl", "-q", "-w", f"net.ipv6.conf.{bridge}.disable_ipv6=1"])
    run(["ip", "addr", "add", address, "dev", bridge])
    run(["ip", "link", "set", bridge, "up"])


def bridge_down(bridge: str) -> None:
    if Path(f"/sys/class/net/{bridge}").exists():
        run(["ip", "link", "del", bridge])


def proxy_pid_file() -> Path:
    return STATE_DIR / "apt-cacher-ng.pid"


def proxy_up(bind: str) -> None:
    """apt-cacher-ng on the bridge address only, caching outside the clone. Its own
    configuration has no remapping: it fetches from the mirror the containers name,
    which is the one this machine's apt uses (the packaged remaps point elsewhere)."""
    if pid_alive(proxy_pid_file()):
        return
    cache, logs, conf = CACHE_DIR / "apt-cacher-ng", STATE_DIR / "apt-cacher-ng-log", STATE_DIR / "acng"
    for path in (cache, logs, conf):
        path.mkdir(parents=True, exist_ok=True)
    (conf / "acng.conf").write_text(
        f"CacheDir: {cache}\nLogDir: {logs}\nSupportDir: /usr/lib/apt-cacher-ng\n"
        f"BindAddress: {bind}\nPort: {APT_PROXY_PORT}\nPidFile: {proxy_pid_file()}\n"
        "SocketPath:\nExThreshold: 30\nForeGround: 0\n")
    run(["/usr/sbin/apt-cacher-ng", "-c", str(conf)])
    wait_for_port(bind, APT_PROXY_PORT, 15, "apt-cacher-ng")


def proxy_down() -> None:
    stop_pid(proxy_pid_file(), 10)


