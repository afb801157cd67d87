"""Hosts with `mailbox`, when `backup.enabled`: restic (Debian) backs up the mail (Maildir
with Dovecot's index and UID files, Sieve scripts) to the S3 backup bucket, one repository
per host, encrypted with a key generated once and kept in the secrets directory. A timer
runs the backup and the retention, another `restic check`; a failed run is a failed unit
(the monitoring alerts on it). `mailstack-backup` on the host (and `mailstack backup` over
SSH) lists snapshots, runs a backup and restores a user or one folder, in place or beside."""

from __future__ import annotations

from mailstack import s3
from mailstack.component import Component, File, Service, schema_fragment
from mailstack.conventions import BACKUP_RECORDS, MAIL_ROOT
from mailstack.plan import HostPlan
from mailstack.secrets import password

TOOL = "/usr/local/sbin/mailstack-backup"  # `mailstack backup` runs it over SSH
ENVIRONMENT = "/etc/mailstack/backup.env"
UNITS = "/etc/systemd/system"


def environment(plan: HostPlan) -> str:
    inv = plan.inv
    key_id, secret = s3.backup_credentials(inv, plan.name)
    repository = f"s3:{s3.endpoint(inv)}/{inv.s3['buckets']['backup']}/{plan.name}"
    return "\n".join([f"RESTIC_REPOSITORY={repository}", f"RESTIC_PASSWORD={password(inv, f'restic-{plan.name}')}",
                      f"AWS_ACCESS_KEY_ID={key_id}", f"AWS_SECRET_ACCESS_KEY={secret}",
                      f"AWS_DEFAULT_REGION={inv.s3['region']}", "RESTIC_CACHE_DIR=/var/cache/restic", ""])


def configure(plan: HostPlan) -> list[Service]:
    settings = plan.inv.backup
    keep = {k: settings[k] for k in ("keep_daily", "keep_weekly", "keep_monthly")}
    return [
        Service(None, (
            File.text(ENVIRONMENT, environment(plan), mode="0600", secret=True),
            File.template(TOOL, "backup/mailstack-backup.py.j2", {"environment": ENVIRONMENT, "mail": MAIL_ROOT,
                                                                  "records": BACKUP_RECORDS, **keep}, mode="0750"),
        )),
        *(Service(f"{unit}.timer", (
            File.template(f"{UNITS}/{unit}.service", "backup/mailstack-backup.service.j2",
                          {"tool": TOOL, "action": action, "what": what}),
            File.template(f"{UNITS}/{unit}.timer", "backup/mailstack-backup.timer.j2",
                          {"schedule": settings[schedule], "what": what}),
        )) for unit, action, schedule, what in (
            ("mailstack-backup", "run", "schedule", "back up the mail"),
            ("mailstack-backup-check", "check", "check_schedule", "check the backup repository"))),
    ]


COMPONENT = Component(
    name="backup",
    schema=schema_fragment(__file__),
    roles=frozenset({"mailbox"}),
    packages=("restic",),
    units=("mailstack-backup.timer", "mailstack-backup-check.timer"),
    section="backup",
    enabled=lambda inv: inv.backup["enabled"],
    platform_only=True,
    configure=configure,
)
