"""The platform's S3 store as its users see it: where it answers, which key each purpose and
each backup host uses, which hosts run it and back up to it, and whether backups are locked.
It is SeaweedFS on the storage hosts (deploys/storage/, which turns these keys into its
identities) or an external provider the operator names; either way backups (deploys/backup/),
the lock keeper (deploys/backup_lock/) and the CLI read it here."""

from __future__ import annotations

from pathlib import Path

from mailstack.inventory import Inventory
from mailstack.plan import platform_hosts
from mailstack.secrets import password

PURPOSES = ("backup", "archive")  # one bucket and one key pair each


def deployed(inv: Inventory) -> bool:
    return inv.s3["provider"] == "seaweedfs"


def endpoint(inv: Inventory) -> str:
    if not deployed(inv):
        return inv.s3["endpoint"]
    return f"https://{storage_hosts(inv)[0].fqdn}:{inv.s3['port']}"


def credentials(inv: Inventory, purpose: str) -> tuple[str, str]:
    """(access key id, secret key) of one purpose: generated once for the deployed store,
    read from the operator's key file for an external one."""
    if not deployed(inv):
        key_id, secret = Path(inv.s3["key_files"][purpose]).expanduser().read_text().split()[:2]
        return key_id, secret
    return f"mailstack-{purpose}-{password(inv, f's3-{purpose}-id')[:12].lower()}", password(inv, f"s3-{purpose}")


def backup_credentials(inv: Inventory, host: str) -> tuple[str, str]:
    """(access key id, secret key) a mailbox host backs up with: its own folder of the
    backup bucket only, so a broken-into host cannot touch another host's backups. An
    external store has the operator's one backup key."""
    if not deployed(inv):
        return credentials(inv, "backup")
    return f"mailstack-{host}-{password(inv, f's3-backup-{host}-id')[:12].lower()}", password(inv, f"s3-backup-{host}")


def lock_credentials(inv: Inventory) -> tuple[str, str]:
    """(access key id, secret key) of the backup bucket's keeper: the first storage host sets
    and renews the object lock with it (S3's lock calls need SeaweedFS's Admin action)."""
    return f"mailstack-lock-{password(inv, 's3-backup-lock-id')[:12].lower()}", password(inv, "s3-backup-lock")


def locked(inv: Inventory) -> bool:
    """Whether the deployed store keeps the backups under object lock."""
    return deployed(inv) and inv.backup["enabled"] and inv.backup["locked_days"] > 0


def backup_hosts(inv: Inventory) -> tuple:
    """The hosts that back up to the store: the platform's mailbox hosts, with backups on."""
    return platform_hosts(inv, "mailbox") if inv.backup["enabled"] else ()


def storage_hosts(inv: Inventory) -> tuple:
    return platform_hosts(inv, "storage")
