"""The `mailstack` command: check inventories, print DNS records, generate docs, run the lab,
look after a domain's quarantine, an account's sending limits and the mailbox backups."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import deploys  # noqa: F401 (hands the components in)
from mailstack.inventory import InventoryInvalid, load

DEFAULT_INVENTORY = os.environ.get("MAILSTACK_INVENTORY", "inventories/lab.yml")
EXIT_INVALID = 2
EXIT_PROBLEMS = 1  # mailstack status found something that differs from the inventory


def _load_or_report(path: str):
    try:
        return load(path)
    except InventoryInvalid as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        noun = "problem" if len(err.problems) == 1 else "problems"
        print(f"{path}: {len(err.problems)} {noun}; nothing was deployed", file=sys.stderr)
        return None


def cmd_check(args: argparse.Namespace) -> int:
    status = 0
    for path in args.files:
        inv = _load_or_report(path)
        if inv is None:
            status = EXIT_INVALID
            continue
        print(f"{path}: ok — {len(inv.hosts)} hosts, {len(inv.domains)} domains, "
              f"{len(inv.users)} users, {len(inv.aliases)} aliases")
    return status


def cmd_schema_docs(args: argparse.Namespace) -> int:
    from mailstack import registry, schemabuild
    from mailstack.inventory.schema import forget_schema
    from mailstack.schemadoc import render

    written = schemabuild.write(registry.components())
    print(f"wrote {_shown(written)}", file=sys.stderr)
    forget_schema()  # the docs come from the file just written
    text = render()
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)  # stdout may be that very file
    COMPONENTS_DOC.write_text(components_doc())
    print(f"wrote {_shown(COMPONENTS_DOC)}", file=sys.stderr)
    return 0


def _shown(path: Path) -> Path:
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


COMPONENTS_DOC = Path(__file__).resolve().parent.parent / "docs" / "components.md"


def components_doc() -> str:
    """docs/components.md from the registry: each folder's docstring and declaration."""
    from importlib import import_module

    from deploys import ORDER
    from mailstack.componentdoc import render

    modules = [(name, import_module(f"deploys.{name}")) for name in ORDER]
    return render([(name, module.COMPONENT, module.__doc__) for name, module in modules])


def cmd_dns(args: argparse.Namespace) -> int:
    from mailstack.dns import zone_snippet
    from mailstack.plan import plans

    inv = _load_or_report(args.file)
    if inv is None:
        return EXIT_INVALID
    any_plan = next(iter(plans(inv).values()))  # the records components add are the same in every plan
    sys.stdout.write(zone_snippet(inv, any_plan.contributed("dns.records")))
    return 0


def cmd_lab(args: argparse.Namespace) -> int:
    from deploys import COMPONENTS
    from mailstack.lab import Lab, LabError
    from mailstack.lab.image import Recipe

    inv = _load_or_report(args.inventory)
    if inv is None:
        return EXIT_INVALID
    lab = Lab(inv, Recipe.of(COMPONENTS))
    try:
        if args.action == "up":
            lab.up()
        elif args.action == "down":
            lab.down()
        elif args.action == "status":
            for name, address, state in lab.status():
                print(f"{name:<10} {address:<16} {state}")
        elif args.action == "summary":
            from mailstack.tls import trusted_file

            print(lab.summary(trusted_file(inv)))
        elif args.action == "acme-roots":
            from mailstack.lab.acme import ensure_ca
            from mailstack.tls import lab_acme_ca

            if not lab_acme_ca(inv):
                print("this lab's platform has no ACME CA of its own: nothing to do")
            ensure_ca(inv)
        elif args.action == "closed":
            from mailstack.lab.recipes import closed

            print(closed(Path(inv.file).read_text()), end="")
        elif args.action == "with-nauthilus":
            from mailstack.lab.recipes import with_nauthilus

            print(with_nauthilus(Path(inv.file).read_text(), args.program.resolve()), end="")
        elif args.action == "ssh":
            command = lab.ssh_command(args.host, args.command)
            os.execvp(command[0], command)
    except LabError as err:
        print(f"lab: {err}", file=sys.stderr)
        return 1
    return 0


def _on_host(host, command: list[str]) -> int:
    import subprocess

    from mailstack.remote import ssh_argv

    return subprocess.run(ssh_argv(host, command)).returncode


