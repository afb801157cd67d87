"""Hosts with role `storage`: SeaweedFS (master, volume, filer and S3 gateway in one
`weed server`), S3 over HTTPS only with the host's certificate on the host's address.
Telemetry is off. One bucket per purpose (backup, archive), each with its own generated key
pair allowed into that bucket only; the keys stay in the secrets directory.

One storage host keeps master, volume and filer on loopback. Three or more form one cluster
(SeaweedFS's own): the masters elect a leader among themselves (raft), every file is kept on
two hosts (replication 001), and each filer follows the others' metadata, so any host's S3
gateway serves every object while one host is down. Between the hosts gRPC is mutual TLS
(only the storage hosts' certificate names are admitted) and HTTP is HTTPS with client
certificates; writes to a volume need the master's signed token; the firewall opens the
internal ports to the other storage hosts only."""

from __future__ import annotations

import json
from pathlib import Path

from deploys.ops import directory, system_group, system_user
from mailstack import tls
from mailstack.component import Component, File, Opening, Service, render, schema_fragment, template_path
from mailstack.inventory import Inventory, Positions, Problem
from mailstack.plan import HostPlan
from mailstack.s3 import (
    PURPOSES,
    backup_credentials,
    backup_hosts,
    credentials,
    deployed,
    lock_credentials,
    locked,
    storage_hosts,
)
from mailstack.secrets import password
from mailstack.wheels import program

LOCK = Path(__file__).with_name("seaweedfs.lock")
UNIT = "mailstack-seaweedfs"
ETC = "/etc/seaweedfs"
WEED = "/usr/local/bin/weed"
BUCKETS_TOOL = "/usr/local/sbin/mailstack-s3-buckets"
OWNER = {"user": "seaweedfs", "group": "seaweedfs"}
INTERNAL = (9333, 19333, 8080, 18080, 8888, 18888)  # master, volume, filer (HTTP, gRPC): loopback only
GRPC_OFFSET = 10000  # SeaweedFS's S3 gateway also serves gRPC on its port + 10000
REPLICATION = "001"  # each file on two hosts (SeaweedFS: one more copy on another server)
















def identities(inv: Inventory) -> str:
    """SeaweedFS's S3 identities: each purpose's key (the operator's) may read, write and
    list its own bucket only; the keeper's key also sets the backup bucket's object lock
    (Admin there; no key can lift a COMPLIANCE lock). Each backup host's key may write, delete and list in its own
    folder of the backup bucket only (SeaweedFS: a trailing `*` is a prefix); it reads the
    whole bucket, which restic asks when it makes a repository, and which gives it other
    hosts' repositories encrypted with their own keys, which it does not have."""
    def identity(name, key, actions):
        return {"name": name, "credentials": [{"accessKey": key[0], "secretKey": key[1]}], "actions": actions}
    backup = inv.s3["buckets"]["backup"]
    return json.dumps({"identities": [
        *(identity(purpose, credentials(inv, purpose),
                   [f"{action}:{inv.s3['buckets'][purpose]}" for action in ("Read", "Write", "List", "Tagging")])
          for purpose in PURPOSES),
        *(identity(f"backup-{h.name}", backup_credentials(inv, h.name),
                   [f"Read:{backup}", *(f"{action}:{backup}/{h.name}/*" for action in ("Write", "List", "Tagging"))])
          for h in backup_hosts(inv)),
        *([identity("backup-lock", lock_credentials(inv),
                    [f"{action}:{backup}" for action in ("Read", "List", "Admin")])] if locked(inv) else [])]},
        indent=1)




def cluster(plan: HostPlan) -> bool:
    return len(storage_hosts(plan.inv)) > 1


