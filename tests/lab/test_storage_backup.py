"""S3 storage and backups (lessons 2, 7, 10): SeaweedFS on the storage host speaks S3 over
HTTPS only, each purpose's key opens its own bucket only; restic backs the mailboxes up
there, and the proof of a backup is a restore: a user's whole mailbox and another user's
folder are deleted on the host, restored with `mailstack backup restore`, and read back
over IMAP byte for byte, with their flags and UIDs."""

from __future__ import annotations

import datetime
import http.client
import imaplib
import re
import socket
import subprocess
import sys
import time

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from helpers import PASSWORD, named_context
from labenv import INVENTORY, ROOT
from test_monitoring import alert
from test_status import finding, status

from deploys import storage
from deploys.backup import ENVIRONMENT, TOOL
from mailstack import s3 as store
from mailstack.conventions import BACKUP_RECORDS

BACKUP_BUCKET = INVENTORY.s3["buckets"]["backup"]
ARCHIVE_BUCKET = INVENTORY.s3["buckets"]["archive"]
pytestmark = pytest.mark.usefixtures("lab_names")  # boto3 checks the store's certificate by name


def s3(ca_file: str, purpose: str, secret: str | None = None):
    key_id, key = store.credentials(INVENTORY, purpose)
    return boto3.client("s3", endpoint_url=store.endpoint(INVENTORY), aws_access_key_id=key_id,
                        aws_secret_access_key=secret or key, region_name="us-east-1", verify=ca_file,
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


def test_the_backup_key_puts_gets_and_lists_in_its_bucket(ca_file, tag):
    client = s3(ca_file, "backup")
    body = f"{tag}\n".encode() * 1000
    client.put_object(Bucket=BACKUP_BUCKET, Key=f"test/{tag}", Body=body)
    try:
        assert client.get_object(Bucket=BACKUP_BUCKET, Key=f"test/{tag}")["Body"].read() == body
        listed = client.list_objects_v2(Bucket=BACKUP_BUCKET, Prefix="test/")["Contents"]
        assert f"test/{tag}" in [o["Key"] for o in listed]
    finally:
        client.delete_object(Bucket=BACKUP_BUCKET, Key=f"test/{tag}")


def test_a_key_opens_its_own_bucket_only(ca_file, tag):
    backup, archive = s3(ca_file, "backup"), s3(ca_file, "archive")
    backup.put_object(Bucket=BACKUP_BUCKET, Key=f"test/{tag}", Body=b"backup data")
    try:
        for attempt in (lambda: archive.get_object(Bucket=BACKUP_BUCKET, Key=f"test/{tag}"),
                        lambda: archive.list_objects_v2(Bucket=BACKUP_BUCKET),
                        lambda: archive.put_object(Bucket=BACKUP_BUCKET, Key=f"test/{tag}-2", Body=b"x"),
                        lambda: backup.put_object(Bucket=ARCHIVE_BUCKET, Key=f"test/{tag}", Body=b"x")):
            with pytest.raises(ClientError) as refused:
                attempt()
            assert refused.value.response["Error"]["Code"] == "AccessDenied"
        archive.put_object(Bucket=ARCHIVE_BUCKET, Key=f"test/{tag}", Body=b"archive data")  # its own: yes
        archive.delete_object(Bucket=ARCHIVE_BUCKET, Key=f"test/{tag}")
    finally:
        backup.delete_object(Bucket=BACKUP_BUCKET, Key=f"test/{tag}")


def host_backup_client(mail, ca_file: str):
    """The S3 client an intruder on the mailbox host gets: the key in its backup settings."""
    settings = dict(line.split("=", 1) for line in mail.file(ENVIRONMENT).content_string.splitlines() if "=" in line)
    return boto3.client("s3", endpoint_url=store.endpoint(INVENTORY), aws_access_key_id=settings["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=settings["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1",
                        verify=ca_file, config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


def test_a_mailbox_hosts_key_cannot_touch_another_hosts_backups(mail, ca_file, tag):
    """Broken into the mailbox host `mail`, the attacker has its backup key: another host's
    repository (planted here with the operator's key) cannot be deleted, overwritten or
    listed with it, nor can anything be put beside the folders; `mail`'s own folder works."""
    operator, intruder = s3(ca_file, "backup"), host_backup_client(mail, ca_file)
    other = f"mail2/{tag}-config"  # mail2: a neighbour whose name starts like this host's
    operator.put_object(Bucket=BACKUP_BUCKET, Key=other, Body=b"the neighbour's repository")
    try:
        for attempt in (lambda: intruder.delete_object(Bucket=BACKUP_BUCKET, Key=other),
                        lambda: intruder.put_object(Bucket=BACKUP_BUCKET, Key=other, Body=b"overwritten"),
                        lambda: intruder.put_object(Bucket=BACKUP_BUCKET, Key=f"{tag}-planted", Body=b"x"),
                        lambda: intruder.list_objects_v2(Bucket=BACKUP_BUCKET),
                        lambda: intruder.list_objects_v2(Bucket=BACKUP_BUCKET, Prefix="mail2/")):
            with pytest.raises(ClientError) as refused:
                attempt()
            assert refused.value.response["Error"]["Code"] == "AccessDenied"
        assert operator.get_object(Bucket=BACKUP_BUCKET, Key=other)["Body"].read() == b"the neighbour's repository"
        own = f"mail/{tag}-probe"
        intruder.put_object(Bucket=BACKUP_BUCKET, Key=own, Body=b"its own")
        assert [o["Key"] for o in intruder.list_objects_v2(Bucket=BACKUP_BUCKET, Prefix=own)["Contents"]] == [own]
        intruder.delete_object(Bucket=BACKUP_BUCKET, Key=own)
    finally:
        operator.delete_object(Bucket=BACKUP_BUCKET, Key=other)


def test_s3_is_closed_to_hosts_that_do_not_use_it(ext, addr):
    """ext, a host on the LAN that neither backs up nor is one of `s3.clients`, reaches no S3."""
    probe = ext.run(f"timeout 5 bash -c '</dev/tcp/{addr['mail']}/{INVENTORY.s3['port']}'")
    assert probe.rc != 0, "S3 answers a host that does not use it"


def test_a_wrong_secret_and_plain_http_are_refused(ca_file, addr):
    with pytest.raises(ClientError) as refused:
        s3(ca_file, "backup", secret="not-the-secret").list_objects_v2(Bucket=BACKUP_BUCKET)
    assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    plain = http.client.HTTPConnection(addr["mail"], INVENTORY.s3["port"], timeout=10)
    try:
        plain.request("GET", f"/{BACKUP_BUCKET}")
        answer = plain.getresponse()
        assert answer.status == 400 and b"ListBucketResult" not in answer.read()  # "HTTP request to an HTTPS server"
    except (ConnectionError, http.client.HTTPException):
        pass  # or no answer at all


def test_seaweedfs_internals_are_closed_to_the_network(addr):
    """A host on the LAN reaches S3 over HTTPS only: not S3's gRPC, the master, volume or filer."""
    for port in (INVENTORY.s3["port"] + storage.GRPC_OFFSET, *storage.INTERNAL):
        with pytest.raises(OSError):
            socket.create_connection((addr["mail"], port), timeout=5).close()


LOCAL_USER_PROBE = """
import sys, urllib.error, urllib.request
method, url = sys.argv[1], sys.argv[2]
request = urllib.request.Request(url, data=b"x" if method in ("PUT", "POST") else None, method=method)
try:
    print(urllib.request.urlopen(request, timeout=5).status)
except urllib.error.HTTPError as err:
    print(err.code)
"""


def test_making_buckets_gives_up_on_a_master_that_does_not_answer(mail):
    """weed shell waits for ever on a master without a leader; the deploy's bucket step must
    fail in bounded time instead (it once held a deploy until CI's time ran out)."""
    result = mail.run(f"WAIT=5 timeout 120 {storage.BUCKETS_TOOL} {storage.ETC}/buckets 127.0.0.1:1")
    assert result.rc == 1, (result.rc, result.stderr)  # 124 would be the outer timeout: a hang
    assert "SeaweedFS does not answer" in result.stderr


def test_a_local_user_cannot_go_around_the_s3_identities(mail):
    """uid nobody on the storage host, straight at SeaweedFS's own HTTP: the filer (list,
    write, delete in the backup bucket) and the volume server (a write) want a signed token."""
    tries = [("GET", f"http://127.0.0.1:8888/buckets/{BACKUP_BUCKET}/?limit=5"),
             ("PUT", f"http://127.0.0.1:8888/buckets/{BACKUP_BUCKET}/planted.txt"),
             ("DELETE", f"http://127.0.0.1:8888/buckets/{BACKUP_BUCKET}/config"),
             ("POST", "http://127.0.0.1:8080/1,0123456789")]
    for method, url in tries:
        status = mail.check_output(f"runuser -u nobody -- python3 -c '{LOCAL_USER_PROBE}' {method} {url}")
        assert status == "401", (method, url, status)


def test_the_restore_tool_takes_no_path_for_a_user_or_folder(mail):
    for args in ("restore ../../etc@x", "restore /etc@x", "restore bob@example.test --folder ../../../etc"):
        refused = mail.run(f"{TOOL} {args}")
        said = refused.stderr + refused.stdout
        assert refused.rc != 0 and ("no mail address" in said or "no folder name" in said), (args, said)
    assert not mail.file("/var/vmail-restore").exists


# --- the proof: restore ------------------------------------------------------------------

WHOLE, FOLDER_USER, FOLDER = "dave@tenant-b.test", "frank@legacy.test", "Archive"


def imap(server: str, name: str, ca_file: str, user: str) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL(server, 993, ssl_context=named_context(ca_file, name), timeout=30)
    client.login(user, PASSWORD)
    return client


def snapshot_of(client: imaplib.IMAP4_SSL, mailbox: str, tag: str) -> dict:
    """UIDVALIDITY and, per UID, flags and bytes of the messages with `tag` in `mailbox`."""
    client.select(f'"{mailbox}"', readonly=True)
    validity = client.response("UIDVALIDITY")[1][0]
    _, found = client.uid("SEARCH", None, "SUBJECT", f'"{tag}"')
    messages = {}
    for uid in found[0].split():
        _, data = client.uid("FETCH", uid, "(FLAGS BODY.PEEK[])")
        flags = sorted(re.search(rb"FLAGS \(([^)]*)\)", data[0][0]).group(1).split())
        messages[uid] = (flags, data[0][1])
    return {"uidvalidity": validity, "messages": messages}


def fill(client: imaplib.IMAP4_SSL, mailbox: str, tag: str, count: int) -> None:
    for i in range(count):
        raw = (f"From: carol@ext.test\r\nTo: someone\r\nSubject: {tag} {i}\r\nMessage-ID: <{tag}.{i}@lab.test>\r\n\r\n"
               + f"message {i} of {tag}\r\n" * (50 * (i + 1))).encode()
        flags = r"(\Seen \Flagged)" if i == 0 else r"(\Seen)"
        assert client.append(f'"{mailbox}"', flags, None, raw)[0] == "OK"


def backup_run(mail) -> dict:
    """Back up now; the figures of restic's summary."""
    out = mail.check_output(f"{TOOL} run")
    numbers = re.search(r"(\d+) new and (\d+) changed files, (\d+) bytes added", out)
    return {"new": int(numbers[1]), "changed": int(numbers[2]), "added": int(numbers[3])}


def mailstack_backup(*args: str) -> subprocess.CompletedProcess:
    """`mailstack backup ARGS` against the lab inventory, as an operator runs it."""
    return subprocess.run([sys.executable, "-m", "mailstack.cli", "backup", "-i", str(INVENTORY.file), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_a_deleted_mailbox_and_folder_come_back_byte_for_byte(mail, addr, fqdn, ca_file, tag):
    server, name = addr["mail"], fqdn["mail"]
    with imap(server, name, ca_file, WHOLE) as client:
        fill(client, "INBOX", tag, 3)
        before_whole = snapshot_of(client, "INBOX", tag)
    with imap(server, name, ca_file, FOLDER_USER) as client:
        client.create(f'"{FOLDER}"')
        fill(client, FOLDER, tag, 2)
        before_folder = snapshot_of(client, FOLDER, tag)
        inbox_before = client.select("INBOX", readonly=True)[1][0]
    assert len(before_whole["messages"]) == 3 and len(before_folder["messages"]) == 2

    first = backup_run(mail)
    whole_home, folder_home = "/var/vmail/tenant-b.test/dave", "/var/vmail/legacy.test/frank"
    mail.check_output(f"rm -rf {whole_home} {folder_home}/Maildir/.{FOLDER}")
    assert not mail.file(whole_home).exists

    for args in (("restore", WHOLE), ("restore", FOLDER_USER, "--folder", FOLDER)):
        done = mailstack_backup(*args)
        assert done.returncode == 0, done.stderr

    with imap(server, name, ca_file, WHOLE) as client:
        assert snapshot_of(client, "INBOX", tag) == before_whole  # same bytes, flags, UIDs, UIDVALIDITY
    with imap(server, name, ca_file, FOLDER_USER) as client:
        assert snapshot_of(client, FOLDER, tag) == before_folder
        assert client.select("INBOX", readonly=True)[1][0] == inbox_before  # the rest was not touched
    # the next backup only adds what changed since (Dovecot's rescan of the restored mailboxes)
    second = backup_run(mail)
    print(f"first backup: {first}; second: {second}")
    assert second["added"] < max(first["added"], 1) + 256 * 1024


def test_a_restore_beside_leaves_the_mailbox_alone(mail, addr, fqdn, ca_file):
    done = mailstack_backup("restore", WHOLE, "--beside")
    assert done.returncode == 0, done.stderr
    restored = re.search(r"to (/var/vmail-restore/\S+)", done.stdout)[1]
    try:
        assert mail.file(f"{restored}/Maildir").is_directory
        assert mail.file(restored).user == "vmail"
    finally:
        mail.check_output("rm -rf /var/vmail-restore")


def test_a_whole_host_restores_beside(mail):
    """A lost mailbox host: every user's mail comes back (beside here, to leave the lab alone)."""
    done = mailstack_backup("restore", "--all", "--beside")
    assert done.returncode == 0, done.stderr
    restored = re.search(r"to (/var/vmail-restore/\S+)", done.stdout)[1]
    try:
        homes = set(mail.check_output(f"cd {restored} && ls -d */*").split())  # restored: .../var/vmail
        assert {"tenant-b.test/dave", "legacy.test/frank", "example.test/alice"} <= homes
    finally:
        mail.check_output("rm -rf /var/vmail-restore")


def lock_client(ca_file: str):
    """The lock keeper's S3 client (its key lives on the storage host only)."""
    key_id, secret = store.lock_credentials(INVENTORY)
    return boto3.client("s3", endpoint_url=store.endpoint(INVENTORY), aws_access_key_id=key_id,
                        aws_secret_access_key=secret, region_name="us-east-1", verify=ca_file,
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


def refused(call, **arguments) -> str:
    """The error code S3 answers `call(**arguments)` with."""
    with pytest.raises(ClientError) as error:
        call(**arguments)
    return error.value.response["Error"]["Code"]


def test_an_intruder_on_a_mailbox_host_cannot_destroy_its_backups_and_a_rewind_brings_them_back(mail, ca_file):
    """Broken into `mail`, the attacker uses its backup key to wreck that host's own
    repository: overwrites its config, deletes every file, then tries to remove the old
    versions, shorten their lock or lift the bucket's. Every version stays; restic finds no
    repository until `mailstack backup rewind mail TIME` puts it back, snapshots and all."""
    keeper, intruder = lock_client(ca_file), host_backup_client(mail, ca_file)
    assert keeper.get_object_lock_configuration(Bucket=BACKUP_BUCKET)["ObjectLockConfiguration"] == {
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 2 * INVENTORY.backup["locked_days"]}}}
    backup_run(mail)
    snapshots = mail.check_output(f"{TOOL} list")
    time.sleep(1.5)
    intact = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    time.sleep(1.5)

    files = [o["Key"] for page in intruder.get_paginator("list_objects_v2").paginate(Bucket=BACKUP_BUCKET,
                                                                                       Prefix="mail/")
             for o in page.get("Contents", [])]
    assert "mail/config" in files and len(files) > 5
    intruder.put_object(Bucket=BACKUP_BUCKET, Key="mail/config", Body=b"pay to get your mail back")
    for key in files:
        intruder.delete_object(Bucket=BACKUP_BUCKET, Key=key)
    versions = keeper.list_object_versions(Bucket=BACKUP_BUCKET, Prefix="mail/config")["Versions"]
    assert len(versions) >= 2
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=5)
    for version in versions:
        one = {"Bucket": BACKUP_BUCKET, "Key": version["Key"], "VersionId": version["VersionId"]}
        assert refused(intruder.delete_object, **one) == "AccessDenied"
        assert refused(intruder.delete_object, **one, BypassGovernanceRetention=True) == "AccessDenied"
        assert refused(intruder.put_object_retention, **one,
                       Retention={"Mode": "COMPLIANCE", "RetainUntilDate": later}) == "AccessDenied"
        assert refused(keeper.delete_object, **one) == "AccessDenied"  # not even the lock keeper's key
    assert refused(intruder.put_object_lock_configuration, Bucket=BACKUP_BUCKET, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}}}) == \
        "AccessDenied"
    assert refused(intruder.put_object, Bucket=BACKUP_BUCKET, Key="mail/planted", Body=b"x",
                   ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=later) == "AccessDenied"
    assert mail.run(f"{TOOL} list").rc != 0, "the repository survived the deletion: the test wrecked nothing"

    for args in (("rewind", "mail", "yesterday"), ("rewind", "ext", intact)):
        wrong = mailstack_backup(*args)
        assert wrong.returncode != 0 and ("no ISO 8601 time" in wrong.stderr or "no mailbox host" in wrong.stderr)
    done = mailstack_backup("rewind", "mail", intact)
    assert done.returncode == 0, done.stderr
    assert "overwritten files restored" in done.stdout
    assert mail.check_output(f"{TOOL} list") == snapshots
    assert "no errors" in mail.check_output(f"{TOOL} check")
    again = mailstack_backup("rewind", "mail", intact)  # a second rewind changes nothing
    assert "0 deleted files back, 0 overwritten files restored, 0 newer files put aside" in again.stdout, again
    backup_run(mail)  # and the host backs up on top of it