def cmd_account(args: argparse.Namespace) -> int:
    import subprocess

    from mailstack.conventions import ACCOUNT_TOOL
    from mailstack.remote import ssh_argv

    inv = _load_or_report(args.inventory)
    if inv is None:
        return EXIT_INVALID
    login = args.login.lower()
    users = {u.address: u for u in inv.users}
    if login not in users:
        print(f"account: {login} is no user in {args.inventory}", file=sys.stderr)
        return 1
    drop = ["--drop"] if getattr(args, "drop", False) else []
    # the counters are in the filter host's Redis; held mail waits on the Postfix host that took it
    submission = [inv.host(name) for name in inv.domain(users[login].domain).submission]
    counters = next((h for h in submission if "filter" in h.roles), None) or \
        next(h for h in inv.hosts_with("filter") if not h.outside)
    if args.action == "hold":  # and its open IMAP/POP3 sessions end wherever it reads mail
        status = _on_host(counters, [ACCOUNT_TOOL, "hold", login])
        for name in sorted({users[login].mailbox, *(h.name for h in inv.hosts_with("proxy"))} - {counters.name}):
            status = status or _on_host(inv.host(name), ["doveadm", "kick", login])
        return status
    if args.action != "release" or counters in submission and len(submission) == 1:
        return _on_host(counters, [ACCOUNT_TOOL, args.action, login, *drop])
    found = subprocess.run(ssh_argv(counters, [ACCOUNT_TOOL, "held", login]), capture_output=True, text=True)
    if found.returncode:
        print(found.stderr, end="", file=sys.stderr)
        return found.returncode
    held = found.stdout.split()
    for host in submission if held else ():
        status = _on_host(host, [ACCOUNT_TOOL, "release-mail", *drop, *held])
        if status:
            return status
    return _on_host(counters, [ACCOUNT_TOOL, "release", login, *drop, "--counters-only"])


def cmd_quarantine(args: argparse.Namespace) -> int:
    from deploys.dovecot import QUARANTINE_TOOL

    inv = _load_or_report(args.inventory)
    if inv is None:
        return EXIT_INVALID
    domains = {d.name: d for d in inv.domains}
    if args.domain not in domains or "quarantine" not in domains[args.domain].inbound:
        print(f"quarantine: {args.domain} has no quarantine mailbox in {args.inventory} "
              "(domains[].inbound.quarantine)", file=sys.stderr)
        return 1
    domain = domains[args.domain]
    command = [QUARANTINE_TOOL, args.action, domain.inbound["quarantine"], *([args.uid] if args.uid else [])]
    if getattr(args, "to", None):
        command += ["--to", args.to]
    return _on_host(inv.host(domain.mailbox[0]), command)


def _report_store(inv) -> dict | None:
    """The reports every report mailbox holds, collected first (None: a host failed, said why)."""
    import json
    import subprocess

    from deploys.reports import TOOL, report_mailboxes
    from mailstack.remote import ssh_argv
    from mailstack.reports import merged

    stores = []
    for host in (h for h in inv.hosts_with("mailbox") if not h.outside and report_mailboxes(inv, h)):
        done = subprocess.run(ssh_argv(host, ["sh", "-c", f"{TOOL} collect && {TOOL} show"]),
                              capture_output=True, text=True)
        if done.returncode:
            print(f"reports: {host.name}: {done.stderr.strip()}", file=sys.stderr)
            return None
        stores.append(json.loads(done.stdout))
    return merged(stores)


def cmd_status(args: argparse.Namespace) -> int:
    from mailstack.plan import plans
    from mailstack.status import as_json, audit, table

    inv = _load_or_report(args.inventory)
    if inv is None:
        return EXIT_INVALID
    findings = audit(inv, plans(inv), args.nameserver)
    print(as_json(findings) if args.json else table(findings))
    return 0 if all(f.ok for f in findings) else EXIT_PROBLEMS


def cmd_reports(args: argparse.Namespace) -> int:
    import json

    from mailstack.reports import summary

    inv = _load_or_report(args.inventory)
    if inv is None:
        return EXIT_INVALID
    store = _report_store(inv)
    if store is None:
        return 1
    sys.stdout.write(json.dumps(store, indent=1) + "\n" if args.json else summary(store))
    return 0


