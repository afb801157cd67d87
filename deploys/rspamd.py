"""Hosts with `filter`: rspamd as Postfix milter, with Redis; DKIM/ARC signing,
SPF/DKIM/DMARC/ARC evaluation, per-domain spam policy and allow/deny maps, and the
rule that binds a logged-in user's header From/Sender to the addresses granted to it."""

from __future__ import annotations

import json

from pyinfra.api import deploy as pyinfra_deploy
from pyinfra.operations import files

from deploys.common import ConfigFile, configure_service, guard, install, inventory, put_secret, table, this_host
from mailstack.secrets import dkim_key, password

PACKAGES = ("rspamd", "redis-server")
MILTER_PORT = 11332
ETC = "/etc/rspamd"
DKIM_DIR = "/var/lib/rspamd/dkim"
MAPS_DIR = "/etc/rspamd/maps.d"
# local.d merges with Debian's defaults; override.d replaces them (options.inc must:
# merged, Debian's local_addrs would count every private network as "local").
CONFIG = ("override.d/options.inc", "local.d/worker-proxy.inc", "local.d/worker-normal.inc",
          "local.d/actions.conf", "local.d/dkim_signing.conf", "local.d/arc.conf",
          "local.d/milter_headers.conf", "local.d/greylist.conf", "local.d/multimap.conf",
          "local.d/settings.conf")
# files with a password: never shown by --diff, readable by rspamd only
SECRET_CONFIG = ("override.d/worker-controller.inc", "local.d/redis.conf")
REDIS_INCLUDE = "/etc/redis/mailstack.conf"
# MTA-Tag (Postfix's milter daemon name) of submitted mail on its way to the S/MIME
# gateway: checked here, DKIM-signed only when it comes back
SUBMISSION_VIA_GATEWAY = "SUBMISSION-VIA-SMIME"


def milter_address(host) -> str | None:
    """Where Postfix on `host` reaches rspamd: loopback when it filters itself,
    else the first filter host; none for an `outside` host or without filters."""
    filters = inventory().hosts_with("filter")
    if host.outside or not filters:
        return None
    return "127.0.0.1" if "filter" in host.roles else filters[0].address


def _lists(kind: str) -> dict[str, list[str]]:
    """allow/deny data of every domain, split by what rspamd matches on."""
    lists = [getattr(d, kind) for d in inventory().domains]
    entries = [e for entry in lists for e in entry["senders"]]
    ips = sorted({ip for entry in lists for ip in entry["ips"]})
    return {
        "addresses": sorted({e.lower() for e in entries if not e.startswith("@")}),
        "domains": sorted({e[1:].lower() for e in entries if e.startswith("@")}),
        "ips": ips,
    }


def _policies() -> list[dict]:
    """Per-domain actions for domains that do not reject spam at SMTP time:
    quarantine files it into Junk; a confirmed discard drops it (rspamd logs each)."""
    reject_score = inventory().rspamd["reject_score"]
    actions = {"quarantine": [("reject", "null")],
               "discard": [("reject", "null"), ("discard", reject_score)]}
    return [{"id": "domain_" + domain.name.replace(".", "_").replace("-", "_"),
             "domain": domain.name, "actions": actions[domain.inbound["spam"]]}
            for domain in inventory().domains if domain.inbound["spam"] != "reject"]


@pyinfra_deploy("mailstack rspamd")
def deploy() -> None:
    install("rspamd", PACKAGES)
    inv, me = inventory(), this_host()
    settings = inv.rspamd
    signing = []
    for domain in inv.own_domains():
        if domain.dkim["enabled"]:
            key = dkim_key(inv, domain.name, domain.dkim["selector"], domain.dkim["bits"])
            dest = f"{DKIM_DIR}/{domain.name}.{domain.dkim['selector']}.key"
            signing.append({"name": domain.name, "selector": domain.dkim["selector"],
                            "path": dest, "source": str(key)})
    files.directory(name=DKIM_DIR, path=DKIM_DIR, user="root", group="_rspamd", mode="0750")
    files.directory(name=MAPS_DIR, path=MAPS_DIR, mode="0755")
    keys = [put_secret(f"DKIM key {s['name']}", s["path"], src=s["source"], group="_rspamd", mode="0640")
            for s in signing]

    items = [ConfigFile(f"{ETC}/{name}", template=f"rspamd/{name.split('/')[1]}.j2") for name in CONFIG]
    items += [ConfigFile(f"{ETC}/{name}", template=f"rspamd/{name.split('/')[1]}.j2", secret=True,
                         group="_rspamd", mode="0640") for name in SECRET_CONFIG]
    items.append(ConfigFile(f"{ETC}/rspamd.local.lua", template="rspamd/rspamd.local.lua.j2"))
    for kind in ("allow", "deny"):
        for what, values in _lists(kind).items():
            items.append(ConfigFile(f"{MAPS_DIR}/{kind}_{what}.map", content="\n".join(guard(values))))
    items.append(ConfigFile(f"{MAPS_DIR}/senders.map",
                            content=table((address, ",".join(logins)) for address, logins in inv.senders().items())))
    context = {
        "proxy_bind": "127.0.0.1" if all(milter_address(h) in (None, "127.0.0.1")
                                          for h in inv.hosts_with("mx")) else me.address,
        "milter_port": MILTER_PORT,
        "dns_timeout": settings["dns_timeout"],
        "reject_score": settings["reject_score"],
        "add_header_score": settings["add_header_score"],
        "arc_enabled": "true" if settings["arc"] else "false",
        "signing": signing,
        "maps_dir": MAPS_DIR,
        "policies": _policies(),
        # outbound mail comes back from the S/MIME gateway unauthenticated: sign it there
        "sign_networks": json.dumps([h.address for h in inv.hosts_with("smime") if not h.outside]),
        "submission_via_gateway": SUBMISSION_VIA_GATEWAY,
        "redis_password": password(inv, "redis"),
        "controller_password": password(inv, "rspamd-controller"),
    }
    include = files.line(name="Redis reads mailstack's settings", path="/etc/redis/redis.conf",
                         line=f"include {REDIS_INCLUDE}")
    configure_service("redis-server", [
        ConfigFile(REDIS_INCLUDE, template="rspamd/redis-server.conf.j2", secret=True, group="redis", mode="0640"),
    ], context, extra_changes=(include,))
    stale = files.file(name="No controller settings left in local.d (override.d has them)",
                       path=f"{ETC}/local.d/worker-controller.inc", present=False)
    configure_service("rspamd", items, context, check="rspamadm configtest -q",
                      extra_changes=(*keys, stale))
