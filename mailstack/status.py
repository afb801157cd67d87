"""`mailstack status`: the running platform against its inventory, read-only.

Each platform host answers one SSH call (PROBE: it only reads) with its units, listening
ports, certificate, accounts on hold and filesystems; a Postfix host with its queue, a
mailbox host with its mailboxes' quotas and its last good backup and check, a monitoring
host with the alerts that fire. The DNS answers the records `mailstack dns`
prints. Every check is held against the host's plan, the same source the deploy and the
firewall use, and ends as a Finding: ok, or a problem named."""

from __future__ import annotations

import datetime
import json
import re
import shlex
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import dns.exception
import dns.resolver

from mailstack.conventions import ACCOUNT_TOOL, BACKUP_RECORDS, PROMETHEUS_PORT, VOLATILE_FILESYSTEMS
from mailstack.dns import Record, zones
from mailstack.inventory import Inventory
from mailstack.plan import HostPlan
from mailstack.remote import ssh_argv
from mailstack.tls import CERT, certificate_files

# Sections a host prints, each after a line "== NAME". Nothing here changes anything.
PROBE = r"""
units=$1 prometheus=$2 parts=" $3 " certificates=$4
has() { case "$parts" in *" $1 "*) true;; *) false;; esac; }
echo "== units"; for unit in $units; do echo "$unit" $(systemctl show --property=ActiveState,Result -- "$unit"); done
echo "== failed"; systemctl --failed --no-legend --plain | awk '{print $1}'
echo "== listening"; ss -Htln | awk '{print $4}'
echo "== certificate"; for path in $certificates; do
  echo "$path $(openssl x509 -noout -enddate -in "$path" 2>/dev/null | cut -d= -f2)"; done
has queue && echo "== queue" && postqueue -j | wc -l
has quota && echo "== quota" && doveadm -f tab quota get -A
has backup && echo "== backup" && for record in last-backup last-check; do
  echo "$record $(stat -c %Y {records}/$record 2>/dev/null || echo never) $(cat {records}/$record 2>/dev/null)"; done
echo "== held"; [ -x {tool} ] && {tool} metrics
echo "== disk"; df -B1 --output=size,avail,target {skip} | tail -n +2
echo "== alerts"; [ -n "$prometheus" ] && timeout 20 promtool query instant -o json \
  "http://127.0.0.1:$prometheus" 'ALERTS{alertstate="firing"}' && echo "[end]"
true
""".replace("{records}", BACKUP_RECORDS).replace("{tool}", ACCOUNT_TOOL).replace(
    "{skip}", " ".join(f"-x {kind}" for kind in VOLATILE_FILESYSTEMS))
TIMEOUT = 60  # seconds for one host's answer
ALERT_SUBJECTS = ("name", "instance", "account")  # labels that say what an alert is about


@dataclass(frozen=True)
class Finding:
    host: str  # a host's name, or "dns"
    check: str
    ok: bool
    detail: str


