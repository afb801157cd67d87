"""The first-pass signature check: rspamd posts inbound signed mail (multipart/signed) for an
S/MIME tenant here and writes the answer as X-Mailstack-SMIME, the verdict the gateway would
write, so such mail needs no gateway pass. Keyless (the trusted CAs only), on loopback.

    python3 -m smimegw.verifier CONFIG.json [--check]

POST /verify with the message: 200 and the verdict; 422 and why for a MIME structure over the
limits (the gateway refuses those too); 413 over the size limit; 503 when the check failed or
ran too long (rspamd defers the mail).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
from dataclasses import dataclass

from smimegw import cms, mime
from smimegw.gateway import verdict

log = logging.getLogger("smimegw.verifier")
IDLE = 30.0  # seconds a kept-alive connection may wait for its next request
HEAD_LIMIT = 16 * 1024  # bytes of request line and headers


@dataclass(frozen=True)
class Settings:
    listen: str
    port: int
    trust: str
    timeout: float
    max_message_size: int
    max_mime_depth: int
    max_mime_parts: int

    @classmethod
    def load(cls, path: str) -> Settings:
        with open(path) as file:
            return cls(**json.load(file))


async def answer(settings: Settings, message: bytes) -> tuple[int, bytes]:
    """(HTTP status, text) for one message."""
    entity = mime.split(mime.normalize(message))[1]
    try:
        mime.check_structure(entity, settings.max_mime_depth, settings.max_mime_parts)
        return 200, await verdict(entity, False, settings.trust, settings.timeout)
    except mime.MimeLimit as err:
        return 422, f"{err}; the S/MIME gateway does not process it".encode()
    except Exception as err:  # noqa: BLE001 - never a verdict that was not reached: rspamd defers
        log.warning("signature check failed: %s", err)
        return 503, b"signature check failed"


def response(status: int, text: bytes, keep: bool) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 413: "Payload Too Large",
              422: "Unprocessable Content", 503: "Service Unavailable"}[status]
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(text)}\r\n"
            f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n").encode() + text


async def serve_connection(settings: Settings, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Requests on one connection, one after another, until the client closes or errs."""
    try:
        while True:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE)
            request, *lines = head.decode("latin-1").split("\r\n")
            method, path, _ = (request.split(" ", 2) + ["", ""])[:3]
            headers = {name.strip().lower(): value.strip()
                       for name, _, value in (line.partition(":") for line in lines if line)}
            keep = headers.get("connection", "").lower() != "close"
            try:
                length = int(headers.get("content-length", ""))
            except ValueError:
                length = -1
            if method != "POST" or path != "/verify":
                status, text, keep = 404, b"POST /verify only", False
            elif length < 0:
                status, text, keep = 400, b"Content-Length required", False
            elif length > settings.max_message_size:
                status, text, keep = 413, b"message over the size limit", False
            else:
                status, text = await answer(settings, await reader.readexactly(length))
            writer.write(response(status, text, keep))
            await writer.drain()
            if not keep:
                break
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def serve(settings: Settings) -> None:
    server = await asyncio.start_server(lambda r, w: serve_connection(settings, r, w), settings.listen,
                                        settings.port, limit=HEAD_LIMIT, backlog=128)
    log.info("pid %d checking signatures on %s:%d", os.getpid(), settings.listen, settings.port)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(prog="smimegw.verifier", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="JSON settings rendered by the mailstack smime_verify deploy")
    parser.add_argument("--check", action="store_true", help="check the settings and the trust store, then exit")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    settings = Settings.load(args.config)
    if args.check:
        os.listdir(settings.trust) if os.path.isdir(settings.trust) else open(settings.trust, "rb").close()
        cms.check_library()
        print(f"{args.config}: ok, {settings.listen}:{settings.port}, trust {settings.trust}")
        return
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
