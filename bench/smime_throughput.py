"""S/MIME gateway throughput: 100 KB messages signed and encrypted, end to end through
its SMTP listener (python -m smimegw, as deployed) into a re-injection sink, all on
loopback. Prints msgs/s. Target: at least 50 msgs/s on 2 cores."""

import json
import multiprocessing
import os
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiosmtpd.controller import Controller
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mailstack.secrets import issue, new_ca  # noqa: E402

MESSAGES, SIZE, CLIENTS = 300, 100 * 1024, 4
PEM = serialization.Encoding.PEM


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pki(base: Path) -> dict:
    ca, ca_key = new_ca("test CA", days=2)
    (base / "ca.pem").write_bytes(ca.public_bytes(PEM))
    out = {"ca": str(base / "ca.pem")}
    for domain in ("tenant.test", "partner.test"):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (base / f"{domain}.pem").write_bytes(issue(ca, ca_key, key, [domain], "smime").public_bytes(PEM))
        (base / f"{domain}.key").write_bytes(key.private_bytes(PEM, serialization.PrivateFormat.PKCS8,
                                                               serialization.NoEncryption()))
        out[domain] = (str(base / f"{domain}.pem"), str(base / f"{domain}.key"))
    return out


class Sink:
    """Postfix's re-injection listener, in its own process so it does not share a GIL
    with the clients: counts encrypted messages."""

    def __init__(self, counter):
        self.counter = counter

    async def handle_DATA(self, server, session, envelope):
        if b"enveloped-data" in envelope.content:
            with self.counter.get_lock():
                self.counter.value += 1
        return "250 OK"


def run_sink(port: int, counter, stop) -> None:
    controller = Controller(Sink(counter), hostname="127.0.0.1", port=port)
    controller.start()
    stop.wait()
    controller.stop()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        certs = pki(base)
        sink_port, port = free_port(), free_port()
        counter, stop = multiprocessing.Value("i", 0), multiprocessing.Event()
        sink = multiprocessing.Process(target=run_sink, args=(sink_port, counter, stop))
        sink.start()
        config = {
            "hostname": "gw.bench", "listen": "127.0.0.1", "port": port, "trust": certs["ca"],
            "reinject_host": "mta.bench", "reinject_address": "127.0.0.1", "inbound_port": sink_port,
            "outbound_port": sink_port, "reinject_ca": None,
            "tenants": {"tenant.test": {"sign": "always", "encrypt": "required",
                                        "cert": certs["tenant.test"][0], "key": certs["tenant.test"][1]}},
            "partners": {"partner.test": {"sign": "always", "encrypt": "required",
                                          "cert": certs["partner.test"][0]}},
        }
        (base / "config.json").write_text(json.dumps(config))
        root = Path(__file__).resolve().parent.parent
        gateway = subprocess.Popen([sys.executable, "-m", "smimegw", str(base / "config.json")], cwd=root,
                                   stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(root)})
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            line = "x" * 76 + "\r\n"
            body = (line * (SIZE // len(line))).encode()
            message = (b"From: a@tenant.test\r\nTo: b@partner.test\r\nSubject: bench\r\n"
                       b"Content-Type: text/plain\r\n\r\n" + body)

            def client(count: int) -> None:
                with smtplib.SMTP("127.0.0.1", port, timeout=120) as smtp:
                    for _ in range(count):
                        smtp.sendmail("a@tenant.test", ["b@partner.test"], message)

            start = time.perf_counter()
            with ThreadPoolExecutor(CLIENTS) as pool:
                list(pool.map(client, [MESSAGES // CLIENTS] * CLIENTS))
            deadline = time.monotonic() + 300
            while counter.value < MESSAGES and time.monotonic() < deadline:
                time.sleep(0.01)
            elapsed = time.perf_counter() - start
        finally:
            gateway.terminate()  # stops its workers too
            gateway.wait(10)
            stop.set()
            sink.join()
    print(f"S/MIME gateway: {counter.value} messages of {SIZE // 1024} KB signed (SHA-256) and encrypted "
          f"(AES-256) in {elapsed:.1f} s = {counter.value / elapsed:.1f} msgs/s with {CLIENTS} connections "
          "(target >= 50)")


if __name__ == "__main__":
    main()
