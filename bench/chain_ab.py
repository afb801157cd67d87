"""rspamd as mailstack configures it against a packaged rspamd with what any operator adds
(Redis, and ClamAV through the antivirus module with its defaults), on the same host, in one
run, legs alternating: bench/throughput.py's 2,000 x 5 KB from ext through postscreen, Postfix,
the milter and LMTP into a mailbox. Prints each leg's end-to-end msgs/s (best of the rounds),
the ratio (issue 24: at least 0.9), the CPU each daemon used in each leg (systemd's accounting),
and the ten costliest rspamd symbols (`rspamc --profile`; rspamd restarts before each leg).

The packaged leg moves mailstack's rspamd files aside (local.d, override.d, rspamd.local.lua,
mailstack.d) and puts them back after, whatever happens; a redeploy restores them too.

    .venv/bin/python bench/chain_ab.py [ROUNDS]   (default 2)
"""

import json
import shlex
import sys

from throughput import CORE_SINK, HELO, INVENTORY, empty, run_once, ssh

ETC, STASH = "/etc/rspamd", "/root/bench-rspamd"
OURS = ("local.d", "override.d", "rspamd.local.lua", "mailstack.d")
# the packaged rspamd, plus Redis (its password from our redis.conf) and the antivirus module;
# DNS and greylisting as ours (a lab resolver; no greylisting in either leg); the milter where
# Postfix expects it
PACKAGED = {
    "local.d/worker-proxy.inc": 'bind_socket = "127.0.0.1:11332";\nmilter = yes;\ntimeout = 120s;\n'
                                'upstream "local" {\n  default = yes;\n  self_scan = yes;\n}\n',
    "local.d/antivirus.conf": 'clamav {\n  type = "clamav";\n  servers = "/var/run/clamav/clamd.ctl";\n}\n',
    "local.d/greylist.conf": "enabled = false;\n",
}
READY = "for i in $(seq 120); do rspamc -h 127.0.0.1:11334 stat >/dev/null 2>&1 && break; sleep 1; done"


def restart() -> None:
    ssh("mail", f"systemctl restart rspamd && {READY}")


def packaged() -> None:
    """mailstack's rspamd files aside, the packaged configuration with Redis and ClamAV in place."""
    write = " && ".join(f"printf %s {shlex.quote(text)} > {ETC}/{name}" for name, text in PACKAGED.items())
    ssh("mail", f"set -e; test ! -e {STASH}; mkdir -p {STASH}; "
                f"for f in {' '.join(OURS)}; do if [ -e {ETC}/$f ]; then mv {ETC}/$f {STASH}/; fi; done; "
                f"mkdir -p {ETC}/local.d {ETC}/override.d; cp -p {STASH}/local.d/redis.conf {ETC}/local.d/; "
                f"cp -p {STASH}/override.d/options.inc {ETC}/override.d/; {write}; rspamadm configtest -q")


def ours() -> None:
    """mailstack's rspamd files back in place."""
    ssh("mail", f"set -e; if [ -d {STASH} ]; then for f in {' '.join(OURS)}; do rm -rf {ETC}/$f; "
                f"if [ -e {STASH}/$f ]; then mv {STASH}/$f {ETC}/; fi; done; rmdir {STASH}; fi")


SAMPLE = "/root/bench-sample.eml"  # like smtp-source's: a few headers, 5 KB of text
PROFILES = 20
SEPARATOR = "--- next reply ---"


# CPU seconds (user + system, and of reaped children) of every process on the host, summed per
# systemd unit (the container has no per-unit CPU accounting; its name=systemd cgroup names the unit)
CPU_BY_UNIT = """
import glob, os
tick, used = os.sysconf("SC_CLK_TCK"), {}
for stat in glob.glob("/proc/[0-9]*/stat"):
    try:
        fields = open(stat).read().rsplit(")", 1)[1].split()
        unit = [l for l in open(stat[:-4] + "cgroup") if ":name=systemd:" in l][0].strip().rsplit("/", 1)[1] or "-"
    except (OSError, IndexError):
        continue
    used[unit] = used.get(unit, 0) + sum(int(f) for f in fields[11:15]) / tick
for unit, seconds in used.items():
    print(unit, seconds)
"""


def cpu() -> dict[str, float]:
    """CPU seconds used so far by the processes of each unit on mail."""
    return {unit: float(seconds) for unit, seconds in
            (line.split() for line in ssh("mail", f"python3 -c {shlex.quote(CPU_BY_UNIT)}").splitlines())}


def profile(count: int = 10) -> list[str]:
    """rspamd's own per-symbol times (`rspamc --profile`), mean of PROFILES scans of a sample
    with the bench's envelope; wall times of each symbol, DNS waits included."""
    client = INVENTORY.host("ext").address
    sample = f"From: carol@ext.test\nTo: {CORE_SINK}\nSubject: bench\n\n" + ("x" * 76 + "\n") * 65
    command = (f"printf %s {shlex.quote(sample)} > {SAMPLE}; for i in $(seq {PROFILES}); do "
               f"rspamc -h 127.0.0.1:11333 --profile -j -i {client} -F carol@ext.test -r {CORE_SINK} "
               f"--helo {HELO} < {SAMPLE}; echo '{SEPARATOR}'; done; rm -f {SAMPLE}")
    totals: dict[str, float] = {}
    for reply in ssh("mail", command).split(SEPARATOR):
        for symbol, took in (json.loads(reply).get("profile") or {}).items() if reply.strip() else ():
            totals[symbol] = totals.get(symbol, 0.0) + took
    ranked = sorted(totals.items(), key=lambda item: item[1], reverse=True)[:count]
    return [f"{symbol:<30} {took / PROFILES:7.2f} ms" for symbol, took in ranked]


def leg(label: str, address: str) -> tuple[float, list[str]]:
    restart()
    before = cpu()
    rate = run_once(label, address, CORE_SINK)
    used = {unit: seconds - before.get(unit, 0.0) for unit, seconds in cpu().items()}
    spent = [f"{unit:<30} {seconds:7.1f} s CPU" for unit, seconds in sorted(used.items(), key=lambda i: -i[1])
             if seconds >= 0.1][:8]
    return rate, [*spent, "rspamd --profile, mean wall time per symbol:", *profile()]


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    address = INVENTORY.host("mail").address
    ssh("ext", f"smtp-source -M {HELO} -m 1 -f carol@ext.test -t {CORE_SINK} {address}:25")  # postscreen pass
    best: dict[str, tuple[float, list[str]]] = {}
    try:
        for _ in range(rounds):
            for label, prepare in (("mailstack chain", ours), ("packaged + Redis + ClamAV", packaged)):
                prepare()
                result = leg(label, address)
                if result[0] > best.get(label, (0.0, []))[0]:
                    best[label] = result
    finally:
        ours()
        restart()
        empty(CORE_SINK)
    for label, (rate, top) in best.items():
        print(f"\n{label}: best {rate:.1f} msgs/s end to end; CPU per unit in that leg:")
        print("\n".join(f"  {line}" for line in top))
    ratio = best["mailstack chain"][0] / best["packaged + Redis + ClamAV"][0]
    print(f"\nmailstack chain / packaged + Redis + ClamAV: {ratio:.2f} (issue 24: at least 0.9)")


if __name__ == "__main__":
    main()
