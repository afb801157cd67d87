"""The host with role `storage`: SeaweedFS (master, volume, filer and S3 gateway in one
`weed server`), S3 over HTTPS only with the host's certificate on the host's address; the
internal ports stay on loopback. Telemetry is off. One bucket per purpose (backup,
archive), each with its own generated key pair allowed into that bucket only; the keys
stay in the secrets directory."""

from __future__ import annotations

import json
from pathlib import Path

from pyinfra.operations import files, server

from deploys import tls
from mailstack.component import TEMPLATES, Component, File, Opening, Service
from mailstack.inventory import Inventory, Positions, Problem
from mailstack.plan import HostPlan
from mailstack.secrets import password
from mailstack.wheels import program

LOCK = Path(__file__).with_name("seaweedfs.lock")
ETC = "/etc/seaweedfs"
WEED = "/usr/local/bin/weed"
BUCKETS_TOOL = "/usr/local/sbin/mailstack-s3-buckets"
OWNER = {"user": "seaweedfs", "group": "seaweedfs"}
PURPOSES = ("backup", "archive")
INTERNAL = (9333, 19333, 8080, 18080, 8888, 18888)  # master, volume, filer (HTTP, gRPC): loopback only
GRPC_OFFSET = 10000  # SeaweedFS's S3 gateway also serves gRPC on its port + 10000


def storage_host(inv: Inventory):
    return inv.hosts_with("storage")[0]


def endpoint(inv: Inventory) -> str:
    return f"https://{storage_host(inv).fqdn}:{inv.s3['port']}"


def credentials(inv: Inventory, purpose: str) -> tuple[str, str]:
    """(access key id, secret key) of one purpose, generated once."""
    return f"mailstack-{purpose}-{password(inv, f's3-{purpose}-id')[:12].lower()}", password(inv, f"s3-{purpose}")


def identities(inv: Inventory) -> str:
    """SeaweedFS's S3 identities: each purpose may read, write and list its own bucket only."""
    entries = []
    for purpose in PURPOSES:
        bucket = inv.s3["buckets"][purpose]
        key_id, secret = credentials(inv, purpose)
        entries.append({"name": purpose, "credentials": [{"accessKey": key_id, "secretKey": secret}],
                        "actions": [f"{action}:{bucket}" for action in ("Read", "Write", "List", "Tagging")]})
    return json.dumps({"identities": entries}, indent=1)


def configure(plan: HostPlan) -> list[Service]:
    inv, settings = plan.inv, plan.inv.s3
    cert, key, _ = tls.local_files(plan)
    context = {"weed": WEED, "data_dir": settings["data_dir"], "address": plan.host.address,
               "port": settings["port"], "etc": ETC}
    return [
        Service("mailstack-seaweedfs", (
            File.copy(WEED, program(LOCK, "weed"), mode="0755"),
            File.template("/etc/systemd/system/mailstack-seaweedfs.service", "storage/mailstack-seaweedfs.service.j2",
                          context),
            File.text(f"{ETC}/s3.json", identities(inv), mode="0640", group="seaweedfs", secret=True),
            File.copy(f"{ETC}/tls/cert.pem", cert, **OWNER),
            File.copy(f"{ETC}/tls/key.pem", key, mode="0600", secret=True, **OWNER),
        )),
        Service(None, (
            File.copy(BUCKETS_TOOL, TEMPLATES / "storage" / "mailstack-s3-buckets.sh", mode="0755"),
            File.text(f"{ETC}/buckets", "\n".join(settings["buckets"][p] for p in PURPOSES)),
        ), on_change=f"{BUCKETS_TOOL} {ETC}/buckets"),
    ]


def install(plan: HostPlan) -> None:
    server.group(name="seaweedfs group", group="seaweedfs", system=True)
    server.user(name="seaweedfs user", user="seaweedfs", group="seaweedfs", system=True,
                home=plan.inv.s3["data_dir"], shell="/usr/sbin/nologin", ensure_home=False)
    files.directory(name=plan.inv.s3["data_dir"], path=plan.inv.s3["data_dir"], mode="0750", **OWNER)
    files.directory(name=f"{ETC}/tls", path=f"{ETC}/tls", mode="0750", **OWNER)


def openings(plan: HostPlan) -> list[Opening]:
    return [Opening(plan.inv.s3["port"], "tcp", "storage: S3 object storage, HTTPS", (), plan.host.address)]


def local(plan: HostPlan) -> set[tuple[str, int]]:
    """What weed listens on besides S3: its internals on loopback, S3's gRPC (closed by the firewall)."""
    s3 = plan.inv.s3["port"]
    return {("127.0.0.1", p) for p in (*INTERNAL, s3, s3 + GRPC_OFFSET)} | {(plan.host.address, s3 + GRPC_OFFSET)}


def rules(data: dict, pos: Positions) -> list[Problem]:
    """One storage host (a replicated cluster of several is not built yet), and one to back up to."""
    stores = [i for i, h in enumerate(data["hosts"]) if "storage" in h["roles"]]
    problems = [pos.problem(("hosts", i, "roles"), "a second storage host would form a replicated "
                            "SeaweedFS cluster: not implemented yet (one storage host for now)") for i in stores[1:]]
    if data["backup"]["enabled"] and not stores:
        problems.append(pos.problem(("backup", "enabled"), "backups go to the S3 store on the host with role "
                                    "'storage': give one host that role"))
    return problems


COMPONENT = Component(
    name="storage",
    roles=frozenset({"storage"}),
    units=("mailstack-seaweedfs",),
    openings=openings,
    local=local,
    section="s3",
    rules=(rules,),
    install=install,
    configure=configure,
)
