"""The lab's machines: one systemd-nspawn container per inventory host."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mailstack.inventory import Inventory
from mailstack.lab.acme import ensure_ca
from mailstack.lab.image import Recipe, build_image
from mailstack.lab.network import APT_PROXY_PORT, bridge_down, bridge_up, proxy_down, proxy_up
from mailstack.lab.processes import kill_container, pid_alive, stop_pid, wait_for_port
from mailstack.lab.util import ENV_MARKER, LAB_PASSWORD, STATE_DIR, LabError, log, run


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



class Lab:
    """The lab described by an inventory's hosts and its `lab` section."""

    def __init__(self, inventory: Inventory, recipe: Recipe):
        self.inventory = inventory
        self.settings = inventory.lab
        self.recipe = recipe
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
        """Bring every host up; hosts already running are left alone; the lab's ACME CA runs
        and its current root is kept (mailstack/lab/acme.py). Refused while
        hosts of another lab inventory run (they would share the bridge and names); the
        trees of its stopped hosts are removed."""
        others = [LabHost(d.name, "") for d in (STATE_DIR / "machines").glob("*")
                  if d.name not in {h.name for h in self.hosts}]
        running = sorted(h.name for h in others if pid_alive(h.pid_file))
        if running:
            raise LabError(f"hosts of another lab inventory run here ({', '.join(running)}): "
                           "run `mailstack lab down` first")
        for stale in others:  # left by a lab that was stopped without `down`
            kill_container(stale.name)
            shutil.rmtree(stale.root.parent, ignore_errors=True)
        image = build_image(self.recipe)
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
        ensure_ca(self.inventory)

    def down(self) -> None:
        """Stop every host and remove its tree, the bridge and the apt proxy; hosts of
        another lab inventory left running go too (they share the bridge)."""
        machines = STATE_DIR / "machines"
        others = [LabHost(d.name, "") for d in machines.iterdir()
                  if d.is_dir() and d.name not in {h.name for h in self.hosts}] if machines.exists() else []
        def remove(host: LabHost) -> None:
            stop_pid(host.pid_file, 30)
            kill_container(host.name)
            shutil.rmtree(host.root.parent, ignore_errors=True)

        with ThreadPoolExecutor(8) as pool:  # each host shuts down on its own: all at once
            list(pool.map(remove, (*self.hosts, *others)))
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
            lines.append(f"  {host.name:<8} {host.address:<12} {host.fqdn:<17} {state:<8} "
                         f"{role}{', '.join(host.roles)}")
        platform = [h for h in inv.hosts if not h.outside and "mailbox" in h.roles][0]
        user = next(u for u in inv.users if platform.name in inv.domain(u.domain).mailbox)
        sender = inv.host(inv.domain(user.domain).submission[0])
        outside = next((u for u in inv.users
                        if all(inv.host(n).outside for n in inv.domain(u.domain).mx)), user)
        lines += [
            "",
            f"Log in as {user.address}, password '{LAB_PASSWORD}' (every lab user has it):",
            f"  IMAP {platform.address}:993, POP3 :995; submission {sender.address}:587 (STARTTLS) and :465",
            f"  CA certificates (verify with these): {ca_file}",
            "Send a test mail to the outside world and read it there:",
            f"  swaks --server {sender.address}:587 --tls --auth-user {user.address} "
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

