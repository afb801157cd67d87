"""The container lab: real Debian bookworm hosts booted with systemd-nspawn.

Every host of the lab inventory becomes one container with systemd as PID 1 on a
private host bridge (static address, no default route), reachable over SSH with a lab
key (machines). apt inside the containers goes through apt-cacher-ng listening only on
the bridge address (network). The root filesystem is built once with debootstrap and
cached as a tarball keyed by its package list (image).
"""

from mailstack.lab.machines import Lab
from mailstack.lab.util import LAB_PASSWORD, STATE_DIR, LabError

__all__ = ["LAB_PASSWORD", "STATE_DIR", "Lab", "LabError"]
