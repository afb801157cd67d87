"""Extension points (issue 23): what one component adds to another's configuration is
declared once (`Component.adds`), lands in that configuration on the hosts where the
component runs, and a conflict is refused naming both parties, before any host is touched."""

from __future__ import annotations

import pytest
import yaml
from unitdata import ROOT, VALID

import deploys
from deploys import COMPONENTS, configured, postfix
from mailstack.component import AlertRule, Component, ExtensionConflict, File
from mailstack.conventions import DOVECOT_BLOCKS
from mailstack.dns import Record
from mailstack.inventory import check_text, load
from mailstack.plan import plans

STS = {"smtp_tls_scert_verifydepth": "5"}
STS_SERVICE = {"line": "sts-out unix -       -       n       -       -       smtp",
               "options": ["syslog_name=postfix/sts-out"]}


def sts(**adds) -> Component:
    """A component as outbound MTA-STS would declare itself: on MX hosts, adding to Postfix."""
    return Component(name="mta-sts", roles=frozenset({"mx"}), adds=adds)


def postfix_files(components: tuple, host: str = "mx1") -> dict[str, list[str]]:
    plan = plans(check_text(VALID, "inv.yml"), components)[host]
    component = next(c for c in plan.components if c.name == "postfix")
    return {f.path: f.lines for s in configured(component, plan) for f in s.files
            if f.path in (postfix.MAIN_CF, postfix.MASTER_CF)}


def test_what_a_component_adds_to_postfix_lands_in_main_cf_and_master_cf_where_it_runs():
    plain = postfix_files(COMPONENTS)
    files = postfix_files((*COMPONENTS, sts(**{"postfix.main": lambda inv, host: STS,
                                                 "postfix.master": lambda inv, host: [STS_SERVICE],
                                                 "tls.names": lambda inv, host: [f"sts.{inv.platform['domain']}"]})))
    main, master = files[postfix.MAIN_CF], files[postfix.MASTER_CF]
    assert main[1:len(plain[postfix.MAIN_CF])] == plain[postfix.MAIN_CF][1:]  # its own part as before
    assert "# Added by the mta-sts component (extension point postfix.main)." in main
    assert "# Added by the srs component (extension point postfix.main)." in main  # the real one, beside it
    assert "smtp_tls_scert_verifydepth = 5" in main
    assert STS_SERVICE["line"] in master and "  -o syslog_name=postfix/sts-out" in master
    plan = plans(check_text(VALID, "inv.yml"), (*COMPONENTS, sts(**{"tls.names": lambda inv, host: ["sts.t.example"]})))
    assert "sts.t.example" in plan["mx1"].certificate_names
    assert "sts.t.example" not in plan["other"].certificate_names  # not an MX host: not there


def test_two_components_setting_one_postfix_parameter_are_refused_naming_both():
    rival = Component(name="dane", roles=frozenset({"mx"}),
                      adds={"postfix.main": lambda inv, host: {"smtp_tls_scert_verifydepth": "hash:/x"}})
    with pytest.raises(ExtensionConflict, match="components 'mta-sts' and 'dane' both set postfix.main "
                                                "'smtp_tls_scert_verifydepth' on mx1"):
        plans(check_text(VALID, "inv.yml"), (*COMPONENTS, sts(**{"postfix.main": lambda inv, host: STS}), rival))
    with pytest.raises(ExtensionConflict, match="components 'srs' and 'dane' both set postfix.main "
                                                "'sender_canonical_maps' on mx1"):  # the shipped SRS component
        plans(check_text(VALID, "inv.yml"), (*COMPONENTS, Component(name="dane", roles=frozenset({"mx"}), adds={
            "postfix.main": lambda inv, host: {"sender_canonical_maps": "hash:/x"}})))


def test_a_parameter_or_service_postfix_sets_itself_is_not_anyone_elses():
    for point, value in (("postfix.main", {"smtpd_milters": ""}),
                         ("postfix.master", [{"line": "smtp      inet  n       -       n       -       -       smtpd"}])):
        with pytest.raises(ExtensionConflict, match=f"component 'mta-sts' sets {point} 'smtp(d_milters)?', "
                                                    "which postfix sets itself"):
            postfix_files((*COMPONENTS, sts(**{point: lambda inv, host, value=value: value})))


def test_an_unknown_extension_point_is_named():
    with pytest.raises(ExtensionConflict, match="component 'mta-sts' adds to 'postfix.mian', which is no "
                                                "extension point"):
        plans(check_text(VALID, "inv.yml"), (*COMPONENTS, sts(**{"postfix.mian": lambda inv, host: STS})))


def lab_plans(components: tuple) -> dict:
    return plans(load(ROOT / "inventories" / "lab.yml"), components)


