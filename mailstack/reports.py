"""`mailstack reports`: what other mail servers report about the platform's domains (DMARC
aggregate and TLS-RPT reports), gathered from the stores of the mailbox hosts that hold the
report mailboxes (deploys/reports/) and summarised per domain."""

from __future__ import annotations

from collections import defaultdict


def merged(stores: list[dict]) -> dict:
    """One store of several hosts' (a report kept on two hosts counts once)."""
    result: dict = {"reports": [], "tls": [], "dmarc": []}
    seen: set[tuple] = set()
    for store in stores:
        fresh = {(r["kind"], r["reporter"], r["id"]) for r in store["reports"]} - seen
        seen |= fresh
        result["reports"] += [r for r in store["reports"] if (r["kind"], r["reporter"], r["id"]) in fresh]
        result["tls"] += [r for r in store["tls"] if (r["kind"], r["reporter"], r["id"]) in fresh]
        result["dmarc"] += [r for r in store["dmarc"] if ("dmarc", r["reporter"], r["id"]) in fresh]
    return result


def summary(store: dict) -> str:
    """Per domain: TLS sessions that succeeded and failed (by result, sending MTA, MX), and
    DMARC's sources (messages, DKIM and SPF as evaluated, what the receiver did)."""
    lines = []
    tls: dict = defaultdict(lambda: defaultdict(int))
    for row in store["tls"]:
        tls[row["domain"]][(row["result"], row["mta"], row["mx"])] += row["sessions"]
    dmarc: dict = defaultdict(lambda: defaultdict(int))
    for row in store["dmarc"]:
        dmarc[row["domain"]][(row["source"], row["dkim"], row["spf"], row["disposition"])] += row["count"]
    reporters: dict = defaultdict(set)
    for report in store["reports"]:
        for domain in report["domain"].split(","):
            reporters[domain].add(report["reporter"])
    for domain in sorted(set(tls) | set(dmarc)):
        lines.append(f"{domain}  (reported by {', '.join(sorted(reporters[domain]))})")
        if domain in tls:
            ok = tls[domain].pop(("success", "", ""), 0)
            failed = sum(tls[domain].values())
            lines.append(f"  TLS: {ok} sessions succeeded, {failed} failed")
            for (result, mta, mx), count in sorted(tls[domain].items()):
                lines.append(f"    {count:>6}  {result}  from {mta or '?'} to {mx or '?'}")
        if domain in dmarc:
            lines.append("  DMARC: messages  source  dkim  spf  disposition")
            for (source, dkim, spf, disposition), count in sorted(dmarc[domain].items()):
                lines.append(f"    {count:>6}  {source}  {dkim}  {spf}  {disposition}")
    return "\n".join(lines) + "\n" if lines else "no reports about the platform's domains yet\n"
