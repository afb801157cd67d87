"""The S/MIME path against the chain alone, legs alternating in one run: bench/throughput.py's
2,000 messages from ext to an S/MIME tenant (bob@example.test), once signed by the partner
ext.test (the signature checked: smimegw.verifier in the first pass; the gateway before) and
once the same bytes made plain (the two parts relabelled multipart/mixed and
application/octet-stream: the chain alone, postscreen, rspamd, LMTP, with the same size and
structure). Prints each leg's end-to-end msgs/s (best of the rounds), the ratio (issue 24: at
least 0.9) and the CPU each program used in the best leg on mail (process names), which is
where the difference goes. A third leg sends the signed message encrypted to the tenant: the
one inbound kind that still takes the gateway pass (decrypted, then scanned again), for its
figure.

    .venv/bin/python bench/smime_path.py [ROUNDS]   (default 2)
"""

import shlex
import subprocess
import sys

from throughput import HELO, INVENTORY, MESSAGES, SIGNED, SMIME_SINK, SSH_CONFIG, empty, run_once, signed_message, ssh

from mailstack.secrets import domain_certificate

# CPU seconds (user + system, and of reaped children) of every process on the host, summed per
# program name (a Python daemon by its module, openssl's children inside their parent's count)
CPU_BY_PROGRAM = """
import glob, os
tick, used = os.sysconf("SC_CLK_TCK"), {}
for stat in glob.glob("/proc/[0-9]*/stat"):
    try:
        text = open(stat).read()
        args = open(stat[:-4] + "cmdline", "rb").read().split(b"\\0")
    except OSError:
        continue
    name = text[text.index("(") + 1:text.rindex(")")]
    if b"-m" in args and args.index(b"-m") + 1 < len(args):
        name = args[args.index(b"-m") + 1].decode()
    fields = text.rsplit(")", 1)[1].split()
    used[name] = used.get(name, 0) + sum(int(f) for f in fields[11:15]) / tick
for name, seconds in used.items():
    print(name.replace(" ", "_"), seconds)
"""


def cpu() -> dict[str, float]:
    return {name: float(seconds) for name, seconds in
            (line.split() for line in ssh("mail", f"python3 -c {shlex.quote(CPU_BY_PROGRAM)}").splitlines())}


def leg(label: str, address: str, content: str) -> tuple[float, list[str], float]:
    # Postfix's short-lived processes end between legs and take their CPU with them: let them
    # go first, and count what the leg's own processes used (reaped children included)
    ssh("mail", "postfix reload >/dev/null 2>&1; sleep 2")
    before = cpu()
    rate = run_once(label, address, SMIME_SINK, content=content)
    used = {name: seconds - before.get(name, 0.0) for name, seconds in cpu().items()}
    spent = [f"{name:<22} {seconds:6.1f} s CPU" for name, seconds in sorted(used.items(), key=lambda i: -i[1])
             if seconds >= 0.2][:12]
    per_message = sum(seconds for seconds in used.values() if seconds > 0) / MESSAGES * 1000
    return rate, spent, per_message


PLAIN = "/root/bench-plain.eml"  # on ext: the signed message, relabelled as no S/MIME


def plain_twin() -> None:
    ssh("ext", f"sed -e 's#multipart/signed#multipart/mixed#' -e 's#application/pkcs7-signature#"
               f"application/octet-stream#' -e 's#application/x-pkcs7-signature#application/octet-stream#' "
               f"-e 's#protocol=\"[^\"]*\"#protocol=\"none\"#' {SIGNED} > {PLAIN}; ! grep -qi pkcs7 {PLAIN}")


ENCRYPTED = "/root/bench-encrypted.eml"  # on ext: the signed message, encrypted to the tenant


def encrypted_twin() -> None:
    signed = subprocess.run(["ssh", "-F", str(SSH_CONFIG), "ext", f"cat {SIGNED}"], capture_output=True,
                            check=True, timeout=60).stdout
    tenant = domain_certificate(INVENTORY, SMIME_SINK.rpartition("@")[2])[0]
    entity = signed.split(b"\n\n", 1)  # the signed entity, under fresh transport headers
    headers = b"\n".join(h for h in entity[0].split(b"\n") if h.lower().startswith((b"content-type", b"mime-version")))
    data = subprocess.run(["openssl", "cms", "-encrypt", "-aes-256-cbc", "-from", "carol@ext.test", "-to", SMIME_SINK,
                           "-subject", "bench", str(tenant)], input=headers + b"\n\n" + entity[1],
                          capture_output=True, check=True).stdout.replace(b"\r\n", b"\n")
    subprocess.run(["ssh", "-F", str(SSH_CONFIG), "ext", f"cat > {ENCRYPTED}"], input=data, check=True, timeout=60)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    address = INVENTORY.host("mail").address
    ssh("ext", f"smtp-source -M {HELO} -m 1 -f carol@ext.test -t {SMIME_SINK} {address}:25")  # postscreen pass
    signed_message()
    plain_twin()
    encrypted_twin()
    best: dict[str, tuple[float, list[str], float]] = {}
    try:
        for _ in range(rounds):
            for label, content in (("chain (plain)", PLAIN), ("chain + S/MIME check (signed)", SIGNED),
                                   ("gateway pass (encrypted)", ENCRYPTED)):
                result = leg(label, address, content)
                if result[0] > best.get(label, (0.0, [], 0.0))[0]:
                    best[label] = result
    finally:
        empty(SMIME_SINK)
        ssh("ext", f"rm -f {SIGNED} {PLAIN} {ENCRYPTED}")
    for label, (rate, spent, per_message) in best.items():
        print(f"\n{label}: best {rate:.1f} msgs/s end to end, {per_message:.1f} ms CPU per message on mail; "
              "by program in that leg:")
        print("\n".join(f"  {line}" for line in spent))
    signed, plain = best["chain + S/MIME check (signed)"], best["chain (plain)"]
    print(f"\nS/MIME path / chain: {signed[0] / plain[0]:.2f} end to end (issue 24: at least 0.9); "
          f"CPU per message {plain[2] / signed[2]:.2f}")
    print(f"encrypted through the gateway / chain: {best['gateway pass (encrypted)'][0] / plain[0]:.2f} end to end")


if __name__ == "__main__":
    main()
