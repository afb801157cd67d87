"""The first storage host, when the deployed store keeps the backups under object lock
(`backup.locked_days`): makes the backup bucket's default retention COMPLIANCE (a file
version no key can delete, not even the operator's), renews the lock of the current files
daily so a file a mailbox host deletes or overwrites stays for at least `locked_days`, and
removes the old versions whose lock ran out. `mailstack backup rewind HOST TIME` runs its
tool to put a host's repository back as it was. Its S3 key (Admin on that bucket) stays on
this host."""

from __future__ import annotations

from mailstack import s3, tls
from mailstack.component import Component, File, Service
from mailstack.plan import HostPlan

TOOL = "/usr/local/sbin/mailstack-backup-lock"  # `mailstack backup rewind` runs it over SSH
KEYS = "/etc/mailstack/backup-lock.keys"
UNITS = "/etc/systemd/system"


def keeper(inv, host) -> bool:
    """The store's first host keeps the lock (the bucket belongs to the whole cluster)."""
    return host == s3.storage_hosts(inv)[0]


def configure(plan: HostPlan) -> list[Service]:
    inv = plan.inv
    days = inv.backup["locked_days"]
    context = {"endpoint": s3.endpoint(inv), "bucket": inv.s3["buckets"]["backup"], "region": inv.s3["region"],
               "ca": tls.TRUST, "keys": KEYS, "days": days, "longest": 2 * days, "tool": TOOL}
    return [
        Service(None, (
            File.text(KEYS, "\n".join(s3.lock_credentials(inv)), mode="0600", secret=True),
            File.template(TOOL, "backup_lock/mailstack-backup-lock.py.j2", context, mode="0750"),
        ), on_change=f"{TOOL} settle"),
        Service("mailstack-backup-lock.timer", (
            File.template(f"{UNITS}/mailstack-backup-lock.service", "backup_lock/mailstack-backup-lock.service.j2",
                          context),
            File.template(f"{UNITS}/mailstack-backup-lock.timer", "backup_lock/mailstack-backup-lock.timer.j2",
                          context),
        )),
    ]


COMPONENT = Component(
    name="backup_lock",
    roles=frozenset({"storage"}),
    packages=("python3-boto3",),
    units=("mailstack-backup-lock.timer",),
    enabled=s3.locked,
    needed=keeper,
    platform_only=True,
    configure=configure,
)
