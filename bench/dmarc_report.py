"""Time and memory of the DMARC report path for RECORDS aggregate records (issue 26 asks for
100,000): the host tool storing them (1,000 reports), reading the store back as the CLI gets
it (JSON), and `mailstack dmarc report` working out the impact. No lab needed.

    .venv/bin/python bench/dmarc_report.py [RECORDS]
"""

import importlib.util
import json
import random
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import deploys  # noqa: E402,F401  (hands the components in)
from mailstack import dmarc  # noqa: E402
from mailstack.inventory import load  # noqa: E402
from mailstack.reports import merged  # noqa: E402

spec = importlib.util.spec_from_file_location("tool", ROOT / "deploys/reports/templates/mailstack-reports.py")
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)


def report(number: int, records: int, rng: random.Random) -> bytes:
    rows = "".join(
        f"<record><row><source_ip>198.51.{rng.randrange(20)}.{rng.randrange(250)}</source_ip>"
        f"<count>{rng.randrange(1, 50)}</count><policy_evaluated><disposition>none</disposition>"
        f"<dkim>{rng.choice(('pass', 'fail'))}</dkim><spf>{rng.choice(('pass', 'fail'))}</spf></policy_evaluated>"
        "</row><identifiers><header_from>example.test</header_from></identifiers></record>"
        for _ in range(records))
    return (f"<feedback><report_metadata><org_name>reporter{number % 7}</org_name><report_id>r{number}</report_id>"
            "<date_range><begin>1</begin><end>2</end></date_range></report_metadata>"
            f"<policy_published><domain>example.test</domain></policy_published>{rows}</feedback>").encode()


def main(total: int) -> None:
    rng, reports = random.Random(1), 1000
    documents = [report(n, total // reports, rng) for n in range(reports)]
    with tempfile.TemporaryDirectory() as directory:
        db = sqlite3.connect(f"{directory}/store.sqlite")
        db.executescript(tool.SCHEMA)
        start = time.perf_counter()
        for document in documents:
            tool.keep(db, document, {"example.test"})
        db.commit()
        stored = time.perf_counter() - start
        start = time.perf_counter()
        shown = json.dumps(tool.show(db))
        read = time.perf_counter() - start
    inv = load(ROOT / "inventories" / "lab.yml")
    tracemalloc.start()
    start = time.perf_counter()
    result = dmarc.impact(inv, inv.domain("example.test"), merged([json.loads(shown)]))
    text = dmarc.text(result)
    analysed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    print(f"records {total:,} in {reports:,} reports, {len(result['sources']):,} sources, "
          f"{len(text.splitlines()):,} report lines")
    print(f"  host: store       {stored:6.2f} s")
    print(f"  host: show (JSON) {read:6.2f} s   {len(shown) / 1e6:.1f} MB")
    print(f"  dmarc report      {analysed:6.2f} s   peak memory {peak / 1e6:.0f} MB (parse + impact + text)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