def test_the_lock_is_renewed_daily_and_only_what_ran_out_is_removed(mail, ca_file, tag):
    """The store's daily job: a current file with less than `locked_days` of lock left gets
    `2 x locked_days` again; an old version whose lock ran out goes, with the delete marker
    that hid it; an old version still locked stays."""
    keeper, days = lock_client(ca_file), INVENTORY.backup["locked_days"]
    now = datetime.datetime.now(datetime.UTC)
    short, renew, kept = f"lock-test/{tag}-short", f"lock-test/{tag}-renew", f"lock-test/{tag}-kept"
    keeper.put_object(Bucket=BACKUP_BUCKET, Key=short, Body=b"short", ObjectLockMode="COMPLIANCE",
                      ObjectLockRetainUntilDate=now + datetime.timedelta(seconds=3))
    keeper.put_object(Bucket=BACKUP_BUCKET, Key=renew, Body=b"renew", ObjectLockMode="COMPLIANCE",
                      ObjectLockRetainUntilDate=now + datetime.timedelta(days=1))
    for body in (b"first", b"second"):
        keeper.put_object(Bucket=BACKUP_BUCKET, Key=kept, Body=body)  # the bucket's default lock
    keeper.delete_object(Bucket=BACKUP_BUCKET, Key=short)
    time.sleep(4)
    mail.check_output("systemctl start mailstack-backup-lock.service")

    def versions(key):
        found = keeper.list_object_versions(Bucket=BACKUP_BUCKET, Prefix=key)
        return [v for v in found.get("Versions", []) + found.get("DeleteMarkers", []) if v["Key"] == key]

    assert versions(short) == []
    until = keeper.get_object_retention(Bucket=BACKUP_BUCKET, Key=renew)["Retention"]["RetainUntilDate"]
    assert until > now + datetime.timedelta(days=2 * days - 1)
    assert len(versions(kept)) == 2


