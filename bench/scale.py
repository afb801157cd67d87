"""How the control machine's work grows with the inventory: check, plan and render for
1 / 100 / 1,000 domains and 10 / 1,000 / 10,000 users (one host that does everything),
with the growth factor of each step; nothing may grow faster than linearly. Then one user
added to the largest inventory: which rendered files change (only those that user touches
should). The secrets step (DKIM keys, one per domain, and the rest) is timed apart: it runs
once per new secret, not on every deploy. Secrets go to a temporary directory.

    .venv/bin/python bench/scale.py [--quick]   (--quick: up to 100 domains, 1,000 users)
"""

import sys
import tempfile
import time

import deploys
from mailstack.inventory import check_text
from mailstack.plan import plans

HASH = "{SHA512-CRYPT}$6$benchsalt$" + "x" * 86
DOMAINS, USERS = (1, 100, 1000), (10, 1000, 10000)


def inventory(domains: int, users: int, secrets: str, extra_user: bool = False) -> str:
    out = ["platform: {name: scale, domain: scale.example, postmaster: postmaster@d0.example, "
           f"secrets_dir: '{secrets}'}}",
           "hosts:", "  - {name: mx1, address: 192.0.2.1, roles: [mx, submission, mailbox, filter]}",
           "domains:"]
    out += [f"  - {{name: d{i}.example, mx: [mx1], dmarc: {{policy: quarantine}}}}" for i in range(domains)]
    out.append("users:")
    out += [f'  - {{address: u{i}@d{i % domains}.example, password: "{HASH}"}}' for i in range(users)]
    if extra_user:
        out.append(f'  - {{address: newcomer@d0.example, password: "{HASH}"}}')
    out.append("aliases:")
    target = [f"u{i}@d{i}.example" if i < users else "hostmaster@elsewhere.example" for i in range(domains)]
    out += [f"  - {{address: postmaster@d{i}.example, to: [{target[i]}]}}" for i in range(domains)]
    return "\n".join(out) + "\n"


def rendered(inv) -> dict[str, bytes]:
    return {f.path: f.content for plan in plans(inv).values() for c in plan.components
            for s in deploys.configured(c, plan) for f in s.files}


def timed(step):
    start = time.perf_counter()
    result = step()
    return time.perf_counter() - start, result


def main() -> None:
    quick = "--quick" in sys.argv
    grid = [(d, u) for d in DOMAINS for u in USERS if not quick or (d <= 100 and u <= 1000)]
    figures = {}
    with tempfile.TemporaryDirectory() as secrets:
        print(f"{'domains':>8} {'users':>7} {'secrets':>9} {'check':>8} {'plan':>8} {'render':>8} {'files':>6}")
        for domains, users in grid:
            text = inventory(domains, users, secrets)
            check, inv = timed(lambda text=text: check_text(text, "scale.yml"))
            made, _ = timed(lambda inv=inv: deploys.make_secrets(inv))
            plan, _ = timed(lambda inv=inv: plans(inv))
            render, files = timed(lambda inv=inv: rendered(inv))
            figures[domains, users] = (check, plan, render)
            print(f"{domains:>8} {users:>7} {made:>8.2f}s {check:>7.2f}s {plan:>7.2f}s {render:>7.2f}s {len(files):>6}")
        print("growth per step (the input x10 or x100; linear: the same factor):")
        users_seen, domains_seen = sorted({u for _, u in grid}), sorted({d for d, _ in grid})
        steps = [((d, a), (d, b), f"users {a} -> {b} at {d} domains", b / a)
                 for d in domains_seen for a, b in zip(users_seen, users_seen[1:], strict=False)]
        steps += [((a, u), (b, u), f"domains {a} -> {b} at {u} users", b / a)
                  for u in users_seen for a, b in zip(domains_seen, domains_seen[1:], strict=False)]
        for before, after, what, factor in steps:
            grew = " ".join(f"{name} x{b / max(a, 1e-3):.1f}" for name, a, b in
                            zip(("check", "plan", "render"), figures[before], figures[after], strict=True))
            print(f"  {what:>30} (input x{factor:.0f}): {grew}")
        domains, users = grid[-1]
        before = rendered(check_text(inventory(domains, users, secrets), "scale.yml"))
        grown = check_text(inventory(domains, users, secrets, extra_user=True), "scale.yml")
        after = rendered(grown)
        changed = sorted(p for p in after if before.get(p) != after[p])
        print(f"one user added to {domains} domains and {users} users: {len(changed)} of {len(after)} files change:")
        for path in changed:
            print(f"  {path}")


if __name__ == "__main__":
    main()
