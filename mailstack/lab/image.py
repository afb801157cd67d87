"""The lab's root filesystem: Debian bookworm from debootstrap with every package the
components install, their daemons disabled until deployed, cached as a tarball keyed
by its package list."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from mailstack.lab.util import CACHE_DIR, LabError, log, run

SUITE = "bookworm"
IMAGE_RECIPE = "3"
BOOTSTRAP_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "iproute2",
    "ca-certificates", "apt-utils", "less", "procps",
)
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


@dataclass(frozen=True)
class Recipe:
    """What the image carries: the components' packages, the debconf answers they need
    before installing, and the units that stay off until a deploy configured them."""

    packages: tuple[str, ...]
    disabled_units: tuple[str, ...]
    preseed: tuple[str, ...]

    @classmethod
    def of(cls, components) -> Recipe:
        """Every Debian package some component installs, their debconf answers, and their
        units (off in the image: they start once their component configured them)."""
        return cls(tuple(sorted({p for c in components for p in c.packages})),
                   tuple(sorted({f"{u}.service" for c in components for u in c.units} |
                                {u for c in components for u in c.disabled_units})),
                   tuple(sorted({line for c in components for line in c.preseed})))


def image_path(recipe: Recipe) -> Path:
    digest = hashlib.sha256("\n".join([
        SUITE, IMAGE_RECIPE, *BOOTSTRAP_PACKAGES, *sorted(recipe.packages), *sorted(recipe.disabled_units),
        *sorted(recipe.preseed)]).encode()).hexdigest()[:12]
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


def build_image(recipe: Recipe) -> Path:
    """Build (or reuse) the cached root filesystem of `recipe`."""
    target = image_path(recipe)
    packages, disabled_units = recipe.packages, recipe.disabled_units
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
    (tree / "root/preseed").write_text("".join(f"{line}\n" for line in recipe.preseed))
    keygen = tree / "etc/systemd/system/ssh-keygen.service"
    keygen.write_text(SSH_KEYGEN_UNIT)
    nspawn_chroot(tree, f"""
export DEBIAN_FRONTEND=noninteractive
debconf-set-selections /root/preseed
apt-get update -qq
mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/update-success-stamp  # lists as fresh as the image
apt-get install -y -qq --no-install-recommends {' '.join(sorted(packages))} >/dev/null
apt-get clean
systemctl enable systemd-networkd ssh-keygen.service
for unit in {' '.join(disabled_units)}; do
  systemctl disable "$unit" 2>/dev/null || true
done
rm -f /etc/ssh/ssh_host_* /root/preseed
: > /etc/machine-id
""")
    partial = target.with_suffix(".partial")
    run(["tar", "-C", str(tree), "--numeric-owner", "-I", "zstd -T0 -3", "-cf", str(partial), "."])
    partial.rename(target)
    shutil.rmtree(tree, ignore_errors=True)
    for stale in CACHE_DIR.glob(f"{SUITE}-*.tar.zst"):  # images of older package lists
        if stale != target:
            stale.unlink()
    log(f"image ready in {time.monotonic() - started:.0f} s")
    return target


