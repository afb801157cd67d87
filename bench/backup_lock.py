"""The daily object-lock job on a bucket of many files, on the lab's storage host.

Puts FILES small files under a bench folder of the backup bucket, each locked for one day
only (so the job has to renew every one), then times `mailstack-backup-lock renew` (list
every version, read each current file's lock, renew it) and, once more, with nothing left to
renew. A restic repository holds about one file per 16 MB of mail, so 2,000 files stand for
some 30 GB. The bench files stay locked (60 days on the lab's defaults): run it on a lab you
throw away. Needs the running lab (scripts/lab-up) with backups on.
"""

import datetime
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "lab"))
import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402
from helpers import lab_resolver  # noqa: E402
from labenv import INVENTORY, SSH_CONFIG  # noqa: E402

from deploys import backup_lock  # noqa: E402
from mailstack import s3 as store  # noqa: E402
from mailstack.tls import trusted_file  # noqa: E402

FILES = 2000


def on_mail(command: str) -> str:
    return subprocess.run(["ssh", "-F", str(SSH_CONFIG), "mail", command], check=True, capture_output=True,
                          text=True).stdout


def timed(command: str) -> float:
    start = time.perf_counter()
    on_mail(command)
    return time.perf_counter() - start


def main() -> None:
    resolver, original = lab_resolver(INVENTORY.hosts_with("dns")[0].address), socket.getaddrinfo
    socket.getaddrinfo = lambda host, *a, **k: original(
        resolver.resolve(host, "A")[0].address if str(host).endswith(".test") else host, *a, **k)
    key_id, secret = store.lock_credentials(INVENTORY)
    s3 = boto3.client("s3", endpoint_url=store.endpoint(INVENTORY), aws_access_key_id=key_id,
                      aws_secret_access_key=secret, region_name="us-east-1", verify=str(trusted_file(INVENTORY)),
                      config=Config(s3={"addressing_style": "path"}, max_pool_connections=16))
    bucket, folder = INVENTORY.s3["buckets"]["backup"], f"bench-{uuid.uuid4().hex[:8]}"
    until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    start = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket=bucket, Key=f"{folder}/data/{i:05d}", Body=b"x" * 1024,
                                              ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until),
                      range(FILES)))
    print(f"put {FILES} locked files:        {time.perf_counter() - start:6.1f} s")
    for what in ("renew, every file renewed:", "renew, nothing to renew:"):
        seconds = timed(f"{backup_lock.TOOL} renew")
        print(f"{what:27} {seconds:6.1f} s  {FILES / seconds:6.0f} files/s")
    print(on_mail("journalctl -t mailstack-backup-lock -n 2 --no-pager -o cat").strip())

if __name__ == "__main__":
    main()