def security(plan: HostPlan) -> str:
    """security.toml: the keys that sign every read and write on the filer's and the volume
    servers' HTTP (a local user has no way around the S3 identities); in a cluster, mutual
    TLS for gRPC and HTTPS between the storage hosts too."""
    inv = plan.inv
    keys = {"volume_write_key": password(inv, "seaweedfs-jwt"), "volume_read_key": password(inv, "seaweedfs-jwt-read"),
            "filer_write_key": password(inv, "seaweedfs-filer-jwt"),
            "filer_read_key": password(inv, "seaweedfs-filer-jwt-read")}
    text = render("storage/security.toml.j2", keys, f"{ETC}/security.toml")
    if cluster(plan):
        _, cert, key = tls.own_copy(plan, UNIT, f"{ETC}/tls", **OWNER)
        text += "\n" + render("storage/cluster-tls.toml.j2", {"cert": cert, "key": key, "ca": tls.TRUST,
                                                             "names": ",".join(h.fqdn for h in storage_hosts(inv))},
                              f"{ETC}/security.toml")
    return text


def configure(plan: HostPlan) -> list[Service]:
    inv, settings = plan.inv, plan.inv.s3
    together = cluster(plan)
    certificate, cert, key = tls.own_copy(plan, UNIT, f"{ETC}/tls", **OWNER)
    context = {"cert": cert, "key": key, "weed": WEED,
               "data_dir": settings["data_dir"], "address": plan.host.address,
               "port": settings["port"], "etc": ETC,
               # one host: the internals on loopback; a cluster: on the host's address, by name (TLS)
               "ip": plan.host.fqdn if together else "127.0.0.1",
               "bind": plan.host.address if together else "127.0.0.1",
               # one host: its master stops with its volume, so telling it first (10 s) serves no one
               "cluster_flags": f"-master.peers={','.join(f'{h.fqdn}:9333' for h in storage_hosts(inv))} "
                                f"-master.defaultReplication={REPLICATION}"
                                if together else "-volume.preStopSeconds=0"}
    return [
        Service(UNIT, (
            File.copy(WEED, program(LOCK, "weed"), mode="0755"),
            File.template("/etc/systemd/system/mailstack-seaweedfs.service", "storage/mailstack-seaweedfs.service.j2",
                          context),
            File.text(f"{ETC}/s3.json", identities(inv), mode="0640", group="seaweedfs", secret=True),
            File.text(f"{ETC}/security.toml", security(plan), mode="0640", group="seaweedfs", secret=True),
            *certificate,
        )),
        # the buckets belong to the whole cluster: its first host makes them
        *([Service(None, (
            File.copy(BUCKETS_TOOL, template_path("storage/mailstack-s3-buckets.sh"), mode="0755"),
            File.text(f"{ETC}/buckets", "\n".join(
                settings["buckets"][p] + (" locked" if p == "backup" and locked(inv) else "") for p in PURPOSES)),
        ), on_change=f"{BUCKETS_TOOL} {ETC}/buckets {context['ip']}:9333")]
          if plan.host == storage_hosts(inv)[0] else []),
    ]


def install(plan: HostPlan) -> None:
    system_group("seaweedfs")
    system_user("seaweedfs", home=plan.inv.s3["data_dir"], group="seaweedfs")
    directory(plan.inv.s3["data_dir"], mode="0750", **OWNER)
    directory(f"{ETC}/tls", mode="0750", **OWNER)


def s3_clients(plan: HostPlan) -> list[tuple[str, ...]]:
    """Who may reach S3, one tuple per address family: the other hosts that back up here
    and the inventory's `s3.clients`."""
    sources = [*plan.peers(backup_hosts(plan.inv)), *plan.inv.s3["clients"]]
    return [family for family in ([s for s in sources if ":" not in s], [s for s in sources if ":" in s]) if family]


def openings(plan: HostPlan) -> list[Opening]:
    """S3 for its clients; in a cluster, the internals (TLS) for the other storage hosts."""
    peers = plan.peers(storage_hosts(plan.inv)) if cluster(plan) else ()
    return [*(Opening(plan.inv.s3["port"], "tcp", "storage: S3 object storage, HTTPS", tuple(family), plan.host.address)
              for family in s3_clients(plan)),
            *(Opening(port, "tcp", "storage: SeaweedFS cluster (mutual TLS)", peers, plan.host.address)
              for port in INTERNAL if peers)]


