"""The container lab: real Debian bookworm hosts booted with systemd-nspawn.

Every host of the lab inventory becomes one container with systemd as PID 1 on a
private host bridge (static address, no default route), reachable over SSH with
a lab key. apt inside the containers goes through apt-cacher-ng listening only
on the bridge address. The root filesystem is built once with debootstrap and
cached as a tarball keyed by its package list.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mailstack.inventory import Inventory

SUITE = "bookworm"
STATE_DIR = Path(os.environ.get("MAILSTACK_LAB_STATE", "/var/lib/mailstack/lab"))
CACHE_DIR = Path(os.environ.get("MAILSTACK_LAB_CACHE", "/var/cache/mailstack"))
APT_PROXY_PORT = 3142
ENV_MARKER = "MAILSTACK_LAB_HOST"  # set in each container init's environment
# Password of every user in inventories/lab.yml (only its hash is in the inventory).
LAB_PASSWORD = "correct horse lab"
# Bumped whenever the way the image is made changes, so cached images are rebuilt.
IMAGE_RECIPE = "3"
BOOTSTRAP_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "iproute2",
    "ca-certificates", "apt-utils", "less", "procps",
)
# Daemons the image carries but must not start until their deploy configures them.
DISABLED_UNITS = (
    "postfix.service", "dovecot.service", "rspamd.service", "redis-server.service",
    "unbound.service", "unbound-resolvconf.service", "nsd.service",
)
PRESEED = "postfix postfix/main_mailer_type select No configuration\n"
SSH_KEYGEN_UNIT = """[Unit]
Description=Generate SSH host keys on first boot
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
"""


class LabError(RuntimeError):
    """A lab step failed; the message says which and what to do."""


@dataclass(frozen=True)
class LabHost:
    name: str
    address: str

    @property
    def root(self) -> Path:
        return STATE_DIR / "machines" / self.name / "root"

    @property
    def pid_file(self) -> Path:
        return STATE_DIR / "machines" / self.name / "nspawn.pid"

    @property
    def log_file(self) -> Path:
        return STATE_DIR / "machines" / self.name / "console.log"


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a command, raising LabError with its output when it fails."""
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        raise LabError(f"{shlex.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc


def log(message: str) -> None:
    print(f"lab: {message}", file=sys.stderr, flush=True)


# --- image -----------------------------------------------------------------

def host_debian_mirror() -> str:
    """The Debian archive this machine's own apt uses (never hard-coded here)."""
    sources = [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")]
    for path in sources:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            words = line.split()
            if line.startswith("URIs:") and len(words) > 1 and not words[1].endswith("-security"):
                return words[1]
            if words[:1] == ["deb"] and not any(w.endswith("-security") for w in words):
                return next(w for w in words[1:] if "://" in w)
    raise LabError("cannot find the Debian mirror in /etc/apt/sources*; configure apt first")


def image_path(packages: tuple[str, ...]) -> Path:
    digest = hashlib.sha256(
        "\n".join([SUITE, IMAGE_RECIPE, *BOOTSTRAP_PACKAGES, *sorted(packages)]).encode()
    ).hexdigest()[:12]
    return CACHE_DIR / f"{SUITE}-{digest}.tar.zst"


def nspawn_chroot(root: Path, script: str) -> None:
    """Run a shell script inside an unbooted tree (no mounts by hand, no stdin)."""
    script_file = root / "root" / "lab-step.sh"
    script_file.write_text("set -eu\n" + script)
    try:
        run(["systemd-nspawn", "-q", "-a", "-D", str(root), "--register=no", "--keep-unit",
             "--console=pipe", "/bin/sh", "/root/lab-step.sh"], stdin=subprocess.DEVNULL)
    finally:
        script_file.unlink(missing_ok=True)


def build_image(packages: tuple[str, ...]) -> Path:
    """Build (or reuse) the cached root filesystem that carries `packages`."""
    target = image_path(packages)
    if target.exists():
        return target
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tree = CACHE_DIR / (target.name + ".build")
    shutil.rmtree(tree, ignore_errors=True)
    mirror = host_debian_mirror()
    started = time.monotonic()
    log(f"building image {target.name} (debootstrap {SUITE}, {len(packages)} packages)")
    run(["debootstrap", "--variant=minbase", "--include=" + ",".join(BOOTSTRAP_PACKAGES),
         SUITE, str(tree), mirror])
    security = mirror.rstrip("/") + "-security"
    (tree / "etc/apt/sources.list").write_text(
        f"deb {mirror} {SUITE} main\ndeb {mirror} {SUITE}-updates main\n"
        f"deb {security} {SUITE}-security main\n"
    )
    (tree / "root/preseed").write_text(PRESEED)
    keygen = tree / "etc/systemd/system/ssh-keygen.service"
    keygen.write_text(SSH_KEYGEN_UNIT)
    nspawn_chroot(tree, f"""
export DEBIAN_FRONTEND=noninteractive
debconf-set-selections /root/preseed
apt-get update -qq
apt-get install -y -qq --no-install-recommends {' '.join(sorted(packages))} >/dev/null
apt-get clean
systemctl enable systemd-networkd ssh-keygen.service
for unit in {' '.join(DISABLED_UNITS)}; do
  systemctl disable "$unit" 2>/dev/null || true
done
systemctl mask clamav-freshclam.service 2>/dev/null || true
rm -f /etc/ssh/ssh_host_* /root/preseed
: > /etc/machine-id
""")
    partial = target.with_suffix(".partial")
    run(["tar", "-C", str(tree), "--numeric-owner", "-I", "zstd -T0 -3", "-cf", str(partial), "."])
    partial.rename(target)
    shutil.rmtree(tree, ignore_errors=True)
    log(f"image ready in {time.monotonic() - started:.0f} s")
    return target


# --- network and apt proxy ----------------------------------------------------

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


# --- processes ----------------------------------------------------------------

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


# --- the lab -----------------------------------------------------------------

class Lab:
    """The lab described by an inventory's hosts and its `lab` section."""

    def __init__(self, inventory: Inventory, packages: tuple[str, ...]):
        self.inventory = inventory
        self.settings = inventory.lab
        self.packages = packages
        self.hosts = tuple(LabHost(h.name, h.address) for h in inventory.hosts)

    @property
    def bridge(self) -> str:
        return self.settings["bridge"]

    @property
    def gateway(self) -> str:
        return self.settings["bridge_address"].split("/")[0]

    @property
    def prefix(self) -> str:
        return self.settings["bridge_address"].split("/")[1]

    @property
    def ssh_key(self) -> Path:
        """The lab key: the one the inventory's hosts name, created by `up`."""
        keys = {h.ssh.get("key") for h in self.inventory.hosts}
        if len(keys) != 1 or None in keys:
            raise LabError("every lab host must name the same ssh.key in the inventory")
        return Path(os.path.expanduser(keys.pop()))

    @property
    def ssh_config(self) -> Path:
        return STATE_DIR / "ssh" / "config"

    def host(self, name: str) -> LabHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise LabError(f"no lab host named {name!r}; hosts: {', '.join(h.name for h in self.hosts)}")

    def up(self) -> None:
        """Bring every host up; hosts already running are left alone."""
        image = build_image(self.packages)
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        self._ssh_material()
        bridge_up(self.bridge, self.settings["bridge_address"])
        proxy_up(self.gateway)
        started = [h for h in self.hosts if not pid_alive(h.pid_file)]
        if started:  # SSH control sockets of hosts that went away are stale
            for control in self.ssh_config.parent.glob("cm-*"):
                control.unlink(missing_ok=True)
        for host in started:
            self._create(host, image)
            self._boot(host)
        for host in started:
            self._wait_ready(host)
        if started:
            log(f"up: {', '.join(h.name for h in started)}")
        else:
            log("already up")

    def down(self) -> None:
        """Stop every host and remove its tree, the bridge and the apt proxy."""
        for host in self.hosts:
            stop_pid(host.pid_file, 30)
            kill_container(host.name)
            shutil.rmtree(host.root.parent, ignore_errors=True)
        machines = STATE_DIR / "machines"
        if machines.exists() and not any(machines.iterdir()):
            machines.rmdir()
        proxy_down()
        bridge_down(self.bridge)
        for control in (STATE_DIR / "ssh").glob("cm-*"):
            control.unlink(missing_ok=True)
        log("down")

    def status(self) -> list[tuple[str, str, str]]:
        rows = []
        for host in self.hosts:
            state = "running" if pid_alive(host.pid_file) else "stopped"
            rows.append((host.name, host.address, state))
        return rows

    def summary(self, ca_file: Path) -> str:
        """How to use the running lab: hosts, a user to log in as, a test mail."""
        inv = self.inventory
        lines = [f"mailstack lab ({inv.file})"]
        for host in inv.hosts:
            state = "running" if pid_alive(LabHost(host.name, host.address).pid_file) else "STOPPED"
            role = "outside world: " if host.outside else ""
            lines.append(f"  {host.name:<6} {host.address:<12} {host.fqdn:<16} {state:<8} "
                         f"{role}{', '.join(host.roles)}")
        platform = [h for h in inv.hosts if not h.outside and "mailbox" in h.roles][0]
        user = next(u for u in inv.users if platform.name in inv.domain(u.domain).mailbox)
        outside = next((u for u in inv.users
                        if all(inv.host(n).outside for n in inv.domain(u.domain).mx)), user)
        lines += [
            "",
            f"Log in as {user.address}, password '{LAB_PASSWORD}' (every lab user has it):",
            f"  IMAP {platform.address}:993, POP3 :995, submission :587 (STARTTLS) and :465",
            f"  CA certificate: {ca_file}",
            "Send a test mail to the outside world and read it there:",
            f"  swaks --server {platform.address}:587 --tls --auth-user {user.address} "
            f"--auth-password '{LAB_PASSWORD}' --from {user.address} --to {outside.address}",
            f"  .venv/bin/mailstack lab ssh {inv.domain(outside.domain).mx[0]} doveadm search -u "
            f"{outside.address} mailbox INBOX all",
            "Shell on a host: .venv/bin/mailstack lab ssh HOST; stop the lab: .venv/bin/mailstack lab down",
        ]
        return "\n".join(lines)

    def ssh_command(self, name: str, command: list[str]) -> list[str]:
        host = self.host(name)
        return ["ssh", "-F", str(self.ssh_config), host.name, *command]

    # internals

    def _ssh_material(self) -> None:
        ssh_dir = self.ssh_config.parent
        for directory in (ssh_dir, self.ssh_key.parent):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.ssh_key.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mailstack-lab",
                 "-f", str(self.ssh_key)])
        entries = []
        for host in self.hosts:
            entries.append(
                f"Host {host.name} {host.address}\n  HostName {host.address}\n  User root\n"
                f"  IdentityFile {self.ssh_key}\n  IdentitiesOnly yes\n"
                "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
                f"  ControlMaster auto\n  ControlPath {ssh_dir}/cm-%C\n  ControlPersist 5m\n"
            )
        self.ssh_config.write_text("\n".join(entries))

    def _create(self, host: LabHost, image: Path) -> None:
        kill_container(host.name)
        shutil.rmtree(host.root.parent, ignore_errors=True)
        host.root.mkdir(parents=True)
        run(["tar", "-C", str(host.root), "--numeric-owner", "-I", "zstd -T0", "-xf", str(image)])
        etc = host.root / "etc"
        (etc / "hostname").write_text(host.name + "\n")
        (etc / "systemd/network/10-host0.network").write_text(
            "[Match]\nName=host0\n\n[Network]\n"
            f"Address={host.address}/{self.prefix}\n"
            "LinkLocalAddressing=no\nIPv6AcceptRA=no\n"
        )
        (etc / "apt/apt.conf.d/01mailstack-proxy").write_text(
            f'Acquire::http::Proxy "http://{self.gateway}:{APT_PROXY_PORT}";\n'
        )
        resolv = etc / "resolv.conf"
        resolv.unlink(missing_ok=True)
        resolv.write_text("nameserver 127.0.0.1\n")
        ssh_dir = host.root / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        keys = ssh_dir / "authorized_keys"
        keys.write_text(self.ssh_key.with_suffix(".pub").read_text())
        keys.chmod(0o600)

    def _boot(self, host: LabHost) -> None:
        nspawn = shlex.join([
            "systemd-nspawn", "-D", str(host.root), "-M", host.name, "-b", "--register=no",
            "--keep-unit", "--console=read-only", f"--network-bridge={self.bridge}",
            "--resolv-conf=off", "--timezone=off", "--link-journal=no",
            f"--setenv={ENV_MARKER}={host.name}",
        ])
        # nspawn exits 133 when the container reboots: start it again then.
        wrapper = f'trap "kill -TERM \\$child; wait \\$child; exit 0" TERM; ' \
                  f'while :; do {nspawn} & child=$!; wait $child; rc=$?; ' \
                  f'[ $rc -eq 133 ] || exit $rc; done'
        with open(host.log_file, "ab") as console:
            proc = subprocess.Popen(["sh", "-c", wrapper], stdin=subprocess.DEVNULL,
                                    stdout=console, stderr=console, start_new_session=True)
        host.pid_file.write_text(str(proc.pid))

    def _wait_ready(self, host: LabHost, timeout: float = 90) -> None:
        try:
            wait_for_port(host.address, 22, timeout, f"ssh on lab host {host.name}")
        except LabError as err:
            raise LabError(f"{err}; see {host.log_file}") from None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = subprocess.run(self.ssh_command(host.name, ["true"]), capture_output=True,
                                  stdin=subprocess.DEVNULL, timeout=30)
            if proc.returncode == 0:
                return
            time.sleep(0.5)
        raise LabError(f"ssh login to lab host {host.name} failed; see {host.log_file}")
