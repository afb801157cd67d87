"""`mailstack dmarc`: what the DMARC aggregate reports about a domain (deploys/reports/) say its
next stage would do, and moving the domain to that stage in the inventory only when no
failing source is left unexplained (or with an override, recorded in the inventory).

A source fails when the receiver found neither DKIM nor SPF aligned. It is explained once the
inventory authorises it for the future: its address is in the domain's `spf.ip`."""

from __future__ import annotations

import datetime
import ipaddress
import re
from dataclasses import asdict, dataclass

from mailstack.inventory import Domain, Inventory, check_text
from mailstack.inventory.source import load_yaml

STAGES = ("none", "quarantine", "reject")


@dataclass(frozen=True)
class Source:
    address: str
    name: str
    messages: int
    dkim: str
    spf: str
    dispositions: str
    platform: bool  # one of the platform's own hosts
    authorised: bool  # in the domain's `spf.ip` now

    @property
    def passes(self) -> bool:
        return "pass" in (self.dkim, self.spf)


def next_stage(domain: Domain) -> str | None:
    stage = STAGES.index(domain.dmarc["policy"])
    return STAGES[stage + 1] if stage + 1 < len(STAGES) else None


NAMED = 50  # failing sources whose reverse name is looked up (the largest first), at once


def _reverse_name(address: str) -> str:
    try:
        import dns.resolver
        import dns.reversename

        answer = dns.resolver.resolve(dns.reversename.from_address(address), "PTR", lifetime=2)
        return str(answer[0]).rstrip(".")
    except Exception:  # no reverse name, or no answer in time: the address stands alone
        return ""


def _names(inv: Inventory, failing: list[str]) -> dict[str, str]:
    """Inventory hosts by their names; the NAMED largest failing sources by their PTR records."""
    from concurrent.futures import ThreadPoolExecutor

    names = {h.address: h.fqdn for h in inv.hosts}
    asked = [a for a in failing if a not in names][:NAMED]
    with ThreadPoolExecutor(max_workers=NAMED) as pool:
        names.update(zip(asked, pool.map(_reverse_name, asked), strict=True))
    return names


def impact(inv: Inventory, domain: Domain, store: dict) -> dict:
    """Every sending source the reports name for `domain`, and which fail under the next stage."""
    rows = [r for r in store["dmarc"] if r["domain"] == domain.name]
    grouped: dict[str, dict] = {}
    for row in rows:
        entry = grouped.setdefault(row["source"], {"messages": 0, "dkim": set(), "spf": set(), "dispositions": set()})
        entry["messages"] += row["count"]
        entry["dkim"].add(row["dkim"])
        entry["spf"].add(row["spf"])
        entry["dispositions"].add(row["disposition"])
    own = {h.address for h in inv.hosts if not h.outside}
    allowed = [ipaddress.ip_network(n, strict=False) for n in domain.spf["ip"]]
    ordered = sorted(grouped.items(), key=lambda item: -item[1]["messages"])
    names = _names(inv, [a for a, e in ordered if "pass" not in e["dkim"] | e["spf"]])
    sources = [Source(address, names.get(address, ""), e["messages"], "pass" if "pass" in e["dkim"] else "fail",
                      "pass" if "pass" in e["spf"] else "fail", ",".join(sorted(e["dispositions"])),
                      address in own, any(ipaddress.ip_address(address) in n for n in allowed))
               for address, e in ordered]
    reports = [r for r in store["reports"] if r["kind"] == "dmarc" and r["domain"] == domain.name]
    return {"domain": domain.name, "policy": domain.dmarc["policy"], "testing": domain.dmarc["testing"],
            "next": next_stage(domain), "reports": len(reports),
            "reporters": sorted({r["reporter"] for r in reports}),
            "sources": [{**asdict(s), "passes": s.passes} for s in sources],
            "unexplained": [s.address for s in sources if not s.passes and not s.authorised]}


def text(report: dict) -> str:
    head = (f"{report['domain']}: DMARC p={report['policy']}{' (testing)' if report['testing'] else ''}, "
            f"next stage: {report['next'] or 'none (reject is the last)'}; {report['reports']} reports from "
            f"{', '.join(report['reporters']) or 'nobody yet'}")
    lines = [head, f"  {'messages':>8}  {'source':<39}  {'name':<28}  dkim  spf   verdict"]
    for s in report["sources"]:
        if s["passes"]:
            verdict = "passes" + (" (platform)" if s["platform"] else "")
        elif s["authorised"]:
            verdict = "failed, now in spf.ip"
        else:
            stage = report["next"] or report["policy"]
            verdict = f"FAILS{' (platform!)' if s['platform'] else ''}: {stage} would hit it"
        lines.append(f"  {s['messages']:>8}  {s['address']:<39}  {s['name'] or '?':<28}  {s['dkim']:<4}  "
                     f"{s['spf']:<4}  {verdict}")
    if report["unexplained"]:
        lines.append(f"  unexplained failing sources: {', '.join(report['unexplained'])} (add them to the "
                     "domain's spf.ip, sign their mail with the domain's DKIM key, or stop them)")
    return "\n".join(lines) + "\n"


def advanced(text_: str, file: str, domain: str, stage: str, note: str) -> str:
    """The inventory text with `domain`'s dmarc.policy set to `stage` and `note` as a comment
    above it; everything else byte for byte. Raises InventoryInvalid if the result is invalid."""
    data, pos, _ = load_yaml(text_, file)
    index = next(i for i, d in enumerate(data["domains"]) if d["name"].lower() == domain)
    entry = data["domains"][index]
    lines = text_.splitlines(keepends=True)
    if "policy" in (entry.get("dmarc") or {}):
        at = pos.lines[("domains", index, "dmarc", "policy")] - 1
        lines[at] = re.sub(r"(?<![\w-])(policy\s*:\s*)[\"']?(none|quarantine|reject)[\"']?", rf"\g<1>{stage}",
                           lines[at], count=1)
    elif "dmarc" in entry:
        at = pos.lines[("domains", index, "dmarc")] - 1
        if "{" in lines[at]:
            lines[at] = lines[at].replace("{", f"{{policy: {stage}, ", 1).replace(", }", "}")
        else:
            child = lines[at + 1]
            lines.insert(at + 1, " " * (len(child) - len(child.lstrip())) + f"policy: {stage}\n")
    else:
        at = pos.lines[("domains", index, "name")] - 1
        column = lines[at].index("name")
        lines.insert(at + 1, " " * column + f"dmarc: {{policy: {stage}}}\n")
        at += 1
    indent = " " * (len(lines[at]) - len(lines[at].lstrip(" -")))
    lines.insert(at, f"{indent}# {note}\n")
    result = "".join(lines)
    changed = check_text(result, file)
    assert changed.domain(domain).dmarc["policy"] == stage, "the inventory edit did not take"
    return result


def note(report: dict, stage: str, override: str | None) -> str:
    day = datetime.datetime.now(datetime.UTC).date().isoformat()
    why = f"override: {override}" if override else f"{report['reports']} reports, no unexplained failing source"
    return f"mailstack dmarc advance {day}: {report['policy']} -> {stage} ({why})"
