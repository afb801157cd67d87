"""The lab's hosts as Vagrant machines, proven on this machine: Vagrant's docker provider
with an image made from the lab's own debootstrap image (no box download), under a dockerd
of the lab's own that leaves the host's firewall and forwarding alone. On a laptop the same
Vagrantfile uses VirtualBox or libvirt and a public Debian 12 box (docs/vagrant.md).

The machines get the inventory's addresses on a docker network whose gateway is the lab
bridge's address, so the project's pyinfra deploy, the lab's SSH config and the lab tests
work unchanged; the nspawn lab and this one are never up at the same time.

    python -m mailstack.lab.vagrant up|down [INVENTORY]
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mailstack.inventory import Inventory, load
from mailstack.lab.image import build_image
from mailstack.lab.machines import Lab
from mailstack.lab.network import APT_PROXY_PORT, proxy_down, proxy_up
from mailstack.lab.processes import pid_alive, stop_pid, wait_for_port
from mailstack.lab.util import CACHE_DIR, STATE_DIR, LabError, log, run

ROOT = Path(__file__).resolve().parents[2]
DOCKER_STATE = STATE_DIR / "docker"
DOCKER_SOCKET = DOCKER_STATE / "docker.sock"
DOCKER_PID = DOCKER_STATE / "dockerd.pid"
DOCKER_BRIDGE_ADDRESS = "192.168.55.1/24"  # docker's own bridge: Vagrant reaches SSH over it
IMAGE_REPOSITORY = "mailstack-vagrant"
# Docker bind-mounts /etc/hosts, /etc/hostname and /etc/resolv.conf and gives a default
# route: at boot they become plain files (the deploy writes them, as on any host) and the
# route goes (a lab host reaches nothing outside the lab). Docker configures the network
# itself (networkd's wait-online is masked), and its embedded resolver on 127.0.0.11 in
# each machine asks the machine's own unbound ("dns": 127.0.0.1), nothing outside.
FIXUPS = """#!/bin/sh
for f in hosts hostname; do
  content=$(cat /etc/$f)
  umount /etc/$f && printf '%s\\n' "$content" > /etc/$f
done
umount /etc/resolv.conf && echo "nameserver 127.0.0.1" > /etc/resolv.conf
ip route del default || true
"""
FIXUPS_UNIT = """[Unit]
Description=mailstack: a docker container made like a lab host
DefaultDependencies=no
After=local-fs.target
Before=network.target ssh.service unbound.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/mailstack-docker-fixups

[Install]
WantedBy=multi-user.target
"""
DOCKERFILE = """FROM {base}
COPY authorized_keys /root/.ssh/authorized_keys
COPY mailstack-docker-fixups.service /etc/systemd/system/mailstack-docker-fixups.service
COPY mailstack-docker-fixups /usr/local/sbin/mailstack-docker-fixups
COPY 01mailstack-proxy /etc/apt/apt.conf.d/01mailstack-proxy
RUN chmod 0700 /root/.ssh && chmod 0600 /root/.ssh/authorized_keys \\
 && chmod 0755 /usr/local/sbin/mailstack-docker-fixups \\
 && ln -sf /etc/systemd/system/mailstack-docker-fixups.service \\
      /etc/systemd/system/multi-user.target.wants/mailstack-docker-fixups.service \\
 && ln -sf /etc/machine-id /var/lib/dbus/machine-id && touch /etc/fstab \\
 && ln -sf /dev/null /etc/systemd/system/getty@tty1.service \\
 && ln -sf /dev/null /etc/systemd/system/console-getty.service \\
 && ln -sf /dev/null /etc/systemd/system/systemd-networkd-wait-online.service