def sections(output: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    current = None
    for line in output.splitlines():
        if line.startswith("== "):
            current = found.setdefault(line[3:], [])
        elif current is not None and line.strip():
            current.append(line.strip())
    return found


def expected_units(plan: HostPlan) -> list[str]:
    """The units the host's components keep running; a timer's service too (its last result)."""
    units = [u if "." in u else f"{u}.service" for c in plan.components for u in c.units]
    return list(dict.fromkeys(units + [u.removesuffix(".timer") + ".service" for u in units if u.endswith(".timer")]))


def unit_findings(name: str, plan: HostPlan, found: dict[str, list[str]]) -> list[Finding]:
    states = {unit: dict(pair.split("=", 1) for pair in pairs)  # "UNIT ActiveState=active Result=success"
              for unit, *pairs in (line.split() for line in found.get("units", []))}
    expected = expected_units(plan)
    timers = {u.removesuffix(".timer") + ".service" for u in expected if u.endswith(".timer")}
    down = [u for u in expected if u not in timers and states.get(u, {}).get("ActiveState") != "active"]
    failed_jobs = [u for u in timers if states.get(u, {}).get("Result", "success") != "success"]
    failed = [u for u in found.get("failed", []) if u not in down and u not in failed_jobs]
    problems = ([f"not running: {', '.join(down)}"] if down else []) + \
               ([f"last run failed: {', '.join(sorted(failed_jobs))}"] if failed_jobs else []) + \
               ([f"failed: {', '.join(failed)}"] if failed else [])
    detail = "; ".join(problems) or f"{len(expected) - len(timers)} running, {len(timers)} scheduled jobs succeeded"
    return [Finding(name, "units", not problems, detail)]


def port_findings(name: str, plan: HostPlan, found: dict[str, list[str]]) -> list[Finding]:
    listening = set()
    for local in found.get("listening", []):
        address, _, port = local.rpartition(":")
        address = address.strip("[]").split("%")[0]
        listening.add((None if address in ("0.0.0.0", "::", "*") else address, int(port)))
    expected = set(plan.listeners)
    missing, extra = expected - listening, listening - expected

    def shown(ports):
        return ", ".join(f"{a or '*'}:{p}" for a, p in sorted(ports, key=lambda x: (x[1], x[0] or "")))

    problems = ([f"not listening: {shown(missing)}"] if missing else []) + \
               ([f"not planned: {shown(extra)}"] if extra else [])
    return [Finding(name, "ports", not problems, "; ".join(problems) or f"{len(expected)} as planned")]


def certificate_findings(name: str, inv: Inventory, found: dict[str, list[str]],
                         now: datetime.datetime) -> list[Finding]:
    """Days left of the host's own certificate ("certificate") and of its others (served by
    name) and those its daemons sign with (`monitoring.certificates`): "certificates", against
    `monitoring.certificate_days`."""
    least, days = inv.monitoring["certificate_days"], {}
    for line in found.get("certificate", []):
        path, _, end = line.partition(" ")
        days[path] = (datetime.datetime.strptime(end, "%b %d %H:%M:%S %Y %Z").replace(tzinfo=datetime.UTC)
                      - now).days if end else None
    own = days.pop(CERT, None)
    if own is None:
        findings = [Finding(name, "certificate", False, f"no certificate at {CERT}")]
    else:
        warning = "" if own >= least else f" (fewer than monitoring.certificate_days, {least})"
        findings = [Finding(name, "certificate", own >= least, f"{own} days left{warning}")]
    if days:
        shown = [f"{path}: " + ("none" if left is None else f"{left} days left")
                 for path, left in sorted(days.items(), key=lambda item: (item[1] is not None, item[1] or 0))]
        short = [path for path, left in days.items() if left is None or left < least]
        findings.append(Finding(name, "certificates", not short, "; ".join(shown) + (
            f" (fewer than monitoring.certificate_days, {least})" if short else "")))
    return findings


def queue_findings(name: str, inv: Inventory, found: dict[str, list[str]]) -> list[Finding]:
    """The mail queue's size, on a host that runs Postfix (only such a host prints one)."""
    if not found.get("queue"):
        return []
    size, most = int(found["queue"][0]), inv.monitoring["queue_size"]
    return [Finding(name, "queue", size <= most, f"{size} messages" + ("" if size <= most else f" (more than {most})"))]


def disk_findings(name: str, inv: Inventory, found: dict[str, list[str]]) -> list[Finding]:
    """Each filesystem's use, 1 - available/size as the disk alert reckons it."""
    most, used = inv.monitoring["disk_percent"], {}
    for line in found.get("disk", []):
        size, avail, target = line.split(maxsplit=2)
        if int(size):
            used[target] = round(100 * (1 - int(avail) / int(size)))
    full = [f"{target} {percent}%" for target, percent in sorted(used.items()) if percent > most]
    shown = ", ".join(f"{target} {percent}%" for target, percent in sorted(used.items()))
    return [Finding(name, "disk", not full, f"fuller than {most}%: {', '.join(full)}" if full else shown or "none")]


def quota_findings(name: str, inv: Inventory, found: dict[str, list[str]]) -> list[Finding]:
    """Each mailbox's use of its quota, storage and message count as Dovecot reckons it
    (`doveadm quota get -A`: user, quota, type, value, limit, percent; no limit: "-")."""
    if "quota" not in found:
        return []
    if not found["quota"]:
        return [Finding(name, "quota", False, "Dovecot did not answer")]
    most, full, users = inv.monitoring["quota_percent"], [], set()
    for row in found["quota"][1:]:
        user, _, kind, _, limit, percent = row.split("\t")
        users.add(user)
        if limit != "-" and int(percent) > most:
            full.append(f"{user} {percent}%" + (" of its messages" if kind == "MESSAGE" else ""))
    detail = f"fuller than {most}% of the quota: {', '.join(sorted(full))}" if full else \
        f"{len(users)} mailboxes, none fuller than {most}% of the quota"
    return [Finding(name, "quota", not full, detail)]


def backup_findings(name: str, inv: Inventory, found: dict[str, list[str]], now: datetime.datetime) -> list[Finding]:
    """The last good backup against `backup.max_age_hours`, and the repository's last check:
    what the backup tool recorded when each succeeded ("RECORD TIME|never [TEXT]")."""
    if "backup" not in found:
        return []
    records = {line.split()[0]: line.split()[1:] for line in found["backup"]}
    most, problems = inv.backup["max_age_hours"], []

    def hours(record: str) -> float | None:
        when = records.get(record, ["never"])[0]
        return None if when == "never" else (now.timestamp() - int(when)) / 3600

    backup, check = hours("last-backup"), hours("last-check")
    if backup is None:
        problems.append("no good backup yet")
        shown = ""
    else:
        shown = f"last good backup {backup:.0f} h ago (snapshot {records['last-backup'][1]})"
        if backup > most:
            problems.append(shown + f", more than backup.max_age_hours ({most})")
    checked = "repository not checked yet" if check is None else f"repository checked {check:.0f} h ago"
    return [Finding(name, "backup", not problems, "; ".join(problems or [shown]) + f"; {checked}")]


def held_findings(name: str, found: dict[str, list[str]]) -> list[Finding]:
    """Accounts the sending limits put on hold (the account tool's metrics, where it runs)."""
    if not found.get("held"):
        return []
    held = sorted(re.findall(r'^mailstack_account_on_hold\{login="([^"]*)"\} 1$', "\n".join(found["held"]), re.M))
    return [Finding(name, "held", not held, f"on hold: {', '.join(held)}" if held else "no account on hold")]


def alert_findings(name: str, found: dict[str, list[str]]) -> list[Finding]:
    lines = found.get("alerts", [])
    if not lines or lines[-1] != "[end]":
        return [Finding(name, "alerts", False, "Prometheus did not answer")]
    firing = sorted({alert["metric"]["alertname"] + "".join(f"({alert['metric'][k]})" for k in ALERT_SUBJECTS
                                                            if k in alert["metric"])
                     for alert in json.loads("".join(lines[:-1]))})
    return [Finding(name, "alerts", not firing, f"firing: {', '.join(firing)}" if firing else "none firing")]


def host_findings(inv: Inventory, plan: HostPlan, now: datetime.datetime) -> list[Finding]:
    monitoring = "monitoring" in plan.roles
    components = {c.name for c in plan.components}
    parts = [part for part, wanted in (("queue", "postfix" in components),
                                       ("quota", "mailbox" in plan.roles and "dovecot" in components),
                                       ("backup", "backup" in components)) if wanted]
    command = ["bash", "-c", PROBE, "probe", " ".join(expected_units(plan)),
               str(PROMETHEUS_PORT) if monitoring else "", " ".join(parts),
               " ".join([*(path for path, _ in certificate_files(plan)), *plan.contributed("monitoring.certificates")])]
    try:
        done = subprocess.run(ssh_argv(plan.host, command), capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return [Finding(plan.name, "reachable", False, f"no answer over SSH within {TIMEOUT} s")]
    if done.returncode != 0:
        return [Finding(plan.name, "reachable", False,
                        f"ssh failed ({done.returncode}): {done.stderr.strip()[-200:] or shlex.join(command[:2])}")]
    found = sections(done.stdout)
    findings = unit_findings(plan.name, plan, found) + port_findings(plan.name, plan, found) + \
        certificate_findings(plan.name, inv, found, now) + queue_findings(plan.name, inv, found) + \
        quota_findings(plan.name, inv, found) + backup_findings(plan.name, inv, found, now) + \
        held_findings(plan.name, found) + disk_findings(plan.name, inv, found)
    return findings + (alert_findings(plan.name, found) if monitoring else [])


def served(resolver: dns.resolver.Resolver, name: str, rdtype: str) -> set[str]:
    try:
        answer = resolver.resolve(name, rdtype, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return set()
    return {b"".join(r.strings).decode() if rdtype == "TXT" else r.to_text().lower() for r in answer}


def dns_findings(inv: Inventory, added: tuple[Record, ...], nameserver: str | None) -> list[Finding]:
    """Each name and type of `mailstack dns` against what the DNS answers: the lab's own
    nameserver, `nameserver`, or this machine's resolver."""
    resolver = dns.resolver.Resolver(configure=nameserver is None)
    if nameserver:
        resolver.nameservers = [nameserver]
    resolver.lifetime = 10
    wanted: dict[tuple[str, str], set[str]] = {}
    for records in zones(inv, added).values():
        for r in records:
            value = r.value if r.type == "TXT" else " ".join(r.value.lower().split())
            wanted.setdefault((r.name, r.type), set()).add(value)
    problems = []
    for (name, rdtype), values in sorted(wanted.items()):
        try:
            got = served(resolver, name, rdtype)
        except dns.exception.DNSException as err:
            problems.append(f"{name} {rdtype}: {type(err).__name__}")
            continue
        if got != values:
            problems.append(f"{name} {rdtype}: " + ("missing" if not got else "differs"))
    detail = "; ".join(problems) or f"{len(wanted)} names and types as `mailstack dns` prints them"
    return [Finding("dns", "records", not problems, detail)]


def audit(inv: Inventory, plans: dict[str, HostPlan], nameserver: str | None = None) -> list[Finding]:
    """Every finding on the platform's hosts (the outside hosts of a lab are not the platform)
    and its DNS; nothing is changed anywhere."""
    now = datetime.datetime.now(datetime.UTC)
    platform = [plans[h.name] for h in inv.hosts if not h.outside]
    with ThreadPoolExecutor(8) as pool:
        per_host = list(pool.map(lambda plan: host_findings(inv, plan, now), platform))
    if nameserver is None and inv.lab_nameservers():
        nameserver = inv.lab_nameservers()[0]
    added = next(iter(plans.values())).contributed("dns.records")
    return [f for found in per_host for f in found] + dns_findings(inv, added, nameserver)


def table(findings: list[Finding]) -> str:
    lines = [f"{'HOST':<10} {'CHECK':<12} {'STATE':<6} DETAIL"]
    lines += [f"{f.host:<10} {f.check:<12} {'ok' if f.ok else 'FAIL':<6} {f.detail}" for f in findings]
    return "\n".join(lines)


def as_json(findings: list[Finding]) -> str:
    return json.dumps({"ok": all(f.ok for f in findings), "findings": [asdict(f) for f in findings]}, indent=2)
