"""Hosts with `filter` (unless clamav.enabled is false): clamd from Debian on a local
socket, called by rspamd for every message. A virus is refused at SMTP time with its
name; clamd down or too slow is a temporary error, never mail accepted unscanned.

Signatures come from freshclam; a lab (no Internet) masks freshclam and gets a test
signature for EICAR instead."""

from __future__ import annotations

from pyinfra import host
from pyinfra.facts.server import Command
from pyinfra.operations import server

from deploys.ops import absent, symlink
from mailstack.component import Component, File, Service, schema_fragment
from mailstack.conventions import CLAMAV_UNSCANNED
from mailstack.inventory import Positions, Problem
from mailstack.plan import HostPlan

EICAR = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
CLAMAV_SYMBOL = "CLAM_VIRUS"  # rspamd's symbol for a finding (and _FAIL when clamd fails)
LAB_SIGNATURE = "Mailstack.Lab.EICAR"  # clamd reports it as Mailstack.Lab.EICAR.UNOFFICIAL
SIGNATURES = "/var/lib/clamav"
# Debian skips clamd (and its socket) unless the downloaded databases exist: a lab has
# only its own signature, and a site without any should see clamd fail, not silently idle.
START_ALWAYS = "# Managed by mailstack: start with any signature database.\n[Unit]\nConditionPathExistsGlob=\n"
# systemd makes the socket clamd takes over: for group clamav alone (rspamd), not everyone
SOCKET_MODE = "# Managed by mailstack: clamd's socket, for its group alone.\n[Socket]\nSocketMode=0660\n"


def stream_max_length(plan: HostPlan) -> int:
    """The biggest message Postfix accepts, with room for its encoding."""
    return plan.inv.postfix["message_size_limit"] + 1024 * 1024


def configure(plan: HostPlan) -> list[Service]:
    settings = plan.inv.clamav
    files = [File.template("/etc/clamav/clamd.conf", "clamav/clamd.conf.j2",
                           {"stream_max_length": stream_max_length(plan),
                            "alert_macros": "true" if settings["office_macros"] == "reject" else "false"}),
             File.text("/etc/systemd/system/clamav-daemon.service.d/mailstack.conf", START_ALWAYS),
             File.text("/etc/systemd/system/clamav-daemon.socket.d/mailstack.conf", START_ALWAYS + SOCKET_MODE)]
    services = []
    if settings["freshclam"]:
        services.append(Service("clamav-freshclam", (
            File.template("/etc/clamav/freshclam.conf", "clamav/freshclam.conf.j2",
                          {"mirror": settings.get("mirror", "")}),)))
    else:  # a lab: `mailstack check` allows this nowhere else
        files.append(File.text(f"{SIGNATURES}/mailstack-lab.ndb", f"{LAB_SIGNATURE}:0:*:{EICAR.encode().hex()}",
                               user="clamav", group="clamav"))
    # clamconf reports errors but exits 0: fail on any ERROR line it prints
    services.insert(0, Service("clamav-daemon", tuple(files), check="clamconf -c /etc/clamav 2>&1 | (! grep ^ERROR)",
                               # the socket (systemd's) takes a changed mode only when made anew
                               on_change="systemctl daemon-reload && systemctl restart clamav-daemon.socket"))
    return services


def rspamd_files(plan: HostPlan) -> tuple[File, ...]:
    """rspamd's antivirus rule (a finding is malware for the recipients' policy, named in a
    refusal), and a forced 4xx when clamd fails or is too slow."""
    settings = plan.inv.clamav
    return (File.template("/etc/rspamd/local.d/antivirus.conf", "clamav/antivirus.conf.j2",
                          {"stream_max_length": stream_max_length(plan), "timeout": settings["timeout"],
                           "symbol": CLAMAV_SYMBOL}),
            File.template("/etc/rspamd/local.d/force_actions.conf", "clamav/force_actions.conf.j2",
                          {"symbol": CLAMAV_SYMBOL, "unscanned": CLAMAV_UNSCANNED}),
            File.template("/etc/rspamd/mailstack.d/clamav.lua", "clamav/clamav.lua.j2",
                          {"symbol": CLAMAV_SYMBOL, "unscanned": CLAMAV_UNSCANNED}))


def install(plan: HostPlan) -> None:
    if plan.inv.clamav["freshclam"]:
        # clamd needs signatures before its first start: fetch them now when none exist yet
        present = host.get_fact(Command, command=f"ls {SIGNATURES} | grep -c -E '^(main|daily)[.]' || true")
        if present in (None, "0"):
            server.shell(name="First signatures (freshclam)", commands=["freshclam --quiet --foreground"])
        return
    masked = symlink("/etc/systemd/system/clamav-freshclam.service", "/dev/null",
                     name="No signature updates in a lab (freshclam masked)")
    # stopped now (systemd reads the mask at the deploy's one reload, reload_units)
    server.shell(name="freshclam stopped", commands=["systemctl stop clamav-freshclam.service"], _if=masked.did_change)
    absent("/etc/network/if-up.d/clamav-freshclam-ifupdown", name="No freshclam run when an interface comes up")


def rules(data: dict, pos: Positions) -> list[Problem]:
    """Signatures: freshclam outside a lab, never in one (it has no Internet)."""
    settings, lab = data["clamav"], data["platform"]["lab"]
    if not settings["enabled"] or settings["freshclam"] != lab:
        return []
    if lab:
        return [pos.problem(("clamav", "freshclam"), "a lab has no Internet: set clamav.freshclam: false (the "
                            "deploy then ships a test signature for EICAR)")]
    return [pos.problem(("clamav", "freshclam"), "without freshclam clamd has no signatures and every message "
                        "would be deferred: keep freshclam (clamav.mirror names your own mirror)")]


COMPONENT = Component(
    name="clamav",
    schema=schema_fragment(__file__),
    roles=frozenset({"filter"}),
    packages=("clamav-daemon", "clamav-freshclam"),
    units=("clamav-daemon",),
    disabled_units=("clamav-freshclam.service", "clamav-daemon.socket"),  # started once configured
    section="clamav",
    rules=(rules,),
    enabled=lambda inv: inv.clamav["enabled"],
    extends={"rspamd": rspamd_files},
    install=install,
    configure=configure,
)
