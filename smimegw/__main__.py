"""Run the gateway: python -m smimegw CONFIG.json"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl

from aiosmtpd.smtp import SMTP

from smimegw.gateway import Gateway
from smimegw.policy import Config


def listen(config: Config) -> list[tuple[socket.socket, bool]]:
    """The inbound listener and, if configured, the submission listener: (socket, submitted)."""
    ports = [(config.port, False)]
    if config.submission_port:
        ports.append((config.submission_port, True))
    sockets = []
    for port, submitted in ports:
        sock = socket.create_server((config.listen, port), reuse_port=False, backlog=128)
        sock.set_inheritable(True)
        sockets.append((sock, submitted))
    return sockets


def fork_workers(count: int) -> None:
    """Pre-fork: every worker accepts on the one socket (the GIL caps a process at a
    core; S/MIME work is CPU-bound). Stopping the first process stops them all."""
    children = []
    for _ in range(count - 1):
        pid = os.fork()
        if pid == 0:
            return
        children.append(pid)

    def stop(signum, frame):
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)


async def serve(config: Config, sockets: list[tuple[socket.socket, bool]]) -> None:
    tls = None
    if config.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.minimum_version = ssl.TLSVersion.TLSv1_2
        tls.load_cert_chain(config.tls_cert, config.tls_key)
    servers = []
    for sock, submitted in sockets:
        handler = Gateway(config, submitted=submitted)

        def factory(handler=handler):
            return SMTP(handler, hostname=config.hostname, tls_context=tls,
                        require_starttls=tls is not None, data_size_limit=config.max_message_size,
                        ident="mailstack S/MIME gateway")

        servers.append(await asyncio.get_running_loop().create_server(factory, sock=sock))
        logging.getLogger("smimegw").info(
            "pid %d listening on %s:%d for %s mail (%s)", os.getpid(), config.listen, sock.getsockname()[1],
            "submitted" if submitted else "inbound", "STARTTLS required" if tls else "plaintext, loopback only")
    await asyncio.gather(*(server.serve_forever() for server in servers))


def main() -> None:
    parser = argparse.ArgumentParser(prog="smimegw", description=__doc__)
    parser.add_argument("config", help="JSON configuration rendered by the mailstack smime deploy")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes sharing the listener (default: one per CPU)")
    parser.add_argument("--check", action="store_true",
                        help="check the configuration and that every file in it is readable, then exit")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    config = Config.load(args.config)
    if args.check:
        for path in config.files():
            if path.startswith("/run/credentials/"):  # systemd hands these over as it starts the gateway
                continue
            if os.path.isdir(path):  # a hashed trust directory
                os.listdir(path)
                continue
            with open(path, "rb"):
                pass
        print(f"{args.config}: ok, {len(config.tenants)} tenants, {len(config.partners)} partners")
        return
    sockets = listen(config)
    fork_workers(max(1, args.workers))
    asyncio.run(serve(config, sockets))


if __name__ == "__main__":
    main()