def test_dns_records_a_component_adds_reach_the_zones_the_lab_serves_and_every_plan():
    srs_domain = Component(name="srs-names", roles=frozenset({"mx"}), platform_only=True, adds={"dns.records": lambda inv, host: [
        Record(f"srs.{inv.platform['domain']}", "MX", f"10 {host.fqdn}.")]})
    found = lab_plans((*COMPONENTS, srs_domain))
    nsd = next(c for c in COMPONENTS if c.name == "dns")
    (server,) = [p for p in found.values() if nsd in p.components]
    zone_lines = [line for s in configured(nsd, server) for f in s.files for line in f.lines]
    platform = server.inv.platform["domain"]
    assert f"srs.{platform}. 300 IN MX 10 {server.inv.host('mail').fqdn}." in zone_lines  # as signed
    assert all(p.contributed("dns.records") == server.contributed("dns.records") for p in found.values())
    lost = Component(name="srs-names", roles=frozenset({"mx"}), adds={"dns.records": lambda inv, host: [
        Record("srs.nowhere.invalid", "MX", "10 x.")]})
    with pytest.raises(ValueError, match="srs.nowhere.invalid MX is in no zone of the platform"):
        configured(nsd, lab_plans((*COMPONENTS, lost))[server.name])


def test_prometheus_scrapes_what_every_host_offers_at_monitoring_targets():
    probe = Component(name="probe", roles=None, adds={"monitoring.targets": lambda inv, host: [
        ("probe", f"{host.address}:9999")] if not host.outside else []})
    found = lab_plans((*COMPONENTS, probe))
    monitoring = next(c for c in COMPONENTS if c.name == "monitoring")
    (watcher,) = [p for p in found.values() if monitoring in p.components]
    config = next(f for s in configured(monitoring, watcher) for f in s.files if f.path.endswith("prometheus.yml"))
    jobs = {job["job_name"]: job["static_configs"][0]["targets"]
            for job in yaml.safe_load(config.content)["scrape_configs"]}
    assert jobs["probe"] == [f"{h.address}:9999" for h in watcher.inv.hosts if not h.outside]
    assert jobs["node"] == [f"{h.address}:9100" for h in watcher.inv.hosts if not h.outside]  # the exporters' own


def alert_rules(components: tuple) -> dict[str, dict]:
    """The lab monitoring host's alert rules, by name, as Prometheus reads them."""
    found = lab_plans(components)
    monitoring = next(c for c in COMPONENTS if c.name == "monitoring")
    (watcher,) = [p for p in found.values() if monitoring in p.components]
    rules = next(f for s in configured(monitoring, watcher) for f in s.files if f.path.endswith("mailstack-rules.yml"))
    return {r["alert"]: r for group in yaml.safe_load(rules.content)["groups"] for r in group["rules"]}


def test_a_component_brings_its_own_alerts_once_however_many_hosts_run_it():
    probe = Component(name="probe", roles=None, adds={"monitoring.rules": lambda inv, host: [
        AlertRule("ProbeSilent", "mailstack_probe_ok == 0", "{{ $labels.instance }} probe silent", after="5m")]})
    rules = alert_rules((*COMPONENTS, probe))
    assert rules["ProbeSilent"] == {"alert": "ProbeSilent", "expr": "mailstack_probe_ok == 0", "for": "5m",
                                    "labels": {"severity": "warning"},
                                    "annotations": {"summary": "{{ $labels.instance }} probe silent"}}
    assert "MailstackAccountOnHold" in rules and "SiemRecordsRefused" in rules  # the shipped limits and siem
    without = alert_rules(tuple(c for c in COMPONENTS if c.name not in ("limits", "siem")))
    assert "MailstackAccountOnHold" not in without and "SiemRecordsRefused" not in without
    assert "ServiceDown" in without  # monitoring's own stay


def test_two_different_alerts_under_one_name_are_refused():
    rival = Component(name="rival", roles=None, adds={"monitoring.rules": lambda inv, host: [
        AlertRule("MailstackAccountOnHold", "vector(1)", "not the limits' alert")]})
    with pytest.raises(ExtensionConflict, match="'MailstackAccountOnHold'"):
        alert_rules((*COMPONENTS, rival))


def test_a_component_adds_a_dovecot_block_that_dovecot_reads_and_checks_with_its_own(monkeypatch):
    block = File.text(f"{DOVECOT_BLOCKS}/probe.conf", "mail_max_userip_connections = 7\n")
    probe = Component(name="probe", roles=frozenset({"mailbox"}), extends={"dovecot": lambda plan: (block,)})
    plan = lab_plans((*COMPONENTS, probe))["mail"]
    dovecot = next(c for c in plan.components if c.name == "dovecot")
    [service] = [s for s in configured(dovecot, plan) if s.unit == "dovecot"]
    conf = next(f for f in service.files if f.path == "/etc/dovecot/dovecot.conf")
    assert block in service.files and service.check  # checked and restarted with Dovecot's own files
    assert conf.lines[-1] == f"!include_try {DOVECOT_BLOCKS}/*.conf"  # read last: a block may add, not undo
    monkeypatch.setattr(deploys, "COMPONENTS", (*COMPONENTS, probe))  # registered, but off on this host
    [plain] = [s for s in configured(dovecot, lab_plans(COMPONENTS)["mail"]) if s.unit == "dovecot"]
    assert block.path in plain.absent  # its block goes
