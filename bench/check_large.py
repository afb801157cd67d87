"""Time `mailstack check` on a generated inventory: 200 hosts, 2,000 domains, 20,000 users.

Prints the wall time of the whole command (process start included) and of the
loader alone. Target: under 3 s on a 2-core machine.
"""

import subprocess
import sys
import tempfile
import time
from pathlib import Path

HASH = "{SHA512-CRYPT}$6$benchsalt$" + "x" * 86


def generate(hosts: int = 200, domains: int = 2000, users: int = 20000) -> str:
    out = ["platform: {name: big, domain: big.example, postmaster: postmaster@d0.example}",
           "hosts:"]
    for i in range(hosts):
        roles = "[mx, submission, filter]" if i < 10 else "[mailbox]"
        out.append(f"  - {{name: h{i}, address: 10.{i // 250}.{i % 250}.1, roles: {roles}}}")
    out.append("domains:")
    for i in range(domains):
        out.append(f"  - {{name: d{i}.example, mx: [h{i % 10}], mailbox: [h{10 + i % 190}], "
                   f"dmarc: {{policy: quarantine}}}}")
    out.append("users:")
    for i in range(users):
        out.append(f'  - {{address: u{i}@d{i % domains}.example, password: "{HASH}"}}')
    out.append("aliases:")
    for i in range(domains):
        out.append(f"  - {{address: postmaster@d{i}.example, to: [u{i}@d{i}.example]}}")
    return "\n".join(out) + "\n"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "large.yml"
        path.write_text(generate())
        size = path.stat().st_size
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "mailstack.cli", "check", str(path)],
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(proc.stderr[-2000:])
        import deploys  # noqa: F401 (hands the components in)
        from mailstack.inventory import load

        start = time.perf_counter()
        load(path)
        loader = time.perf_counter() - start
    print(f"inventory: 200 hosts, 2000 domains, 20000 users, 2000 aliases ({size / 1e6:.1f} MB)")
    print(f"mailstack check: {wall:.2f} s wall (target < 3 s); loader alone {loader:.2f} s")
    print(proc.stdout.strip())


if __name__ == "__main__":
    main()