STOPSIGNAL SIGRTMIN+3
"""


def environment(image: str = "") -> dict[str, str]:
    """What Vagrant and the docker client need: our dockerd, the docker provider, the image."""
    env = dict(os.environ, DOCKER_HOST=f"unix://{DOCKER_SOCKET}", VAGRANT_DEFAULT_PROVIDER="docker",
               VAGRANT_CHECKPOINT_DISABLE="1", VAGRANT_DOTFILE_PATH=str(STATE_DIR / "vagrant"))
    if image:
        env["MAILSTACK_VAGRANT_IMAGE"] = image
    return env


def docker(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return run(["docker", *args], env=environment(), **kwargs)


def dockerd_up() -> None:
    """dockerd with the host's iptables, forwarding and masquerading left alone."""
    if pid_alive(DOCKER_PID):
        return
    DOCKER_STATE.mkdir(parents=True, exist_ok=True)
    config = DOCKER_STATE / "daemon.json"
    config.write_text(json.dumps({
        "iptables": False, "ip6tables": False, "ip-forward": False, "ip-masq": False,
        "bip": DOCKER_BRIDGE_ADDRESS, "dns": ["127.0.0.1"], "data-root": str(CACHE_DIR / "docker"),
        "exec-root": str(DOCKER_STATE / "exec"), "pidfile": str(DOCKER_PID),
        "hosts": [f"unix://{DOCKER_SOCKET}"]}, indent=1))
    with open(DOCKER_STATE / "dockerd.log", "ab") as out:
        subprocess.Popen(["dockerd", "--config-file", str(config)], stdin=subprocess.DEVNULL,
                         stdout=out, stderr=out, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if DOCKER_SOCKET.exists() and subprocess.run(["docker", "info"], env=environment(),
                                                     capture_output=True).returncode == 0:
            return
        time.sleep(0.5)
    raise LabError(f"dockerd did not start; see {DOCKER_STATE / 'dockerd.log'}")


def dockerd_down() -> None:
    stop_pid(DOCKER_PID, 30)
    if Path("/sys/class/net/docker0").exists():  # dockerd leaves its bridge behind
        run(["ip", "link", "del", "docker0"])


def image(lab: Lab) -> str:
    """The machines' image: the lab image, made bootable under docker, with the lab key."""
    base_tarball = build_image(lab.recipe)
    key = lab.ssh_key.with_suffix(".pub").read_text()
    proxy = f'Acquire::http::Proxy "http://{lab.gateway}:{APT_PROXY_PORT}";\n'
    digest = hashlib.sha256("\n".join([base_tarball.name, key, proxy, FIXUPS, FIXUPS_UNIT, DOCKERFILE]).encode())
    tag = f"{IMAGE_REPOSITORY}:{digest.hexdigest()[:12]}"
    if subprocess.run(["docker", "image", "inspect", tag], env=environment(), capture_output=True).returncode == 0:
        return tag
    base = f"{IMAGE_REPOSITORY}-base:{base_tarball.name.split('.')[0]}"
    if subprocess.run(["docker", "image", "inspect", base], env=environment(), capture_output=True).returncode:
        log(f"importing {base_tarball.name} into docker")
        unpacked = subprocess.Popen(["zstd", "-dc", str(base_tarball)], stdout=subprocess.PIPE)
        docker("import", "--change", 'CMD ["/lib/systemd/systemd"]', "--change", "ENV container=docker",
               "-", base, stdin=unpacked.stdout)
        unpacked.wait()
    with tempfile.TemporaryDirectory() as context:
        folder = Path(context)
        (folder / "Dockerfile").write_text(DOCKERFILE.format(base=base))
        (folder / "authorized_keys").write_text(key)
        (folder / "mailstack-docker-fixups.service").write_text(FIXUPS_UNIT)
        (folder / "mailstack-docker-fixups").write_text(FIXUPS)
        (folder / "01mailstack-proxy").write_text(proxy)
        docker("build", "--network=none", "-q", "-t", tag, str(folder))
    for repository, keep in ((IMAGE_REPOSITORY, tag), (f"{IMAGE_REPOSITORY}-base", base)):
        stale = [name for name in docker("images", repository, "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
                 if name != keep]  # images of older lab images or keys
        if stale:
            docker("rmi", *stale)
    return tag


def vagrant(*args: str, image_tag: str = "", inventory: Path) -> None:
    env = dict(environment(image_tag), MAILSTACK_INVENTORY=str(inventory))
    proc = subprocess.run(["vagrant", *args], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise LabError(f"vagrant {' '.join(args)} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")


def up(inv: Inventory, lab: Lab) -> None:
    if Path(f"/sys/class/net/{lab.bridge}").exists():
        raise LabError(f"the nspawn lab is up (bridge {lab.bridge}): `mailstack lab down` first")
    started = time.monotonic()
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    lab._ssh_material()
    dockerd_up()
    tag = image(lab)
    vagrant("up", "--provider=docker", image_tag=tag, inventory=inv.file)
    proxy_up(lab.gateway)  # apt on the machines, through the docker network's gateway
    for host in inv.hosts:
        wait_for_port(host.address, 22, 60, f"ssh on vagrant machine {host.name}")
    log(f"vagrant up: {', '.join(h.name for h in inv.hosts)} in {time.monotonic() - started:.0f} s")


def down(inv: Inventory, lab: Lab) -> None:
    if pid_alive(DOCKER_PID):
        vagrant("destroy", "-f", inventory=inv.file)
        docker("network", "prune", "-f")
    proxy_down()
    dockerd_down()
    shutil.rmtree(STATE_DIR / "vagrant", ignore_errors=True)
    for control in (STATE_DIR / "ssh").glob("cm-*"):
        control.unlink(missing_ok=True)
    log("vagrant down")


def main(argv: list[str]) -> int:
    from deploys import COMPONENTS
    from mailstack.lab.image import Recipe

    if len(argv) not in (1, 2) or argv[0] not in ("up", "down"):
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    inv = load(Path(argv[1] if len(argv) == 2 else os.environ.get("MAILSTACK_INVENTORY", "inventories/lab.yml")))
    lab = Lab(inv, Recipe.of(COMPONENTS))
    try:
        (up if argv[0] == "up" else down)(inv, lab)
    except LabError as err:
        print(f"lab: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