def cmd_dmarc(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from mailstack import dmarc
    from mailstack.inventory import InventoryInvalid, rewrite

    inv = _load_or_report(args.inventory)
    if inv is None:
        return EXIT_INVALID
    own = {d.name: d for d in inv.own_domains()}
    if args.domain not in own:
        print(f"dmarc: {args.domain} is not a platform domain in {args.inventory}", file=sys.stderr)
        return 1
    store = _report_store(inv)
    if store is None:
        return 1
    report = dmarc.impact(inv, own[args.domain], store)
    if args.action == "report":
        sys.stdout.write(json.dumps(report, indent=1) + "\n" if args.json else dmarc.text(report))
        return 0
    sys.stdout.write(dmarc.text(report))
    if report["next"] is None:
        print(f"dmarc: {args.domain} is at reject already", file=sys.stderr)
        return 1
    if report["unexplained"] and not args.override:
        print(f"dmarc: not advancing {args.domain}: failing sources are unexplained "
              f"({', '.join(report['unexplained'])}); fix them, or --override REASON", file=sys.stderr)
        return 1
    path = Path(args.inventory)
    try:
        text = dmarc.advanced(path.read_text(), str(path), args.domain, report["next"],
                              dmarc.note(report, report["next"], args.override))
    except InventoryInvalid as invalid:
        print(invalid, file=sys.stderr)
        return EXIT_INVALID
    rewrite(path, text)
    print(f"{path}: {args.domain} now at dmarc.policy {report['next']}; deploy to publish it")
    return 0


def cmd_dkim(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mailstack import dkim
    from mailstack.inventory import InventoryInvalid

    if _load_or_report(args.inventory) is None:
        return EXIT_INVALID
    nameservers = (args.nameserver,) if args.nameserver else None
    try:
        if args.action == "rotate":
            dkim.rotate(Path(args.inventory), args.domain.lower(), args.selector, args.wait, nameservers)
        else:
            dkim.retire(Path(args.inventory), args.domain.lower(), nameservers)
    except InventoryInvalid as invalid:
        print(invalid, file=sys.stderr)
        return EXIT_INVALID
    except dkim.RotationError as error:
        print(f"dkim: {error}", file=sys.stderr)
        return 1
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    import json

    from mailstack import migrate

    inv = _load_or_report(args.inventory)
    if inv is None:
        return EXIT_INVALID
    try:
        results = migrate.migrate(inv, args.user and args.user.lower(), args.domain and args.domain.lower(),
                                  "verify" if args.verify_only else "sync")
    except migrate.MigrationError as error:
        print(f"migrate: {error}", file=sys.stderr)
        return 1
    print(json.dumps(results, indent=1) if args.json else migrate.text(results))
    return EXIT_PROBLEMS if any(r["problems"] for r in results) else 0


def cmd_backup(args: argparse.Namespace) -> int:
    from deploys.backup import TOOL

    inv = _load_or_report(args.inventory)
    if inv is None:
        return EXIT_INVALID
    if not inv.backup["enabled"]:
        print(f"backup: backups are off in {args.inventory} (backup.enabled)", file=sys.stderr)
        return 1
    hosts = [h for h in inv.hosts_with("mailbox") if not h.outside]
    if args.action == "rewind":
        return _rewind(inv, args)
    if args.action != "restore":  # every mailbox host of the platform
        return max(_on_host(h, [TOOL, args.action]) for h in hosts)
    options = [*(["--beside"] if args.beside else []), "--snapshot", args.snapshot]
    if args.all:
        if args.folder or args.user:
            print("backup: --all restores every user: no user, no --folder", file=sys.stderr)
            return 1
        return max(_on_host(h, [TOOL, "restore", "--all", *options]) for h in hosts)
    if not args.user:
        print("backup: restore needs a user or --all", file=sys.stderr)
        return 1
    user = args.user.lower()
    found = [u for u in inv.users if u.address == user]
    if not found:
        print(f"backup: {user} is no user in {args.inventory}", file=sys.stderr)
        return 1
    folder = ["--folder", args.folder] if args.folder else []
    return _on_host(inv.host(inv.domain(found[0].domain).mailbox[0]), [TOOL, "restore", user, *folder, *options])


def _rewind(inv, args: argparse.Namespace) -> int:
    """A mailbox host's backups as they were at a time, by the store's lock keeper."""
    import datetime

    from deploys import backup_lock
    from mailstack import s3

    if not s3.locked(inv):
        print(f"backup: {args.inventory} keeps no object lock on the backups (backup.locked_days, the deployed "
              "store): there are no old versions to go back to", file=sys.stderr)
        return 1
    if args.host not in [h.name for h in s3.backup_hosts(inv)]:
        print(f"backup: {args.host} is no mailbox host that backs up in {args.inventory}", file=sys.stderr)
        return 1
    try:
        moment = datetime.datetime.fromisoformat(args.time)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        print(f"backup: {args.time!r} is no ISO 8601 time with its zone (2026-12-05T04:30:00Z)", file=sys.stderr)
        return 1
    when = moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return _on_host(s3.storage_hosts(inv)[0], [backup_lock.TOOL, "rewind", args.host, when])


def inventory_option(command: argparse.ArgumentParser, what: str = "inventory") -> None:
    command.add_argument("-i", "--inventory", default=DEFAULT_INVENTORY,
                         help=f"{what} (default: $MAILSTACK_INVENTORY or inventories/lab.yml)")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="mailstack",
        description="Deploy and verify a complete mail platform from one YAML inventory.",
    )
    sub = top.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check", help="validate inventories (exit 2 on any problem)")
    check.add_argument("files", nargs="+", metavar="FILE", help="inventory YAML files")
    check.set_defaults(func=cmd_check)

    dns = sub.add_parser("dns", help="print the DNS records to publish, as a zone snippet")
    dns.add_argument("file", metavar="FILE", help="inventory YAML file")
    dns.set_defaults(func=cmd_dns)

    docs = sub.add_parser("schema-docs", help="assemble schemas/inventory.schema.json from the core and the "
                                              "components' sections, the inventory reference from it, and "
                                              "docs/components.md from the components' folders")
    docs.add_argument("-o", "--output", default="docs/inventory.md",
                      help="where to write it ('-' for stdout; default: docs/inventory.md)")
    docs.set_defaults(func=cmd_schema_docs)

    lab = sub.add_parser("lab", help="the local container lab (systemd-nspawn, needs root)")
    inventory_option(lab, "lab inventory")
    actions = lab.add_subparsers(dest="action", required=True)
    actions.add_parser("up", help="build the image if needed, boot every host, and the lab's ACME CA (idempotent)")
    actions.add_parser("down", help="stop every host; remove trees, bridge and apt proxy")
    actions.add_parser("status", help="show each host and whether it runs")
    actions.add_parser("summary", help="how to use the running lab: hosts, users, a test mail")
    ssh = actions.add_parser("ssh", help="open a shell (or run a command) on a lab host")
    ssh.add_argument("host", help="lab host name")
    ssh.add_argument("command", nargs=argparse.REMAINDER, help="command to run")
    actions.add_parser("acme-roots", help="the lab's ACME CA runs (its host deployed alone first if it does not "
                       "answer) and its current root is kept for the hosts' trust stores and the tests (Pebble makes "
                       "a new one at each start; `up` does this too)")
    actions.add_parser("closed", help="print the lab inventory with every certificate from the lab CA (no ACME: "
                       "for hosts where systemd cannot hand credentials, as under Vagrant's docker provider)")
    gate = actions.add_parser("with-nauthilus", help="print the lab inventory with Nauthilus on `mail`, from "
                              "your copy of the program (no registry ships it; docs/lab.md)")
    gate.add_argument("program", type=Path, help="the nauthilus program (or its release .tar.gz)")
    lab.set_defaults(func=cmd_lab)

    quarantine = sub.add_parser("quarantine", help="list, release or delete a domain's quarantined mail (over SSH)")
    inventory_option(quarantine)
    what = quarantine.add_subparsers(dest="action", required=True)
    listing = what.add_parser("list", help="UID, arrival, recipient, finding, sender and subject of each message")
    release = what.add_parser("release", help="deliver one message to its recipient's INBOX, unchanged")
    release.add_argument("--to", metavar="USER", help="a user of the domain instead (when it was for an alias)")
    delete = what.add_parser("delete", help="delete one message (logged)")
    for action in (listing, release, delete):
        action.add_argument("domain", help="the domain whose quarantine it is")
    for action in (release, delete):
        action.add_argument("uid", help="the message's UID (from list)")
    listing.set_defaults(uid=None)
    quarantine.set_defaults(func=cmd_quarantine)

    account = sub.add_parser("account", help="an account's sending counters and hold (over SSH)")
    inventory_option(account)
    doing = account.add_subparsers(dest="action", required=True)
    doing.add_parser("status", help="counters of the current minute, hour and day; the hold and held mail")
    doing.add_parser("hold", help="put the account on hold: its submissions get 451 until released")
    freeing = doing.add_parser("release", help="lift the hold, reset the counters, let the held mail go")
    freeing.add_argument("--drop", action="store_true", help="delete the held mail instead (logged)")
    for action in doing.choices.values():
        action.add_argument("login", help="the user's address")
    account.set_defaults(func=cmd_account)

    status = sub.add_parser("status", help="the running platform against the inventory, read-only: units, "
                            "scheduled jobs, ports, certificates, queues, quotas, backups, disks, alerts firing, DNS "
                            "records (exit 1 on any difference)")
    inventory_option(status)
    status.add_argument("--json", action="store_true", help="every finding, as JSON")
    status.add_argument("--nameserver", metavar="ADDRESS", help="ask this DNS server for the records (default: "
                        "a lab's own, else this machine's resolver)")
    status.set_defaults(func=cmd_status)

    reports = sub.add_parser("reports", help="DMARC aggregate and TLS-RPT reports about the platform's "
                                             "domains: collect them from the report mailboxes, summarise (over SSH)")
    inventory_option(reports)
    reports.add_argument("--json", action="store_true", help="every report and row, as JSON")
    reports.set_defaults(func=cmd_reports)

    dmarc = sub.add_parser("dmarc", help="a domain's DMARC stage: what the next one would hit, by the reports; "
                                         "advance to it (edits the inventory)")
    inventory_option(dmarc)
    stage = dmarc.add_subparsers(dest="action", required=True)
    impact = stage.add_parser("report", help="every source the reports name: messages, DKIM and SPF as the "
                                              "receivers found them, the platform's own, who fails the next stage")
    impact.add_argument("--json", action="store_true", help="as JSON")
    advance = stage.add_parser("advance", help="move the domain one stage (none, quarantine, reject) in the "
                                               "inventory, only when no failing source is unexplained")
    advance.add_argument("--override", metavar="REASON", help="advance anyway; the reason is recorded in the inventory")
    for command in (impact, advance):
        command.add_argument("domain", help="a platform domain")
    dmarc.set_defaults(func=cmd_dmarc)

    keys = sub.add_parser("dkim", help="rotate a domain's DKIM key (edits the inventory and deploys), or retire "
                                       "the old one after the grace period")
    inventory_option(keys)
    keys.add_argument("--nameserver", metavar="ADDRESS", help="the DNS server to watch for the new key (default: "
                      "a lab's own, else this machine's resolver)")
    turn = keys.add_subparsers(dest="action", required=True)
    rotate = turn.add_parser("rotate", help="name a new selector in the inventory (the old one as dkim.previous), "
                                            "deploy, wait until the DNS serves the new key, deploy to sign with it; "
                                            "run again to finish a rotation under way")
    rotate.add_argument("--selector", help="the new selector (default: s and today's date, s20261206)")
    rotate.add_argument("--wait", type=int, default=3600, metavar="SECONDS",
                        help="how long to wait for the DNS (default: 3600)")
    retire = turn.add_parser("retire", help="take the previous selector out of the inventory and the DNS (once "
                                            "the new key is served)")
    for command in (rotate, retire):
        command.add_argument("domain", help="a platform domain")
    keys.set_defaults(func=cmd_dkim)

    moving = sub.add_parser("migrate", help="move mailboxes in from the old IMAP server (the inventory's "
                                            "migration section) with dsync, then prove every old message is here "
                                            "(exit 1 otherwise); rerun up to and after the cutover")
    inventory_option(moving)
    whom = moving.add_mutually_exclusive_group()
    whom.add_argument("--user", metavar="ADDRESS", help="only this platform user's entry")
    whom.add_argument("--domain", help="only the entries of this domain")
    moving.add_argument("--verify-only", action="store_true", help="compare the old and the new mailboxes only")
    moving.add_argument("--json", action="store_true", help="every account's result, per folder, as JSON")
    moving.set_defaults(func=cmd_migrate)

    backup = sub.add_parser("backup", help="the mailbox backups: list, run, restore, rewind (over SSH)")
    inventory_option(backup)
    step = backup.add_subparsers(dest="action", required=True)
    step.add_parser("list", help="the snapshots of every mailbox host")
    step.add_parser("run", help="back up every mailbox host now (and apply the retention)")
    step.add_parser("check", help="verify every mailbox host's repository")
    back = step.add_parser("restore", help="put a user's mail (or one folder, or every mailbox host's "
                                           "whole mail) back from a snapshot; mail keeps flowing")
    back.add_argument("user", nargs="?", help="the user's address")
    back.add_argument("--all", action="store_true", help="every user of every mailbox host (a lost host)")
    back.add_argument("--folder", help="only this folder (IMAP name, sub-folders as Parent.Child)")
    back.add_argument("--beside", action="store_true", help="write it beside the mailbox (/var/vmail-restore/) "
                                                            "instead of in place")
    back.add_argument("--snapshot", default="latest", help="the snapshot id (default: the latest)")
    rewind = step.add_parser("rewind", help="put a mailbox host's backup repository back as it was at a time "
                                            "(after an intruder on that host deleted or overwrote it; "
                                            "backup.locked_days)")
    rewind.add_argument("host", help="the mailbox host whose backups to rewind")
    rewind.add_argument("time", help="when they were intact: ISO 8601 with its zone, e.g. 2026-12-05T04:30:00Z")
    backup.set_defaults(func=cmd_backup)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