def local(plan: HostPlan) -> set[tuple[str, int]]:
    """What weed listens on besides S3 and the cluster ports: its internals on loopback (all
    of them on one host; a cluster's master and filer there too), S3 on loopback too, S3's
    gRPC (closed by the firewall), and S3 itself where it has no client elsewhere."""
    s3 = plan.inv.s3["port"]
    inside = (9333, 19333, 8888, 18888) if cluster(plan) else INTERNAL
    closed = {s3 + GRPC_OFFSET} | (set() if s3_clients(plan) else {s3})
    return {("127.0.0.1", p) for p in (*inside, s3, s3 + GRPC_OFFSET)} | {(plan.host.address, p) for p in closed}


def rules(data: dict, pos: Positions) -> list[Problem]:
    """One storage host or an odd number of them (one cluster), or an external S3 with its
    endpoint and keys; and somewhere to back up to."""
    settings = data["s3"]
    stores = [i for i, h in enumerate(data["hosts"]) if "storage" in h["roles"]]
    if settings["provider"] == "external":
        problems = [pos.problem(("hosts", i, "roles"), "role 'storage' deploys SeaweedFS, but s3.provider is "
                                "'external': drop the role or the external provider") for i in stores]
        if "endpoint" not in settings:
            problems.append(pos.problem(("s3", "provider"), "an external S3 needs s3.endpoint"))
        elif not settings["endpoint"].startswith("https://"):
            problems.append(pos.problem(("s3", "endpoint"), "mail crosses the network: use https://"))
        wanted = ["backup"] if data["backup"]["enabled"] else []
        for purpose in wanted:
            if purpose not in settings["key_files"]:
                problems.append(pos.problem(("s3", "provider"), f"an external S3 needs s3.key_files.{purpose} "
                                            "(the backups use it)"))
        if data["backup"]["enabled"] and data["backup"]["locked_days"]:
            problems.append(pos.problem(("backup", "locked_days"), "mailstack locks the backups on the store it "
                                        "deploys only: with an external S3, lock its bucket on that store and set "
                                        "backup.locked_days: 0"))
        if settings["clients"]:
            problems.append(pos.problem(("s3", "clients"), "has no effect with an external S3 (its own firewall "
                                        "decides who reaches it): remove it"))
        for purpose, path in settings["key_files"].items():
            file = Path(path).expanduser()
            if not file.is_file() or len(file.read_text().split()) < 2:
                problems.append(pos.problem(("s3", "key_files", purpose), f"{path} is not a file on this machine "
                                            "with the access key id and the secret key on two lines"))
        return problems
    from mailstack.inventory import section_defaults  # here: mailstack.inventory loads the components

    problems = [pos.problem(("hosts", stores[-1], "roles"), f"{len(stores)} storage hosts: a SeaweedFS cluster "
                            "needs an odd number (its masters must keep a majority when one is down): "
                            "use 1, 3 or 5")] if stores and len(stores) % 2 == 0 else []
    if not stores and not data["backup"]["enabled"] and settings != section_defaults("s3"):
        problems.append(pos.problem(("s3",), "has no effect: no host has the role storage (and the "
                                    "backups are off); remove it or give a host that role"))
    if data["backup"]["enabled"] and not stores:
        problems.append(pos.problem(("backup", "enabled"), "backups go to the S3 store on the host with role "
                                    "'storage': give one host that role (or use an external S3)"))
    return problems


COMPONENT = Component(
    name="storage",
    schema=schema_fragment(__file__),
    roles=frozenset({"storage"}),
    units=(UNIT,),
    openings=openings,
    local=local,
    rules=(rules,),  # its section, s3, also serves an external store: the rules check it
    enabled=deployed,
    install=install,
    adds={"tls.readers": tls.readers(UNIT)},
    configure=configure,
)