def test_a_failed_backup_is_a_failed_unit_and_an_alert(mail, ext):
    """... and it leaves the record of the last good backup alone (`mailstack status` ages it)."""
    backup_run(mail)
    record = f"stat -c '%Y %s' {BACKUP_RECORDS}/last-backup && cat {BACKUP_RECORDS}/last-backup"
    good = mail.check_output(record)
    since = time.time()
    mail.check_output("systemctl stop mailstack-seaweedfs")
    try:
        assert mail.run("systemctl start mailstack-backup.service").rc != 0
        assert mail.service("mailstack-backup.service").systemd_properties["ActiveState"] == "failed"
        assert mail.check_output(record) == good
        code, report = status()  # and `mailstack status` names it
        assert code == 1 and "last run failed: mailstack-backup.service" in finding(report, "mail", "units")["detail"]
        fired = alert(ext, "ScheduledJobFailed", "firing", since, timeout=120, name="mailstack-backup.service")
        assert fired is not None, "no alert on a failed backup"
    finally:
        mail.check_output("systemctl start mailstack-seaweedfs && systemctl reset-failed mailstack-backup.service")
    deadline = time.monotonic() + 60
    while mail.run(f"{TOOL} list").rc != 0:
        assert time.monotonic() < deadline, "SeaweedFS did not come back"
        time.sleep(2)


def test_the_list_shows_the_snapshots():
    done = mailstack_backup("list")
    assert done.returncode == 0 and "/var/vmail" in done.stdout, done
