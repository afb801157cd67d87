"""Attachments through the whole chain (ClamAV and Peekaboo wired in), and Peekaboo alone.

1. 500 messages, 10 sessions, from ext with smtp-source -F: each carries the same 100 KB
   attachment (after the first, Peekaboo's verdict comes from the Redis cache), to a tenant
   that waits for verdicts; end-to-end msgs/s.
2. Peekaboo's own rate for 200 distinct documents (no cache can help), 4 at a time,
   straight against its API on the mail host: verdicts/s and the median time per verdict.
3. The temp-fail-then-verdict flow: time from a first 4xx (tenant without wait) to the
   verdict a retry meets.
4. Memory (RSS) of clamd, Peekaboo and rspamd afterwards.
"""

import base64
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "lab"))
from labenv import INVENTORY  # noqa: E402
from throughput import HELO, delivered, empty, ssh  # noqa: E402

MESSAGES, SESSIONS, ATTACHMENT = 500, 10, 100_000
SINK = "alice@example.test"
CLIENT = r'''
import concurrent.futures, json, os, statistics, sys, time, urllib.error, urllib.request, uuid
def verdict(i):
    body, b = os.urandom(4000) + str(uuid.uuid4()).encode(), uuid.uuid4().hex
    data = (f"--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"doc{i}.bin\"\r\n\r\n").encode()
    data += body + f"\r\n--{b}--\r\n".encode()
    start = time.monotonic()
    req = urllib.request.Request("http://127.0.0.1:8100/v1/scan", data=data,
                                 headers={"Content-Type": f"multipart/form-data; boundary={b}"})
    job = json.load(urllib.request.urlopen(req))["job_id"]
    while True:
        try:
            json.load(urllib.request.urlopen(f"http://127.0.0.1:8100/v1/report/{job}"))
            return time.monotonic() - start
        except urllib.error.HTTPError as err:
            if err.code != 404:
                raise
            time.sleep(0.01)
n = int(sys.argv[1]); start = time.monotonic()
with concurrent.futures.ThreadPoolExecutor(4) as pool:
    times = list(pool.map(verdict, range(n)))
print(n / (time.monotonic() - start), statistics.median(times))
'''


def message_file() -> str:
    attachment = base64.encodebytes(b"%PDF-1.4\n" + bytes(range(256)) * (ATTACHMENT // 256)).decode()
    return ("From: carol@ext.test\nTo: alice@example.test\nSubject: bench attachment\nMIME-Version: 1.0\n"
            "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nsee attached\n"
            "--b\nContent-Type: application/pdf; name=report.pdf\nContent-Disposition: attachment; "
            f"filename=report.pdf\nContent-Transfer-Encoding: base64\n\n{attachment}--b--\n")


def main() -> None:
    address = INVENTORY.host("mail").address
    ssh("ext", f"cat > /tmp/bench-attachment.eml <<'EOF'\n{message_file()}EOF")
    empty(SINK)
    start = time.perf_counter()
    ssh("ext", f"smtp-source -M {HELO} -s {SESSIONS} -m {MESSAGES} -c -F /tmp/bench-attachment.eml "
               f"-f carol@ext.test -t {SINK} {address}:25 >/dev/null")
    deadline = time.monotonic() + 600
    while delivered(SINK) < MESSAGES and time.monotonic() < deadline:
        time.sleep(0.2)
    total = time.perf_counter() - start
    count = delivered(SINK)
    print(f"100 KB attachment, full chain   end to end {count / total:7.1f} msgs/s   "
          f"({count}/{MESSAGES} in {total:.1f} s)")
    empty(SINK)

    ssh("mail", f"cat > /tmp/bench-peekaboo.py <<'EOF'\n{CLIENT}EOF")
    rate, median = map(float, ssh("mail", "python3 /tmp/bench-peekaboo.py 200").split())
    print(f"Peekaboo, distinct documents    {rate:7.1f} verdicts/s   median {median * 1000:.0f} ms per verdict")

    ssh("ext", "printf 'Subject: flow\\nMIME-Version: 1.0\\nContent-Type: multipart/mixed; boundary=b\\n\\n--b\\n"
               "Content-Type: application/octet-stream\\nContent-Disposition: attachment; filename=x.bin\\n\\n"
               "%s\\n--b--\\n' $(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n') > /tmp/bench-flow.eml")
    first = time.perf_counter()
    ssh("ext", f"smtp-source -M {HELO} -m 1 -F /tmp/bench-flow.eml -f carol@ext.test -t dave@tenant-b.test "
               f"{address}:25 2>&1 | grep -q 451")
    retries = 0
    while True:
        retries += 1
        out = ssh("ext", f"smtp-source -M {HELO} -m 1 -F /tmp/bench-flow.eml -f carol@ext.test "
                         f"-t dave@tenant-b.test {address}:25 2>&1 || true")
        if "451" not in out or retries > 100:
            break
        time.sleep(0.05)
    print(f"first 4xx to cached verdict     {(time.perf_counter() - first) * 1000:7.0f} ms   ({retries} retries)")

    print("memory (RSS) after the benchmark:")
    print(ssh("mail", "ps -o rss=,comm= -C clamd -C peekaboo -C rspamd | "
                      "awk '{kb[$2]+=$1} END {for (p in kb) printf \"  %-10s %6.0f MB\\n\", p, kb[p]/1024}'"))


if __name__ == "__main__":
    main()
